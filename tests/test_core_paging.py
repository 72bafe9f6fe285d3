"""Issue 4 in the pure core: duty, skipped steps, urgent repeats, cycles, maintenance,
notices, outcomes. Time is stepped by hand; nothing sleeps."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from monitor.core.booth import IllegalBoothTransition
from monitor.core.escalation import Escalation, fire_due, level_of
from monitor.core.events import (
    Acknowledge,
    Attend,
    Audit,
    Button,
    DutyChanged,
    EndMaintenance,
    Motion,
    MotionState,
    Occupancy,
    PageReport,
    Press,
    Resolve,
    SendNotice,
    SendPage,
    SetDuty,
    StartMaintenance,
)
from monitor.core.roster import Roster, UnknownResponder, parse_shift
from monitor.core.settings import Policy, ResponderConfig, Step
from monitor.core.site import BadRequest
from monitor.core.words import english
from tests.harness.core import CoreDriver, call, incident, make_config, pages

LISBON = ZoneInfo("Europe/Lisbon")


def at_local(year: int, month: int, day: int, hour: int, minute: int = 0) -> float:
    return dt.datetime(year, month, day, hour, minute, tzinfo=LISBON).timestamp()


NURSES = (
    ResponderConfig("ana", "Ana", ("nurse",), ("pager",)),
    ResponderConfig("bea", "Bea", ("nurse",), ("pager",)),
    ResponderConfig("rui", "Rui", ("coordinator",), ("pager",)),
)


# --- roster -------------------------------------------------------------------------------


def test_shift_parsing() -> None:
    """Day ranges wrap around the week; a night shift ends the next day."""
    shift = parse_shift("fri-mon 22:00-06:00")
    assert shift.days == {4, 5, 6, 0} and (shift.start, shift.end) == (22 * 60, 6 * 60)
    assert parse_shift("daily 00:00-24:00").days == set(range(7))
    for bad in ("mon 8:00-16:00", "xyz 08:00-16:00", "mon 25:00-26:00", "mon 24:00-08:00"):
        with pytest.raises(ValueError):
            parse_shift(bad)


def test_night_shift_covers_after_midnight_in_local_time() -> None:
    """A Monday 22:00-06:00 shift covers Tuesday 05:59 Lisbon time, not 06:00."""
    nurse = ResponderConfig("ana", "Ana", ("nurse",), ("p",),
                            shifts=(parse_shift("mon 22:00-06:00"),))
    roster = Roster([nurse], "Europe/Lisbon")
    assert not roster.on_duty("ana", at_local(2026, 11, 23, 21, 59))  # a Monday
    assert roster.on_duty("ana", at_local(2026, 11, 23, 22, 0))
    assert roster.on_duty("ana", at_local(2026, 11, 24, 5, 59))
    assert not roster.on_duty("ana", at_local(2026, 11, 24, 6, 0))


def test_shift_keeps_local_hours_across_dst() -> None:
    """08:00 local is 08:00 UTC in winter and 07:00 UTC in summer in Lisbon."""
    nurse = ResponderConfig("ana", "Ana", ("nurse",), ("p",),
                            shifts=(parse_shift("daily 08:00-16:00"),))
    roster = Roster([nurse], "Europe/Lisbon")
    summer = dt.datetime(2026, 7, 1, 7, 30, tzinfo=dt.UTC).timestamp()
    winter = dt.datetime(2026, 12, 1, 7, 30, tzinfo=dt.UTC).timestamp()
    assert roster.on_duty("ana", summer)  # 08:30 local
    assert not roster.on_duty("ana", winter)  # 07:30 local


def test_check_out_holds_until_the_next_shift_boundary() -> None:
    """Checking out ends duty now; the next shift puts her back on duty by itself."""
    nurse = ResponderConfig("ana", "Ana", ("nurse",), ("p",),
                            shifts=(parse_shift("daily 08:00-16:00"),))
    roster = Roster([nurse], "Europe/Lisbon")
    noon = at_local(2026, 11, 23, 12)
    override = roster.set_duty("ana", False, noon, "ana", "api")
    assert override.until == at_local(2026, 11, 23, 16)
    assert not roster.on_duty("ana", noon + 60)
    assert roster.on_duty("ana", at_local(2026, 11, 24, 9))
    roster.set_duty("ana", True, at_local(2026, 11, 23, 20), "ana", "mqtt")
    assert roster.on_duty("ana", at_local(2026, 11, 23, 23))  # checked in after her shift
    assert not roster.on_duty("ana", at_local(2026, 11, 24, 16, 30))


def test_without_shifts_always_on_duty_until_checked_out() -> None:
    roster = Roster(NURSES, "Europe/Lisbon")
    assert roster.on_duty("ana", 0.0)
    roster.set_duty("ana", False, 10.0, "rui", "api")
    assert not roster.on_duty("ana", 10.0 + 365 * 86400)
    with pytest.raises(UnknownResponder):
        roster.set_duty("nobody", True, 0.0, "x", "api")


# --- who gets paged ------------------------------------------------------------------------


def test_role_targets_only_on_duty_responders() -> None:
    clock = CoreDriver(make_config(responders=NURSES))
    clock.send(SetDuty("bea", False, by="bea"))
    out = clock.send(Button("b1", Press.CALL))
    assert pages(out) == [("ana", 1)]


def test_nobody_on_duty_skips_to_the_next_step_at_once() -> None:
    """No nurse on duty: the coordinator step fires at once, and the gap is recorded."""
    clock = CoreDriver(make_config(responders=NURSES))
    for nurse in ("ana", "bea"):
        clock.send(SetDuty(nurse, False, by="rui"))
    out = clock.send(Button("b1", Press.CALL))
    assert pages(out) == [("rui", 2)]
    timeline = incident(out).view.timeline
    kinds = [(e.kind, e.detail.get("level")) for e in timeline]
    assert ("duty_gap", 1) in kinds and ("step_skipped", 1) in kinds
    gap2 = [e for e in timeline if e.kind == "duty_gap" and e.detail["level"] == 2]
    assert gap2 and gap2[0].detail["roles"] == ["nurse"]  # level 2 still lacks nurses
    # the plan goes on from the pulled-in step: the top level repeats after `repeat`
    assert pages(clock.advance(60)) == [("rui", 2)]


def test_nobody_at_all_on_duty_pages_the_last_step_regardless() -> None:
    clock = CoreDriver(make_config(responders=NURSES))
    for who in ("ana", "bea", "rui"):
        clock.send(SetDuty(who, False, by="rui"))
    out = clock.send(Button("b1", Press.CALL))
    assert sorted(pages(out)) == [("ana", 2), ("bea", 2), ("rui", 2)]
    texts = [e.detail.get("text") for e in incident(out).view.timeline]
    assert "nobody on duty: paging the last step regardless" in texts


def test_duty_change_is_stored_and_audited() -> None:
    clock = CoreDriver(make_config(responders=NURSES))
    out = clock.send(SetDuty("ana", False, by="rui", via="mqtt"))
    changed, audit = out
    assert isinstance(changed, DutyChanged) and isinstance(audit, Audit)
    assert changed.snapshot["on"] is False
    with pytest.raises(UnknownResponder):
        clock.send(SetDuty("zed", True, by="zed"))


# --- repeated presses, cycles --------------------------------------------------------------


def test_second_call_press_jumps_a_level_and_marks_urgent() -> None:
    clock = CoreDriver()
    call(clock)
    clock.advance(5)
    out = clock.send(Button("b1", Press.CALL))
    assert pages(out) == [("ana", 2), ("rui", 2)]
    view = incident(out).view
    assert view.urgent and view.level == 2
    page = next(c for c in out if isinstance(c, SendPage))
    assert english(page.message).startswith("URGENT: Booth 1: call button pressed again")
    # at the top already: a third press pages the top level again at once
    clock.advance(5)
    assert pages(clock.send(Button("b1", Press.CALL))) == [("ana", 2), ("rui", 2)]


def test_repeated_press_reopens_an_acknowledged_incident() -> None:
    clock = CoreDriver()
    iid = call(clock)
    clock.send(Acknowledge(iid, "ana"))
    out = clock.send(Button("b1", Press.CALL))
    assert pages(out) == [("ana", 2), ("rui", 2)]
    assert incident(out).view.state == "open"


def test_press_while_staff_attend_only_notes() -> None:
    clock = CoreDriver()
    iid = call(clock)
    clock.send(Attend(iid, "ana"))
    out = clock.send(Button("b1", Press.CALL))
    assert pages(out) == []
    assert incident(out).view.urgent


def test_max_repeats_cycles_the_policy_then_repeats_the_top() -> None:
    """Steps 0s/30s, repeat 60s, max_repeats 1: L1, L2, L1, L2, then L2 every 60 s."""
    policy = Policy(steps=(Step(0, ("role:nurse",)), Step(30, ("role:coordinator",))),
                    repeat=60, max_repeats=1)
    esc = Escalation.start("high", policy, 0.0)
    fired = []
    for now in range(0, 400, 1):
        f = fire_due(policy, esc, float(now))
        if f is not None:
            fired.append((now, f.level))
    assert fired == [(0, 1), (30, 2), (90, 1), (120, 2), (180, 2), (240, 2), (300, 2), (360, 2)]
    assert [level_of(policy, i) for i in range(6)] == [1, 2, 1, 2, 2, 2]


# --- maintenance ---------------------------------------------------------------------------


def test_maintenance_suppresses_stillness_but_not_a_call() -> None:
    clock = CoreDriver()
    out = clock.send(StartMaintenance("b1", clock.now + 3600, "sensor swap", "tech"))
    assert any(isinstance(c, Audit) and c.kind == "maintenance_started" for c in out)
    assert clock.core.booth_views()[0].mode == "maintenance"
    clock.send(Occupancy("b1", True))
    clock.send(Motion("b1", MotionState.STILL))
    out = clock.advance(200)
    assert pages(out) == []
    suppressed = [c for c in out if isinstance(c, Audit) and c.kind == "trigger_suppressed"]
    assert [c.detail["trigger"] for c in suppressed] == ["unresponsive"]
    out = clock.send(Button("b1", Press.CALL))
    assert pages(out) == [("ana", 1)]
    assert english(next(c for c in out if isinstance(c, SendPage)).message).endswith(
        "(booth in maintenance)")


def test_maintenance_expires_by_itself_and_times_a_still_person_afresh() -> None:
    clock = CoreDriver()
    clock.send(StartMaintenance("b1", clock.now + 600, "cleaning", "tech"))
    clock.send(Occupancy("b1", True))
    clock.send(Motion("b1", MotionState.STILL))
    out = clock.advance(600)
    assert any(isinstance(c, Audit) and c.kind == "maintenance_expired" for c in out)
    assert clock.core.booth_views()[0].mode == "normal"
    assert pages(clock.advance(179)) == []
    assert pages(clock.advance(1)) == [("ana", 1)]  # 3 min after the expiry


def test_maintenance_end_and_bad_until() -> None:
    clock = CoreDriver()
    with pytest.raises(BadRequest):
        clock.send(StartMaintenance("b1", clock.now - 1, "x", "tech"))
    with pytest.raises(BadRequest):
        clock.send(StartMaintenance("b1", clock.now + 8 * 86400, "x", "tech"))
    clock.send(StartMaintenance("b1", clock.now + 600, "x", "tech"))
    out = clock.send(EndMaintenance("b1", "tech"))
    assert [c.kind for c in out if isinstance(c, Audit)] == ["maintenance_ended"]
    views = clock.core.booth_views()
    with pytest.raises(IllegalBoothTransition):
        clock.send(EndMaintenance("b1", "tech"))  # ending twice is refused...
    assert clock.core.booth_views() == views  # ...and changes nothing
    assert clock.advance(700) == []  # the old expiry timer is gone


def test_maintenance_started_twice_is_refused_and_changes_nothing() -> None:
    """A second start does not silently replace the first: end it first."""
    clock = CoreDriver()
    clock.send(StartMaintenance("b1", clock.now + 600, "cleaning", "tech"))
    views = clock.core.booth_views()
    with pytest.raises(IllegalBoothTransition):
        clock.send(StartMaintenance("b1", clock.now + 3600, "sensor swap", "ana"))
    assert clock.core.booth_views() == views
    out = clock.advance(600)  # the first one still expires on time
    assert [c.kind for c in out if isinstance(c, Audit)] == ["maintenance_expired"]


# --- notices and outcomes ------------------------------------------------------------------


def test_everyone_paged_hears_who_is_attending_and_the_all_clear() -> None:
    clock = CoreDriver()
    iid = call(clock)
    clock.advance(30)  # level 2: ana again and rui
    out = clock.send(Acknowledge(iid, "ana"))
    notices = [(c.responder, english(c.message)) for c in out if isinstance(c, SendNotice)]
    assert notices == [("rui", "Ana is attending Booth 1")]
    out = clock.send(Resolve(iid, "ana", "ok"))
    notices = [(c.responder, english(c.message)) for c in out if isinstance(c, SendNotice)]
    assert notices == [("rui", "Booth 1: all clear")]
    assert "notice" in [e.kind for e in incident(out).view.timeline]


def test_presence_without_ack_tells_the_others() -> None:
    clock = CoreDriver()
    call(clock)
    clock.advance(30)
    out = clock.send(Button("b1", Press.PRESENCE))
    assert sorted((c.responder, english(c.message)) for c in out if isinstance(c, SendNotice)) == [
        ("ana", "Staff at the booth is at Booth 1"), ("rui", "Staff at the booth is at Booth 1")]


def test_outcome_must_be_known_and_is_kept_with_its_note() -> None:
    with pytest.raises(ValueError):
        Resolve("i", "ana", "fine")
    with pytest.raises(ValueError):
        Resolve("i", "ana", "ok", note="x" * 501)
    clock = CoreDriver()
    iid = call(clock)
    view = incident(clock.send(Resolve(iid, "ana", "overdose_naloxone", note="2 doses"))).view
    assert (view.outcome, view.outcome_note) == ("overdose_naloxone", "2 doses")
    assert view.timeline[-1].kind == "outcome"


def test_page_reports_land_in_the_timeline() -> None:
    clock = CoreDriver()
    iid = call(clock)
    out = clock.send(PageReport(iid, "ana", 1, "phone", False, "HTTP 500"))
    out += clock.send(PageReport(iid, "ana", 1, "sms", True))
    kinds = [(e.kind, e.detail.get("channel")) for e in incident(out).view.timeline[-2:]]
    assert kinds == [("page_fallback", "phone"), ("page_sent", "sms")]
