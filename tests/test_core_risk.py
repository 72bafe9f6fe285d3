"""Issue 15 in the pure core: per-session risk, opening hours, busy responders.

Time is stepped by hand; nothing sleeps.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from monitor.codec import booth_from_record, booth_record, incident_from_record, incident_record
from monitor.core.booth import IllegalBoothTransition
from monitor.core.escalation import resolve_targets
from monitor.core.events import (
    Acknowledge,
    Attend,
    Audit,
    BoothChanged,
    Button,
    Command,
    DeviceReading,
    MarkSession,
    Motion,
    MotionState,
    Occupancy,
    Press,
    Resolve,
    SendNotice,
    SendPage,
)
from monitor.core.readings import Reading
from monitor.core.roster import parse_shift
from monitor.core.settings import (
    BoothConfig,
    Config,
    DeviceConfig,
    Policy,
    ResponderConfig,
    Shift,
    Step,
    Thresholds,
)
from monitor.core.site import SiteCore
from monitor.core.words import english
from tests.harness.core import CoreDriver, call, incident, make_config, pages, replace

LISBON = ZoneInfo("Europe/Lisbon")


def at_local(year: int, month: int, day: int, hour: int, minute: int = 0) -> float:
    return dt.datetime(year, month, day, hour, minute, tzinfo=LISBON).timestamp()


STAFF = (
    ResponderConfig("ana", "Ana", ("nurse",), ("pager",)),
    ResponderConfig("bea", "Bea", ("nurse",), ("pager",)),
    ResponderConfig("rui", "Rui", ("coordinator",), ("pager",)),
    ResponderConfig("tom", "Tom", ("technician",), ("pager",)),
)


def booth_views(commands: list[Command]) -> list[BoothChanged]:
    return [c for c in commands if isinstance(c, BoothChanged)]


def occupied_and_still(clock: CoreDriver, booth: str = "b1", **risk: str) -> None:
    clock.send(Occupancy(booth, True, **risk))  # type: ignore[arg-type]
    clock.send(Motion(booth, MotionState.STILL))


# --- per-session risk ------------------------------------------------------------------------


def test_high_risk_session_pages_at_its_shorter_stillness_and_the_next_is_standard() -> None:
    """A session marked high at check-in pages unresponsive at 60 s, not 3 min; the next
    session at the booth is standard again."""
    clock = CoreDriver()
    occupied_and_still(clock, risk="high", route="inject")
    view = clock.core.booth_views()[0]
    assert (view.risk, view.route, view.stillness, view.long_session) == (
        "high", "inject", 60.0, 600.0)
    assert pages(clock.advance(59.9)) == []
    out = clock.advance(0.1)
    assert pages(out) == [("ana", 1)]
    inc = incident(out).view
    assert (inc.triggers, inc.risk) == (("unresponsive",), "high")
    assert inc.timeline[0].detail == {"trigger": "unresponsive", "priority": "high",
                                      "risk": "high"}
    page = next(c for c in out if isinstance(c, SendPage))
    assert english(page.message) == "Booth 1: no movement for 60s (high-risk session)"
    clock.send(Attend(inc.id, "ana"))
    clock.send(Resolve(inc.id, "ana", "ok"))
    clock.send(Occupancy("b1", False))
    assert clock.core.booth_views()[0].risk == "standard"

    occupied_and_still(clock)
    view = clock.core.booth_views()[0]
    assert (view.risk, view.route, view.stillness) == ("standard", None, 180.0)
    assert pages(clock.advance(179)) == []
    assert pages(clock.advance(1)) == [("ana", 1)]


def test_high_risk_long_session_and_thresholds_never_longer_than_standard() -> None:
    """High risk ends a session at 10 min instead of 20; a booth whose own stillness is
    shorter than the high-risk one keeps its own."""
    config = make_config(stillness=45.0)
    clock = CoreDriver(config)
    clock.send(Occupancy("b1", True, risk="high"))
    assert clock.core.booth_views()[0].stillness == 45.0  # min(60, 45)
    assert pages(clock.advance(599)) == []
    out = clock.advance(1)
    assert incident(out).view.triggers == ("long_session",)
    assert pages(out) == [("ana", 1)]


def test_marking_a_session_mid_way_fires_a_timer_it_made_overdue_at_once() -> None:
    """Still for 90 s, then staff mark the session high: unresponsive fires at the mark,
    which is audited; marking it standard again gives back the standard timers."""
    clock = CoreDriver()
    occupied_and_still(clock)
    clock.advance(90)
    out = clock.send(MarkSession("b1", "high", by="rui", route="smoke"))
    assert pages(out) == [("ana", 1)]
    audit = [c for c in out if isinstance(c, Audit)]
    assert [(a.kind, a.subject, a.detail) for a in audit] == [(
        "session_marked", "b1", {"risk": "high", "route": "smoke", "by": "rui", "via": "api"})]
    assert incident(out).view.risk == "high"

    clock = CoreDriver()
    clock.send(Occupancy("b2", True))
    clock.send(MarkSession("b2", "high", by="rui"))
    again = clock.send(Occupancy("b2", True, risk="high"))  # a timer repeating itself
    assert [c for c in again if isinstance(c, Audit | BoothChanged)] == []
    out = clock.send(MarkSession("b2", "standard", by="rui"))
    assert [c.view.long_session for c in booth_views(out)] == [1200.0]
    assert pages(clock.advance(1199)) == []
    assert pages(clock.advance(1)) == [("ana", 1)]


def test_an_open_incident_records_the_mark_in_its_timeline() -> None:
    clock = CoreDriver()
    clock.send(Occupancy("b1", True))
    iid = call(clock)
    out = clock.send(MarkSession("b1", "high", by="rui"))
    entry = incident(out).new[-1]
    assert (entry.kind, entry.detail) == (
        "risk", {"risk": "high", "route": None, "by": "rui", "via": "api"})
    assert clock.core.incident_view(iid).timeline[-1] == entry


def test_a_vacant_booth_has_no_session_to_mark() -> None:
    """Marking needs a session under way (never a mark waiting for the next person)."""
    clock = CoreDriver()
    with pytest.raises(IllegalBoothTransition):
        clock.send(MarkSession("b1", "high", by="rui"))
    assert clock.core.booth_views()[0].risk == "standard"
    out = clock.send(Occupancy("b1", False, risk="high"))  # a vacancy marks nothing
    assert [c for c in out if isinstance(c, Audit)] == []
    with pytest.raises(ValueError):
        MarkSession("b1", "extreme", by="rui")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Occupancy("b1", True, route="vein")  # type: ignore[arg-type]


def test_risk_survives_a_restart_with_its_session_only() -> None:
    """The stored booth and incident keep the risk; a restored vacant booth is standard."""
    clock = CoreDriver()
    occupied_and_still(clock, risk="high")
    out = clock.advance(60)
    inc = incident(out).view
    views = [booth_from_record(booth_record(v)) for v in clock.core.booth_views()]
    again = SiteCore(make_config(), lambda: "x")
    again.restore(now=clock.now, booths=views,
                  incidents=[incident_from_record(incident_record(inc))])
    assert again.booths["b1"].limits == Thresholds(60.0, 600.0)
    assert again.incident_view(inc.id).risk == "high"
    vacant = replace(views[0], occupied=False, session_started_at=None)
    again.restore(now=clock.now, booths=[vacant])
    assert again.booths["b1"].risk == "standard"


# --- opening hours ---------------------------------------------------------------------------

OPEN = at_local(2027, 1, 15, 10)  # a Friday, 10:00
HOURS = (parse_shift("daily 08:00-22:00"),)


def with_hours(config: Config | None = None, hours: tuple[Shift, ...] = HOURS) -> Config:
    config = config or make_config(responders=STAFF)
    return replace(config, site=replace(config.site, hours=hours))


def test_outside_hours_a_long_session_pages_only_the_technician_at_low_priority() -> None:
    """At 23:00 a session over 20 min pages Tom (technician) at low priority under the
    low policy's timing; a call at the other booth pages the nurse as always."""
    clock = CoreDriver(with_hours(), now=at_local(2027, 1, 15, 23), start=True)
    assert all(v.closed for v in clock.core.booth_views())
    clock.send(Occupancy("b1", True))
    out = clock.advance(1200)
    page = next(c for c in out if isinstance(c, SendPage))
    assert (page.responder, page.priority) == ("tom", "low")
    assert english(page.message) == "Booth 1: session over 20m (outside opening hours)"
    inc = incident(out).view
    assert (inc.priority, inc.after_hours) == ("low", True)
    assert {"kind": "note", "text": "outside opening hours: the technician is paged"} in [
        {"kind": e.kind, **e.detail} for e in inc.timeline]
    assert pages(clock.advance(3600)) == []  # the low policy has no repeat

    out = clock.send(Button("b2", Press.CALL))
    assert pages(out) == [("ana", 1), ("bea", 1)]
    assert incident(out).view.after_hours is False


def test_outside_hours_device_trouble_pages_the_technician_and_a_call_replans() -> None:
    """A sensor going offline in an occupied booth after hours is low, the technician's;
    a call folding into that incident re-plans it under the high policy: the nurses."""
    device = DeviceConfig("m1", "zigbee2mqtt", "z2m/m1", "b1", "motion")
    config = with_hours(replace(make_config(responders=STAFF), devices=(device,)))
    clock = CoreDriver(config, now=at_local(2027, 1, 15, 23), start=True)
    clock.send(Occupancy("b1", True))
    out = clock.send(DeviceReading("m1", Reading(online=False)))
    assert pages(out) == [("tom", 1)]
    assert incident(out).view.priority == "low"
    out = clock.send(Button("b1", Press.CALL))
    assert pages(out) == [("ana", 1), ("bea", 1)]
    assert incident(out).view.priority == "high"


def test_stillness_pages_the_nurses_outside_hours_too() -> None:
    """A person still in a booth after closing is an emergency whatever the hour."""
    clock = CoreDriver(with_hours(), now=at_local(2027, 1, 15, 23), start=True)
    occupied_and_still(clock)
    out = clock.advance(180)
    assert pages(out) == [("ana", 1), ("bea", 1)]
    assert incident(out).view.after_hours is False


def test_booths_say_closed_at_closing_and_open_at_opening() -> None:
    """The booth views change at 22:00 and 08:00 local time, by the site's timer; within
    the hours a long session pages the nurse."""
    clock = CoreDriver(with_hours(), now=at_local(2027, 1, 15, 21, 50), start=True)
    assert not any(v.closed for v in clock.core.booth_views())
    out = clock.at(at_local(2027, 1, 15, 22))
    assert [(c.view.id, c.view.closed) for c in booth_views(out)] == [
        ("b1", True), ("b2", True)]
    assert clock.core.next_deadline() == at_local(2027, 1, 16, 8)
    out = clock.at(at_local(2027, 1, 16, 8))
    assert [(c.view.id, c.view.closed) for c in booth_views(out)] == [
        ("b1", False), ("b2", False)]
    clock.send(Occupancy("b1", True))
    assert pages(clock.advance(1200)) == [("ana", 1), ("bea", 1)]


def test_a_site_without_hours_is_never_closed() -> None:
    clock = CoreDriver(make_config(responders=STAFF), now=at_local(2027, 1, 15, 3), start=True)
    assert clock.core.next_deadline() is None
    assert not any(v.closed for v in clock.core.booth_views())


def test_an_after_hours_incident_keeps_the_technicians_plan_across_a_restart() -> None:
    """Restored, the technician's incident repeats to the technician, not the coordinator."""
    low = Policy(steps=(Step(0, ("role:coordinator",)),), repeat=600)
    config = with_hours(make_config(responders=STAFF, low=low))
    clock = CoreDriver(config, now=at_local(2027, 1, 15, 23), start=True)
    clock.send(Occupancy("b1", True))
    inc = incident(clock.advance(1200)).view
    again = CoreDriver(config, now=clock.now + 1)
    again.core.restore(now=again.now, incidents=[incident_from_record(incident_record(inc))])
    assert pages(again.advance(600)) == [("tom", 1)]


# --- busy responders -------------------------------------------------------------------------


def busy_config(skip_busy: bool) -> Config:
    high = Policy(steps=(Step(0, ("role:nurse",)), Step(30, ("role:nurse", "role:coordinator"))),
                  repeat=60, ack_timeout=120, skip_busy=skip_busy)
    return make_config(booths=3, responders=STAFF, high=high)


def test_a_busy_nurse_is_paged_last_by_default() -> None:
    """Ana, at booth 1, is paged after Bea for booth 2's call; the page says where she is."""
    clock = CoreDriver(busy_config(skip_busy=False))
    first = call(clock, "b1")
    clock.send(Acknowledge(first, "ana"))
    out = clock.send(Button("b2", Press.CALL))
    assert pages(out) == [("bea", 1), ("ana", 1)]
    page_entries = [e.detail for e in incident(out).view.timeline if e.kind == "page"]
    assert page_entries == [{"responder": "bea", "level": 1},
                            {"responder": "ana", "level": 1, "busy_at": "b1"}]


def test_with_skip_busy_the_nurse_at_another_booth_is_skipped_for_the_free_one() -> None:
    """skip_busy: Ana attending booth 1 is skipped for booth 2's call; Bea is paged at once
    and the skip is recorded and typed."""
    clock = CoreDriver(busy_config(skip_busy=True))
    first = call(clock, "b1")
    clock.send(Attend(first, "ana"))
    out = clock.send(Button("b2", Press.CALL))
    assert pages(out) == [("bea", 1)]
    change = incident(out)
    skipped = [e.detail for e in change.view.timeline if e.kind == "busy_skipped"]
    assert skipped == [{"level": 1, "role": "nurse", "responders": ["ana"], "booths": ["b1"]}]
    assert [type(c).__name__ for c in change.changes].count("BusySkipped") == 1
    # once booth 1 is resolved Ana is free again: the next step pages her too
    clock.send(Resolve(first, "ana", "ok"))
    assert pages(clock.advance(30)) == [("ana", 2), ("bea", 2), ("rui", 2)]


def test_all_nurses_busy_pages_them_anyway_and_tells_the_coordinator_once() -> None:
    """Ana at booth 1, Bea acknowledged booth 2: booth 3's call still pages both, and Rui
    hears that all staff are engaged (once, not again at the repeat)."""
    clock = CoreDriver(busy_config(skip_busy=True))
    clock.send(Acknowledge(call(clock, "b1"), "ana"))
    clock.send(Acknowledge(call(clock, "b2"), "bea"))
    out = clock.send(Button("b3", Press.CALL))
    assert pages(out) == [("ana", 1), ("bea", 1)]
    notices = [c for c in out if isinstance(c, SendNotice)]
    assert [(n.responder, n.booth, english(n.message)) for n in notices] == [(
        "rui", "b3",
        "All staff engaged: Booth 3 needs someone, paged all the same: Ana at Booth 1; "
        "Bea at Booth 2")]
    view = incident(out).view
    assert [e.detail for e in view.timeline if e.kind == "all_engaged"] == [
        {"level": 1, "roles": ["nurse"]}]
    assert [e.detail["responder"] for e in view.timeline if e.kind == "notice"] == ["rui"]
    later = clock.advance(30)  # step 2 pages Rui himself: no notice to him
    assert [c for c in later if isinstance(c, SendNotice)] == []
    assert pages(later) == [("rui", 2), ("ana", 2), ("bea", 2)]


def test_a_reopened_incident_frees_its_responder() -> None:
    """Busy means acknowledged or at the booth: an incident open again holds nobody."""
    clock = CoreDriver(busy_config(skip_busy=True))
    first = call(clock, "b1")
    clock.send(Acknowledge(first, "ana"))
    clock.advance(120)  # ack timeout: booth 1 is open again
    out = clock.send(Button("b2", Press.CALL))
    assert pages(out) == [("ana", 1), ("bea", 1)]


def test_who_is_busy_survives_a_restart() -> None:
    """Ana acknowledged booth 1 before a restart: after it, booth 2's call still skips her."""
    config = busy_config(skip_busy=True)
    clock = CoreDriver(config)
    first = call(clock, "b1")
    clock.send(Acknowledge(first, "ana"))
    stored = incident_record(clock.core.incident_view(first))
    again = CoreDriver(config, now=clock.now, ids="again")
    again.core.restore(now=again.now, incidents=[incident_from_record(stored)])
    assert pages(again.send(Button("b2", Press.CALL))) == [("bea", 1)]


def test_an_acknowledgement_that_lapsed_leaves_the_responder_free() -> None:
    """Ana acknowledged booth 1 and never came (ack timeout): once Rui acknowledges it, Ana
    is not busy there, so booth 2's call pages her too, before and after a restart."""
    config = busy_config(skip_busy=True)
    clock = CoreDriver(config)
    first = call(clock, "b1")
    clock.send(Acknowledge(first, "ana"))
    clock.advance(121)  # the ack timeout re-opens booth 1
    assert clock.core.incident_view(first).state == "open"
    clock.send(Acknowledge(first, "rui"))
    stored = incident_record(clock.core.incident_view(first))
    again = CoreDriver(config, now=clock.now, ids="again")
    again.core.restore(now=again.now, incidents=[incident_from_record(stored)])
    assert sorted(pages(clock.send(Button("b2", Press.CALL)))) == [("ana", 1), ("bea", 1)]
    assert sorted(pages(again.send(Button("b2", Press.CALL)))) == [("ana", 1), ("bea", 1)]


def test_resolve_targets_orders_skips_and_reports_engaged_roles() -> None:
    """The pure rule: free first, busy last; skipped with skip_busy; all busy: engaged."""
    nurses = [r.id for r in STAFF if "nurse" in r.roles]
    targets = resolve_targets(["role:nurse"], STAFF, busy={"ana"})
    assert (targets.responders, targets.skipped, targets.engaged) == (("bea", "ana"), (), ())
    targets = resolve_targets(["role:nurse"], STAFF, busy={"ana"}, skip_busy=True)
    assert (targets.responders, targets.skipped) == (("bea",), (("nurse", ("ana",)),))
    targets = resolve_targets(["role:nurse", "ana"], STAFF, busy={"ana"}, skip_busy=True)
    assert (targets.responders, targets.skipped) == (("bea", "ana"), ())  # named: paged
    targets = resolve_targets(["role:nurse"], STAFF, busy=set(nurses), skip_busy=True)
    assert (targets.responders, targets.engaged) == (tuple(nurses), ("nurse",))


def test_booth_config_thresholds() -> None:
    booth = BoothConfig("b1", "Booth 1", long_session=300.0, stillness=180.0,
                        device_timeout=900.0, high_risk=Thresholds(90.0, 600.0))
    assert booth.thresholds("standard") == Thresholds(180.0, 300.0)
    assert booth.thresholds("high") == Thresholds(90.0, 300.0)
