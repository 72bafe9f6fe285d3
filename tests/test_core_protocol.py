"""The response protocol in the pure core: steps with who and when, what they imply, and the
words of a page sent after a re-open. Time is stepped by hand."""

from __future__ import annotations

import json

import pytest

from monitor.codec import incident_from_record, incident_json, incident_record
from monitor.core.events import (
    Acknowledge,
    Attend,
    Button,
    Command,
    Motion,
    MotionState,
    Occupancy,
    Press,
    ProtocolStep,
    RecordStep,
    Resolve,
    SendNotice,
    SendPage,
    StopPaging,
    parse_step,
)
from monitor.core.incident import (
    TRANSITIONS,
    Action,
    IllegalTransition,
    Incident,
    State,
    StepRecorded,
    Transition,
    Trigger,
)
from monitor.core.site import UnknownIncident
from monitor.core.words import english
from tests.harness.core import T0, CoreDriver, call, incident, make_config, pages

KNOCKED, ANSWERED, ENTERED = ProtocolStep.KNOCKED, ProtocolStep.ANSWERED, ProtocolStep.ENTERED
NALOXONE, OXYGEN, NOTE = ProtocolStep.NALOXONE, ProtocolStep.OXYGEN, ProtocolStep.NOTE


def step(iid: str, what: ProtocolStep, who: str = "ana", **kw: object) -> RecordStep:
    return RecordStep(iid, who, what, via="api", **kw)  # type: ignore[arg-type]


def notices(commands: list[Command]) -> list[tuple[str, str]]:
    return [(c.responder, english(c.message)) for c in commands if isinstance(c, SendNotice)]


def messages(commands: list[Command]) -> list[str]:
    return [english(c.message) for c in commands if isinstance(c, SendPage)]


def unresponsive(clock: CoreDriver, booth: str = "b1") -> str:
    """A person in `booth` goes still until the stillness timer raises an incident."""
    clock.send(Occupancy(booth, True))
    clock.send(Motion(booth, MotionState.STILL))
    out = clock.advance(180)
    assert pages(out) == [("ana", 1)]
    view = incident(out).view
    assert view.triggers == ("unresponsive",)
    return view.id


def test_steps_land_in_order_with_their_stamps() -> None:
    """Every step is in the timeline and the API's `steps` in order, with who, when, doses
    and note; time to enter and to the first naloxone count from raised_at."""
    clock = CoreDriver()
    iid = call(clock)
    clock.advance(5)
    clock.send(Acknowledge(iid, "ana"))
    plan: list[tuple[int, ProtocolStep, str, dict[str, object]]] = [
        (20, KNOCKED, "ana", {}), (25, ENTERED, "ana", {}), (40, NALOXONE, "ana", {"count": 2}),
        (50, OXYGEN, "rui", {}), (55, ProtocolStep.EMS_CALLED, "rui", {}),
        (120, NALOXONE, "ana", {}), (300, ProtocolStep.EMS_ARRIVED, "rui", {}),
        (310, NOTE, "ana", {"note": "breathing again, talking"})]
    for at, what, who, kw in plan:
        clock.at(T0 + at)
        out = clock.send(step(iid, what, who, **kw))
    view = incident(out).view
    body = incident_json(view, "Booth 1")
    got = [(s["step"], s["responder"], s["at"], s.get("count"), s.get("note"))
           for s in body["steps"]]
    assert got == [
        ("knocked", "ana", "2027-01-15T08:00:20.000Z", None, None),
        ("entered", "ana", "2027-01-15T08:00:25.000Z", None, None),
        ("naloxone", "ana", "2027-01-15T08:00:40.000Z", 2, None),
        ("oxygen", "rui", "2027-01-15T08:00:50.000Z", None, None),
        ("ems_called", "rui", "2027-01-15T08:00:55.000Z", None, None),
        ("naloxone", "ana", "2027-01-15T08:02:00.000Z", 1, None),
        ("ems_arrived", "rui", "2027-01-15T08:05:00.000Z", None, None),
        ("note", "ana", "2027-01-15T08:05:10.000Z", None, "breathing again, talking"),
    ]
    assert all(s["via"] == "api" and s["kind"] == "step" for s in body["steps"])
    assert [e for e in body["timeline"] if e["kind"] == "step"] == body["steps"]
    assert body["entered_at"] == "2027-01-15T08:00:25.000Z"
    assert body["naloxone_at"] == "2027-01-15T08:00:40.000Z"
    assert body["naloxone_doses"] == 3
    assert body["response"]["to_enter"] == 25 and body["response"]["to_naloxone"] == 40
    # knocking is done at the booth: it stamped presence, as the nurse's own
    assert (view.presence_at, view.presence_by, view.state) == (T0 + 20, "ana", "attended")


def test_a_step_done_at_the_booth_is_presence_and_stops_escalation() -> None:
    """Entered, with nobody at the booth yet: presence by that responder, escalation stops,
    and those paged before hear she is there."""
    clock = CoreDriver()
    iid = call(clock)
    assert pages(clock.advance(30)) == [("ana", 2), ("rui", 2)]
    out = clock.send(step(iid, ENTERED))
    view = incident(out).view
    assert (view.state, view.presence_at, view.presence_by) == ("attended", T0 + 30, "ana")
    presence = [e for e in view.timeline if e.kind == "presence"][-1]
    assert presence.detail == {"responder": "ana", "via": "api", "step": "entered"}
    assert notices(out) == [("rui", "Ana is at Booth 1")]
    assert any(isinstance(c, StopPaging) for c in out)
    assert pages(clock.advance(3600)) == []
    # a step not done at the booth (or a second one) changes no state
    out = clock.send(step(iid, ProtocolStep.EMS_CALLED, "rui"))
    assert incident(out).view.presence_by == "ana" and notices(out) == []


@pytest.mark.parametrize("what", [ProtocolStep.EMS_CALLED, ProtocolStep.EMS_ARRIVED, NOTE])
def test_a_step_done_anywhere_is_only_recorded(what: ProtocolStep) -> None:
    """EMS called, EMS arrived and a note may come from the desk: escalation goes on."""
    clock = CoreDriver()
    iid = call(clock)
    out = clock.send(step(iid, what, note="from the desk" if what is NOTE else None))
    view = incident(out).view
    assert (view.state, view.presence_at) == ("open", None)
    assert pages(clock.advance(30)) == [("ana", 2), ("rui", 2)]


def test_answered_on_an_unresponsive_incident_stops_escalation_without_presence() -> None:
    """The person answered through the door: nobody else need come. Paging stops as with
    presence, presence_at stays empty, and a later presence is still the first one."""
    clock = CoreDriver()
    iid = unresponsive(clock)
    assert pages(clock.advance(30)) == [("ana", 2), ("rui", 2)]
    out = clock.send(step(iid, ANSWERED))
    view = incident(out).view
    assert (view.state, view.presence_at) == ("attended", None)
    assert notices(out) == [("rui", "The person in Booth 1 answered Ana: nobody else need come")]
    assert any(isinstance(c, StopPaging) for c in out)
    changes = incident(out).changes
    assert [c for c in changes if isinstance(c, Transition)] == [
        Transition(T0 + 210, State.OPEN, State.ATTENDED, "ana", False, "answered")]
    clock.send(Motion("b1", MotionState.MOVING))  # fine, as they said
    assert pages(clock.advance(3600)) == []
    out = clock.send(Attend(iid, "rui"))
    assert incident(out).view.presence_at == clock.now
    # time to presence counts this first person at the booth
    assert [c.first for c in incident(out).changes if isinstance(c, Transition)] == [True]
    assert notices(out) == []


def test_still_again_after_answering_pages_afresh() -> None:
    """Nobody is at the booth after an answer through the door: the stillness clock starts
    again at the answer (the person may have spoken without moving), and a second still
    spell re-opens the incident and pages from the first step."""
    clock = CoreDriver()
    iid = unresponsive(clock)
    clock.advance(10)
    out = clock.send(step(iid, ANSWERED))
    assert incident(out).view.state == "attended"
    assert pages(clock.advance(179)) == []
    out = clock.advance(1)  # 180 s still since the answer
    assert pages(out) == [("ana", 1)]
    assert messages(out) == ["Booth 1: no movement for 3m"]
    view = incident(out).view
    assert (view.state, view.presence_at) == ("open", None)
    assert [e.detail for e in view.timeline if e.kind == "state"][-1] == {
        "to": "open", "from": "attended", "reason": "alarm after the person answered"}
    assert pages(clock.advance(30)) == [("ana", 2), ("rui", 2)]


def test_a_call_after_answering_pages_and_the_next_answer_does_not_settle_it() -> None:
    """The person answered, then presses call: paged at once; answering again is recorded
    but a call needs someone there."""
    clock = CoreDriver()
    iid = unresponsive(clock)
    clock.send(step(iid, ANSWERED))
    out = clock.send(Button("b1", Press.CALL))
    assert pages(out) == [("ana", 1)]
    assert incident(out).view.triggers == ("unresponsive", "call")
    out = clock.send(step(iid, ANSWERED))
    assert incident(out).view.state == "open"


def test_with_staff_at_the_booth_a_call_is_only_recorded() -> None:
    """Presence, not an answer: staff are there, so a call press pages nobody."""
    clock = CoreDriver()
    iid = unresponsive(clock)
    clock.send(step(iid, KNOCKED))
    out = clock.send(Button("b1", Press.CALL))
    assert pages(out) == [] and incident(out).view.state == "attended"


def test_answered_on_an_acknowledged_incident_stops_the_ack_timeout() -> None:
    """Acknowledged, then the person answers: the ack timeout can no longer re-open it."""
    clock = CoreDriver()
    iid = unresponsive(clock)
    clock.send(Acknowledge(iid, "ana"))
    out = clock.send(step(iid, ANSWERED))
    assert incident(out).view.state == "attended" and incident(out).view.ack_deadline is None
    clock.send(Motion("b1", MotionState.MOVING))
    assert pages(clock.advance(3600)) == []


@pytest.mark.parametrize("raise_it", ["call", "call_after_still", "device"])
def test_answered_leaves_a_call_or_another_reason_escalating(raise_it: str) -> None:
    """A person who pressed call, or a booth nobody watches, still needs someone: answered
    is recorded and escalation goes on."""
    clock = CoreDriver(start=True)
    if raise_it == "call":
        iid = call(clock)
    else:
        iid = unresponsive(clock)
        if raise_it == "call_after_still":
            clock.send(Button("b1", Press.CALL))
        else:
            clock.core.incidents[iid].add_trigger(Trigger.DEVICE_OFFLINE, clock.now, "high")
    out = clock.send(step(iid, ANSWERED))
    assert incident(out).view.state == "open" and notices(out) == []
    assert pages(clock.advance(120))  # paging goes on


def test_steps_need_an_unresolved_incident() -> None:
    """A resolved incident takes no step (the API answers 409); an unknown one is unknown."""
    clock = CoreDriver()
    iid = call(clock)
    clock.send(Resolve(iid, "ana", "ok"))
    with pytest.raises(UnknownIncident):
        clock.send(step(iid, KNOCKED))


def _in(state: State) -> Incident:
    """An unresponsive incident in `state`."""
    inc = Incident("i1", "b1", Trigger.UNRESPONSIVE, T0, dict(make_config().escalation))
    inc.on_timer(T0)
    if state is not State.OPEN:
        inc.acknowledge("ana", T0 + 1, "api")
    if state in (State.ATTENDED, State.RESOLVED):
        inc.attend("ana", T0 + 2, "api")
    if state is State.RESOLVED:
        inc.resolve("ana", T0 + 3, "ok", "api")
    assert inc.state is state
    return inc


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("what", list(ProtocolStep))
def test_every_step_in_every_state(state: State, what: ProtocolStep) -> None:
    """A step moves the incident as the table says (answered and the steps taken at the booth
    attend it), or raises on a resolved incident and changes nothing."""
    inc = _in(state)
    before = inc.view()
    if Action.STEP not in TRANSITIONS[state]:
        with pytest.raises(IllegalTransition):
            inc.record_step(what, "rui", T0 + 10, "api", note="text")
        assert inc.view() == before
        return
    inc.record_step(what, "rui", T0 + 10, "api", note="text")
    attends = what is ANSWERED or what in (KNOCKED, ENTERED, NALOXONE, OXYGEN)
    assert inc.state is (TRANSITIONS[state][Action.ANSWERED] if attends
                         else TRANSITIONS[state][Action.STEP])
    recorded = [c for c in inc.take_changes() if isinstance(c, StepRecorded)]
    assert recorded == [StepRecorded(T0 + 10, what, "rui", 1 if what is NALOXONE else None,
                                     True)]


def test_only_the_first_of_a_step_is_first() -> None:
    """Time to enter and to naloxone are measured once: the first of each step is `first`."""
    inc = _in(State.ATTENDED)
    for at, what in ((10, NALOXONE), (20, NALOXONE), (30, ENTERED), (40, ENTERED)):
        inc.record_step(what, "ana", T0 + at, "api")
    firsts = [(c.step, c.first) for c in inc.take_changes() if isinstance(c, StepRecorded)]
    assert firsts == [(NALOXONE, True), (NALOXONE, False), (ENTERED, True), (ENTERED, False)]
    assert inc.view().first_steps == {"naloxone": T0 + 10, "entered": T0 + 30}


@pytest.mark.parametrize(("what", "count", "note", "problem"), [
    ("kicked", None, None, "step: one of knocked, answered, entered, naloxone, oxygen, "
                           "ems_called, ems_arrived, note"),
    (None, None, None, "step: one of"),
    ("naloxone", 0, None, "count: a whole number of doses from 1 to 10"),
    ("naloxone", 11, None, "count: a whole number of doses from 1 to 10"),
    ("naloxone", True, None, "count: a whole number of doses from 1 to 10"),
    ("naloxone", 1.5, None, "count: a whole number of doses from 1 to 10"),
    ("naloxone", "2", None, "count: a whole number of doses from 1 to 10"),
    ("oxygen", 1, None, "count: only with naloxone"),
    ("note", None, None, "note: the note step needs its text"),
    ("note", None, "   ", "note: the note step needs its text"),
    ("knocked", None, "x" * 501, "note: text of at most 500 characters"),
    ("knocked", None, 7, "note: text of at most 500 characters"),
])
def test_a_bad_step_names_the_field(what: object, count: object, note: object,
                                    problem: str) -> None:
    with pytest.raises(ValueError, match=f"^{problem}"):
        parse_step(what, count, note)
    with pytest.raises(ValueError):
        RecordStep("i1", "ana", what, count, note)  # type: ignore[arg-type]


def test_a_good_step_passes() -> None:
    assert parse_step("naloxone", 10, "intranasal") is NALOXONE
    assert parse_step("note", None, "x" * 500) is NOTE
    assert RecordStep("i1", "ana", NALOXONE).count is None  # one dose when recorded


# --- pages after a re-open ------------------------------------------------------------------


def test_a_page_after_an_ack_timeout_says_it_reopened() -> None:
    """Acknowledged, nobody at the booth by ack_timeout: the pages say so, with how long ago
    and who acknowledged, until someone acknowledges again; then the next lapse names them."""
    clock = CoreDriver()
    iid = call(clock)
    clock.advance(10)
    clock.send(Acknowledge(iid, "ana"))
    out = clock.advance(120)  # the ack timeout: re-opened, level 2 at once
    assert pages(out) == [("ana", 2), ("rui", 2)]
    assert set(messages(out)) == {
        "re-opened: nobody at Booth 1 yet, 2m after Ana acknowledged (call button pressed)"}
    out = clock.advance(60)  # the repeat says it too, counting on
    assert set(messages(out)) == {
        "re-opened: nobody at Booth 1 yet, 3m after Ana acknowledged (call button pressed)"}
    clock.advance(5)
    clock.send(Acknowledge(iid, "rui"))
    out = clock.advance(120)
    assert set(messages(out)) == {
        "re-opened: nobody at Booth 1 yet, 2m after Rui acknowledged (call button pressed)"}


def test_a_reopen_by_a_more_urgent_reason_pages_that_reason() -> None:
    """A higher trigger re-opens an acknowledged incident: its page names the new reason, not
    a lapsed acknowledgement; a call pressed again says URGENT."""
    clock = CoreDriver()
    clock.send(Occupancy("b1", True))
    out = clock.advance(1200)
    iid = incident(out).view.id
    clock.send(Acknowledge(iid, "ana"))
    clock.send(Motion("b1", MotionState.STILL))
    out = clock.advance(180)
    assert messages(out) == ["Booth 1: session over 20m; no movement for 3m"]
    clock.send(Acknowledge(iid, "ana"))
    assert pages(clock.send(Button("b1", Press.CALL))) == []  # folds in: as urgent as it was
    out = clock.send(Button("b1", Press.CALL))
    assert set(messages(out)) == {
        "URGENT: Booth 1: session over 20m; no movement for 3m; call button pressed again"}


def test_steps_and_the_lapsed_ack_survive_a_restart() -> None:
    """The stored record keeps first steps and the standing acknowledgement: restored, the
    ack timeout still re-opens with the re-open words, and old records read with none."""
    clock = CoreDriver()
    iid = call(clock)
    clock.send(step(iid, ProtocolStep.EMS_CALLED))
    clock.send(Acknowledge(iid, "ana"))
    view = clock.core.incident_view(iid)
    record = json.loads(json.dumps(incident_record(view)))
    restored = incident_from_record(record)
    assert restored == view
    later = CoreDriver(now=clock.now)
    later.core.restore(now=clock.now, booths=[], incidents=[restored])
    out = later.advance(120)
    assert messages(out)[0].startswith("re-opened: nobody at Booth 1 yet, 2m after Ana")
    old = {k: v for k, v in record.items() if k not in ("first_steps", "last_ack")}
    assert incident_from_record(old).first_steps == {}
    assert incident_from_record(old).last_ack is None


@pytest.mark.parametrize("trouble", [Trigger.DEVICE_OFFLINE, Trigger.LOW_BATTERY])
def test_device_trouble_after_an_answer_pages_again(trouble: Trigger) -> None:
    """The answer settled the stillness alarm, nothing else: a sensor that goes offline or
    runs low afterwards re-opens the incident and pages (it was recorded and paged nobody,
    leaving a booth whose next occupant nobody could watch)."""
    clock = CoreDriver()
    iid = unresponsive(clock)
    clock.send(step(iid, ANSWERED))
    inc = clock.core.incidents[iid]
    assert inc.view().state == "attended"
    assert inc.add_trigger(trouble, clock.now) is True
    assert inc.view().state == "open" and trouble in inc.triggers
    assert inc.on_timer(clock.now) is not None  # the first step pages at once
