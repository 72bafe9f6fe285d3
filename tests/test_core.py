"""The pure core, driven with a hand-stepped clock: no sleeping, no patching."""

from __future__ import annotations

import ast
import dataclasses
import itertools
import json
from pathlib import Path

import pytest

from monitor.codec import booth_from_record, booth_record, incident_from_record, incident_record
from monitor.core.booth import (
    DOOR_SESSION,
    SENSOR_SESSION,
    Booth,
    IllegalBoothTransition,
    Sensed,
    Session,
)
from monitor.core.events import (
    Acknowledge,
    Attend,
    BoothChanged,
    Button,
    Heartbeat,
    Motion,
    MotionState,
    Occupancy,
    PageFailed,
    Press,
    Resolve,
    SendPage,
)
from monitor.core.incident import TRANSITIONS, Action, IllegalTransition, Incident, State, Trigger
from monitor.core.settings import Policy, Step
from monitor.core.site import SiteCore, UnknownBooth, UnknownIncident
from monitor.core.words import english
from tests.harness.core import T0, CoreDriver, call, incident, make_config, pages, replace

# --- calls and escalation ----------------------------------------------------------------


def test_call_pages_nurse_at_once_and_shows_on_booth() -> None:
    """A call press opens a high incident and pages every nurse immediately."""
    clock = CoreDriver()
    out = clock.send(Button("b1", Press.CALL))
    assert pages(out) == [("ana", 1)]
    view = incident(out).view
    assert (view.priority, view.state, view.triggers, view.level) == ("high", "open", ("call",), 1)
    assert view.raised_at == T0
    booth = [c for c in out if isinstance(c, BoothChanged)][-1].view
    assert booth.incident is not None and booth.incident.id == view.id


def test_level_two_fires_on_time_not_before() -> None:
    """Step two (nurse and coordinator) fires exactly 30 s after raised_at."""
    clock = CoreDriver()
    call(clock)
    assert pages(clock.advance(29.9)) == []
    assert pages(clock.advance(0.1)) == [("ana", 2), ("rui", 2)]
    assert clock.now == T0 + 30


def test_last_step_repeats_until_acknowledged() -> None:
    """After the last step, it repeats every `repeat` seconds on the original schedule."""
    clock = CoreDriver()
    call(clock)
    clock.advance(30)
    assert pages(clock.advance(59)) == []
    assert pages(clock.advance(1)) == [("ana", 2), ("rui", 2)]
    assert pages(clock.advance(60)) == [("ana", 2), ("rui", 2)]


def test_ack_pauses_and_ack_timeout_reopens_with_next_step() -> None:
    """No presence by ack_timeout re-opens the incident and fires the next step at once."""
    clock = CoreDriver()
    iid = call(clock)
    clock.advance(5)
    out = clock.send(Acknowledge(iid, "ana"))
    view = incident(out).view
    assert (view.state, view.acknowledged_by) == ("acknowledged", "ana")
    assert view.acknowledged_at == T0 + 5
    assert clock.core.next_deadline() == T0 + 5 + 120
    assert pages(clock.advance(119)) == []  # step 2 at +30 s is held back by the ack
    out = clock.advance(1)
    assert pages(out) == [("ana", 2), ("rui", 2)]
    view = incident(out).view
    assert (view.state, view.reopened, view.acknowledged_at) == ("open", 1, T0 + 5)
    assert pages(clock.advance(60)) == [("ana", 2), ("rui", 2)]


def test_presence_stops_escalation_and_clear_resolves() -> None:
    """Presence at the booth stops every page; clear resolves and frees the booth."""
    clock = CoreDriver()
    iid = call(clock)
    clock.advance(10)
    out = clock.send(Button("b1", Press.PRESENCE))
    view = incident(out).view
    assert (view.state, view.presence_at) == ("attended", T0 + 10)
    assert clock.core.next_deadline() is None
    assert pages(clock.advance(600)) == []
    out = clock.send(Button("b1", Press.CLEAR))
    view = incident(out).view
    assert (view.state, view.resolved_at, view.resolved_by) == ("resolved", T0 + 610, "booth")
    assert [c for c in out if isinstance(c, BoothChanged)][-1].view.incident is None
    with pytest.raises(UnknownIncident):
        clock.send(Acknowledge(iid, "ana"))


def test_clear_without_presence_records_presence_too() -> None:
    """A clear pressed at the booth means someone was there: presence_at is stamped."""
    clock = CoreDriver()
    call(clock)
    clock.advance(40)
    view = incident(clock.send(Button("b1", Press.CLEAR))).view
    assert view.presence_at == T0 + 40 and view.resolved_at == T0 + 40


def test_api_resolve_with_outcome() -> None:
    """Resolve through the API records who and the outcome."""
    clock = CoreDriver()
    iid = call(clock)
    clock.send(Attend(iid, "ana"))
    view = incident(clock.send(Resolve(iid, "ana", "ok"))).view
    assert (view.state, view.resolved_by, view.outcome) == ("resolved", "ana", "ok")


def test_second_call_folds_into_open_incident() -> None:
    """One booth has one open incident: a second call joins it (and is urgent, see
    test_core_paging)."""
    clock = CoreDriver()
    first = call(clock)
    clock.advance(3)
    view = incident(clock.send(Button("b1", Press.CALL))).view
    assert view.id == first and view.triggers == ("call",)
    assert {"trigger": "call", "repeated": True, "urgent": True} in [
        e.detail for e in view.timeline]


def test_booths_are_independent() -> None:
    """A call at another booth opens its own incident."""
    clock = CoreDriver()
    a, b = call(clock, "b1"), call(clock, "b2")
    assert a != b
    assert {v.id for v in clock.core.open_incident_views()} == {a, b}


# --- stillness and long sessions ---------------------------------------------------------


def test_still_person_becomes_unresponsive_after_stillness() -> None:
    """Occupied and still for `stillness` seconds raises a high unresponsive incident."""
    clock = CoreDriver(make_config(stillness=180))
    clock.send(Occupancy("b1", True))
    clock.advance(20)
    clock.send(Motion("b1", MotionState.MOVING))
    clock.advance(10)
    clock.send(Motion("b1", MotionState.STILL))
    assert pages(clock.advance(179)) == []
    out = clock.advance(1)
    assert pages(out) == [("ana", 1)]
    view = incident(out).view
    assert (view.triggers, view.priority, view.raised_at) == (("unresponsive",), "high", T0 + 210)


def test_booth_view_carries_the_stillness_countdown() -> None:
    """The booth says when its unresponsive alarm fires, and its thresholds, for the board."""
    clock = CoreDriver(make_config(stillness=60, long_session=600))
    view = clock.core.booth_views()[0]
    assert (view.stillness, view.long_session, view.unresponsive_at) == (60, 600, None)
    clock.send(Occupancy("b1", True))
    clock.send(Motion("b1", MotionState.MOVING))
    assert clock.core.booth_views()[0].unresponsive_at is None
    clock.advance(5)
    clock.send(Motion("b1", MotionState.STILL))
    assert clock.core.booth_views()[0].unresponsive_at == T0 + 65
    clock.advance(60)  # fired: nothing more to count down
    assert clock.core.booth_views()[0].unresponsive_at is None


def test_absent_while_occupied_counts_as_still() -> None:
    """A presence sensor that loses a still person reports absent: that is still, not vacant."""
    clock = CoreDriver(make_config(stillness=60))
    clock.send(Occupancy("b1", True))
    clock.send(Motion("b1", MotionState.MOVING))
    clock.advance(5)
    clock.send(Motion("b1", MotionState.STILL))
    clock.advance(30)
    clock.send(Motion("b1", MotionState.ABSENT))  # still -> absent keeps the clock running
    assert pages(clock.advance(29)) == []
    assert pages(clock.advance(1)) == [("ana", 1)]  # 60 s after the still at +5 s


def test_movement_resets_the_stillness_clock() -> None:
    """Moving before `stillness` elapses starts the count again from the next still."""
    clock = CoreDriver(make_config(stillness=60))
    clock.send(Occupancy("b1", True))
    clock.send(Motion("b1", MotionState.STILL))
    clock.advance(50)
    clock.send(Motion("b1", MotionState.MOVING))
    clock.advance(5)
    clock.send(Motion("b1", MotionState.STILL))
    assert pages(clock.advance(59)) == []
    assert pages(clock.advance(1)) == [("ana", 1)]


def test_stillness_before_entry_counts_from_session_start() -> None:
    """A booth left 'absent' before someone enters times their stillness from entry."""
    clock = CoreDriver(make_config(stillness=60))
    clock.send(Motion("b1", MotionState.ABSENT))
    clock.advance(500)
    clock.send(Occupancy("b1", True))
    assert pages(clock.advance(59)) == []
    assert pages(clock.advance(1)) == [("ana", 1)]


def test_vacant_booth_never_unresponsive() -> None:
    """Stillness in an empty booth is just an empty booth."""
    clock = CoreDriver(make_config(stillness=60))
    clock.send(Motion("b1", MotionState.STILL))
    assert clock.advance(3600) == []


def test_long_session_is_medium_and_vacancy_resolves_it() -> None:
    """An over-long session pages at medium; leaving the booth resolves it."""
    clock = CoreDriver(make_config(long_session=1200))
    clock.send(Occupancy("b1", True))
    clock.send(Motion("b1", MotionState.MOVING))
    assert pages(clock.advance(1199)) == []
    out = clock.advance(1)
    assert pages(out) == [("ana", 1)]
    assert incident(out).view.priority == "medium"
    view = incident(clock.send(Occupancy("b1", False))).view
    assert (view.state, view.outcome, view.resolved_by) == ("resolved", "session_ended", None)
    assert clock.core.open_incident_views() == []


def test_vacancy_never_resolves_a_call() -> None:
    """Only a person resolves a call: the booth emptying leaves it open and escalating."""
    clock = CoreDriver()
    clock.send(Occupancy("b1", True))
    iid = call(clock)
    out = clock.send(Occupancy("b1", False))
    assert incident(out).view.state == "open"
    assert clock.core.incident_view(iid).state == "open"
    assert pages(clock.advance(30)) == [("ana", 2), ("rui", 2)]


def test_higher_trigger_replans_at_once_and_reopens_ack() -> None:
    """A medium long-session incident that becomes unresponsive re-plans under high at once."""
    clock = CoreDriver(make_config(long_session=600, stillness=900))
    clock.send(Occupancy("b1", True))
    clock.send(Motion("b1", MotionState.STILL))
    out = clock.advance(600)
    iid = incident(out).view.id
    clock.send(Acknowledge(iid, "ana"))
    out = clock.advance(300)  # stillness fires at +900
    assert pages(out) == [("ana", 1)]
    view = incident(out).view
    assert (view.id, view.priority, view.state) == (iid, "high", "open")
    assert view.triggers == ("long_session", "unresponsive")
    assert pages(clock.advance(30)) == [("ana", 2), ("rui", 2)]
    assert incident(clock.send(Occupancy("b1", False))).view.state == "open"


def test_lower_trigger_is_recorded_without_replanning() -> None:
    """A long session inside an open call incident is recorded and pages nobody."""
    clock = CoreDriver(make_config(long_session=100))
    clock.send(Occupancy("b1", True))
    clock.send(Motion("b1", MotionState.MOVING))
    iid = call(clock)
    clock.send(Attend(iid, "ana"))
    out = clock.advance(100)
    assert pages(out) == []
    view = incident(out).view
    assert view.triggers == ("call", "long_session") and view.priority == "high"


def test_resolved_with_person_still_there_is_timed_again() -> None:
    """Staff who clear a booth with a still person get paged again after another stillness."""
    clock = CoreDriver(make_config(stillness=60))
    clock.send(Occupancy("b1", True))
    clock.send(Motion("b1", MotionState.STILL))
    clock.advance(60)
    clock.advance(10)
    clock.send(Button("b1", Press.CLEAR))
    assert pages(clock.advance(59)) == []
    assert pages(clock.advance(1)) == [("ana", 1)]


# --- failures and restart ----------------------------------------------------------------


def test_failed_page_pulls_next_step_in() -> None:
    """A page that could not be delivered escalates to the next step at once."""
    clock = CoreDriver()
    iid = call(clock)
    clock.advance(8)
    out = clock.send(PageFailed(iid, "ana", 1, "pager", "HTTP 503"))
    assert pages(out) == [("ana", 2), ("rui", 2)]
    kinds = [e.kind for e in incident(out).view.timeline]
    assert "page_failed" in kinds
    assert pages(clock.advance(22)) == []  # the +30 s step already fired
    assert pages(clock.advance(38)) == [("ana", 2), ("rui", 2)]  # repeat from step 2's slot


def test_restore_fires_what_fell_due_once_and_the_rest_on_time() -> None:
    """After a crash the plan keeps its wall-clock schedule; missed steps fold into one page."""
    clock = CoreDriver()
    call(clock)
    stored = [incident_from_record(json.loads(json.dumps(incident_record(v))))
              for v in clock.core.open_incident_views()]
    booths = [booth_from_record(json.loads(json.dumps(booth_record(v))))
              for v in clock.core.booth_views()]

    counter = itertools.count(100)
    fresh = SiteCore(make_config(), lambda: f"x{next(counter)}")
    fresh.restore(booths=booths, incidents=stored, now=T0 + 1)
    assert fresh.next_deadline() == T0 + 30
    # down until +95: step 2 (+30) and the repeat at +90 both fell due
    out = fresh.on_timer(T0 + 95)
    assert pages(out) == [("ana", 2), ("rui", 2)]
    assert fresh.next_deadline() == T0 + 150
    assert pages(fresh.on_timer(T0 + 150)) == [("ana", 2), ("rui", 2)]


def test_restored_views_are_the_stored_ones_until_read_or_changed() -> None:
    """A restored booth's view is rebuilt when read (a renamed booth reads with its new
    name), and an event that changes nothing of a booth emits nothing."""
    clock = CoreDriver()
    clock.send(Occupancy("b1", True))
    clock.send(Motion("b1", MotionState.MOVING))
    booths = [booth_from_record(json.loads(json.dumps(booth_record(v))))
              for v in clock.core.booth_views()]
    renamed = make_config()
    renamed = dataclasses.replace(renamed, booths=(
        dataclasses.replace(renamed.booths[0], name="Booth One"), *renamed.booths[1:]))
    for config, name in ((make_config(), "Booth 1"), (renamed, "Booth One")):
        fresh = SiteCore(config, lambda: "z1", restoring=True)
        fresh.restore(booths=booths, now=T0 + 1)
        changed = [c.view for c in fresh.handle(Heartbeat("b1", 80), T0 + 2)
                   if isinstance(c, BoothChanged)]
        # the stored view was published before the restart: a change since is sent again
        assert [v.name for v in changed] == ([] if name == "Booth 1" else [name])
        assert [v.name for v in fresh.booth_views()] == [name, "Booth 2"]
        assert fresh.booth_views(["b2"])[0].occupied is False


def test_an_incident_is_stored_as_dataclasses_asdict_would_make_it() -> None:
    """The store's faster copy of an incident view leaves nothing out."""
    clock = CoreDriver()
    iid = call(clock)
    clock.advance(8)
    clock.send(PageFailed(iid, "ana", 1, "pager", "HTTP 503"))
    (view,) = clock.core.open_incident_views()
    assert len(view.timeline) > 2
    assert incident_record(view) == dataclasses.asdict(view)
    assert json.dumps(incident_record(view)) == json.dumps(dataclasses.asdict(view))


def test_restore_resumes_stillness_against_original_deadline() -> None:
    """A stillness timer due while the service was down fires as soon as it is back."""
    clock = CoreDriver(make_config(stillness=60))
    clock.send(Occupancy("b1", True))
    clock.send(Motion("b1", MotionState.STILL))
    clock.advance(20)
    booths = [booth_from_record(json.loads(json.dumps(booth_record(v))))
              for v in clock.core.booth_views()]
    fresh = SiteCore(make_config(stillness=60), lambda: "z1")
    fresh.restore(booths=booths, now=T0 + 21)
    assert fresh.next_deadline() == T0 + 60
    out = fresh.on_timer(T0 + 75)
    assert pages(out) == [("ana", 1)]
    assert incident(out).view.raised_at == T0 + 75


def test_unknown_booth_and_incident_are_refused() -> None:
    """Events naming nothing we know raise, and change nothing."""
    clock = CoreDriver()
    with pytest.raises(UnknownBooth):
        clock.send(Button("b9", Press.CALL))
    with pytest.raises(UnknownIncident):
        clock.send(Acknowledge("nope", "ana"))
    assert clock.core.open_incident_views() == []


def test_heartbeat_changes_nothing_visible() -> None:
    """A heartbeat keeps the booth's view as it was: nothing to publish."""
    clock = CoreDriver()
    assert clock.send(Heartbeat("b1", 80)) == []


def test_repeated_occupancy_is_not_a_new_session() -> None:
    """A second 'occupied' reading keeps the session start and its timers."""
    clock = CoreDriver(make_config(long_session=100))
    clock.send(Occupancy("b1", True))
    clock.advance(50)
    assert clock.send(Occupancy("b1", True)) == []
    assert pages(clock.advance(50)) == [("ana", 1)]


# --- the state machine table -------------------------------------------------------------


def _incident_in(state: State) -> Incident:
    config = make_config()
    inc = Incident("i1", "b1", Trigger.CALL, T0, dict(config.escalation))
    inc.on_timer(T0)
    if state in (State.ACKNOWLEDGED, State.ATTENDED, State.RESOLVED):
        inc.acknowledge("ana", T0 + 1, "api")
    if state in (State.ATTENDED, State.RESOLVED):
        inc.attend("ana", T0 + 2, "api")
    if state is State.RESOLVED:
        inc.resolve("ana", T0 + 3, "ok", "api")
    assert inc.state is state
    return inc


_DO = {
    Action.ACK: lambda inc: inc.acknowledge("rui", T0 + 10, "api"),
    Action.PRESENCE: lambda inc: inc.attend("rui", T0 + 10, "api"),
    Action.RESOLVE: lambda inc: inc.resolve("rui", T0 + 10, "ok", "api"),
    Action.ACK_TIMEOUT: lambda inc: inc.on_timer(T0 + 10_000),
    Action.REOPEN: lambda inc: inc.add_trigger(Trigger.LONG_SESSION, T0 + 10),
    # a lower-priority trigger: it folds in without re-planning
    Action.TRIGGER: lambda inc: inc.add_trigger(Trigger.LONG_SESSION, T0 + 10),
}


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("action", [Action.ACK, Action.PRESENCE, Action.RESOLVE,
                                    Action.TRIGGER])
def test_every_person_action_in_every_state(state: State, action: Action) -> None:
    """Each (state, action) either moves as the table says or raises and changes nothing."""
    inc = _incident_in(state)
    before = inc.view()
    if action in TRANSITIONS[state]:
        _DO[action](inc)
        assert inc.state is TRANSITIONS[state][action]
    else:
        with pytest.raises(IllegalTransition):
            _DO[action](inc)
        assert inc.view() == before


def test_ack_timeout_only_acts_on_acknowledged() -> None:
    """The ack timer moves only an acknowledged incident; other states ignore the time."""
    for state in State:
        inc = _incident_in(state)
        _DO[Action.ACK_TIMEOUT](inc)
        expected = State.OPEN if state is State.ACKNOWLEDGED else state
        assert inc.state is expected


def test_trigger_on_resolved_incident_is_illegal() -> None:
    """A resolved incident takes no more triggers."""
    inc = _incident_in(State.RESOLVED)
    before = inc.view()
    with pytest.raises(IllegalTransition):
        _DO[Action.REOPEN](inc)
    assert inc.view() == before


@pytest.mark.parametrize("door", [False, True], ids=["sensor", "door"])
@pytest.mark.parametrize("state", list(Session))
@pytest.mark.parametrize("sensed", list(Sensed))
def test_every_session_input_in_every_state(door: bool, state: Session,
                                            sensed: Sensed) -> None:
    """Each (session, input) moves as its booth's table says, or raises and changes nothing."""
    config = make_config().booths[0]
    booth = Booth(replace(config, occupancy_from="door") if door else config)
    booth.session, booth.occupied = state, state is Session.OCCUPIED
    booth.door_closed_at = T0 if state is Session.AWAITING else None
    booth.session_started_at = T0 if state is Session.OCCUPIED else None
    before = booth.view(None)
    table = DOOR_SESSION if door else SENSOR_SESSION
    if (state, sensed) in table:
        booth._sense(sensed, T0 + 1)
        assert booth.session is table[(state, sensed)]
        assert booth.occupied == (booth.session_started_at is not None)
    else:
        with pytest.raises(IllegalBoothTransition):
            booth._sense(sensed, T0 + 1)
        assert booth.view(None) == before


def test_door_booth_presence_after_the_window_starts_no_session() -> None:
    """The door closed and nobody was seen within door_window: the booth is vacant again."""
    booth = Booth(replace(make_config().booths[0], occupancy_from="door", door_window=30))
    assert booth.door(True, T0) is False and booth.session is Session.AWAITING
    assert booth.presence_seen(T0 + 31) is False
    # presence_seen changed the session: mypy keeps it narrowed to AWAITING from above
    assert booth.session is Session.VACANT  # type: ignore[comparison-overlap]
    assert not booth.occupied
    assert booth.door(True, T0 + 40) is False  # closed again: the window starts afresh
    assert booth.presence_seen(T0 + 50) is True and booth.occupied


def test_a_door_booth_restored_as_a_sensor_booth_takes_occupancy() -> None:
    """A door booth left awaiting presence, reconfigured to an occupancy sensor and
    restarted, starts sessions from occupancy (it is vacant, not stuck awaiting)."""
    door = Booth(replace(make_config().booths[0], occupancy_from="door"))
    door.door(True, T0)
    assert door.view(None).awaiting_presence
    sensor = Booth(make_config().booths[0])
    sensor.load(door.view(None))
    assert sensor.session is Session.VACANT
    assert sensor.occupancy_reading(True, T0 + 10) is True and sensor.occupied
    assert sensor.next_deadline() == T0 + 10 + sensor.config.long_session


def test_low_policy_without_repeat_pages_once() -> None:
    """A policy with no repeat stops after its last step."""
    clock = CoreDriver(make_config(high=Policy(steps=(Step(0, ("rui",)),))))
    call(clock)
    assert clock.core.next_deadline() is None
    assert pages(clock.advance(3600)) == []


# --- the split: the core does no I/O -----------------------------------------------------

ROOT = Path(__file__).parent.parent
#: folders whose every module decides or decodes and touches nothing: the core, and the
#: payload decoders of each firmware. A new module there is checked the day it is written.
PURE_FOLDERS = ("monitor/core", "devices/adapters")
PURE_MODULES = sorted(str(p.relative_to(ROOT)) for folder in PURE_FOLDERS
                      for p in (ROOT / folder).glob("*.py"))
#: standard modules that do no I/O and read no clock. zoneinfo reads the time zone
#: database like the standard library reads its own modules: once, then cached.
ALLOWED_STDLIB = frozenset({
    "__future__", "collections", "dataclasses", "datetime", "enum", "functools", "heapq",
    "itertools", "json", "math", "re", "typing", "zoneinfo", "difflib", "hashlib", "string",
})
#: named so a failure says what went wrong; anything outside ALLOWED_STDLIB fails anyway
FORBIDDEN = {
    "asyncio", "aiosqlite", "sqlite3", "paho", "aiohttp", "prometheus_client", "structlog",
    "socket", "time", "threading", "subprocess", "os", "ssl", "io", "pathlib", "tomllib",
    "apprise", "urllib", "babel", "gettext",
}
#: builtins that reach outside the process
FORBIDDEN_CALLS = {"open", "print", "input", "exec", "eval", "__import__"}


def _pure_problems(source: str, own: tuple[str, ...]) -> list[str]:
    problems = []
    for node in ast.walk(ast.parse(source)):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""] if node.level == 0 else []
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in FORBIDDEN_CALLS):
            problems.append(f"line {node.lineno}: calls {node.func.id}()")
        line = node.lineno if isinstance(node, ast.stmt) else 0  # modules come from imports
        for module in modules:
            top = module.split(".")[0]
            if top in FORBIDDEN:
                problems.append(f"line {line}: imports {module} (does I/O)")
            elif top not in ALLOWED_STDLIB and not module.startswith(own):
                problems.append(f"line {line}: imports {module}")
    return problems


def test_pure_folders_are_found() -> None:
    """The glob sees the core's modules, so an empty parametrisation cannot pass silently."""
    assert {"monitor/core/site.py", "monitor/core/booth.py", "monitor/core/incident.py",
            "devices/adapters/canonical.py"} <= set(PURE_MODULES)


@pytest.mark.parametrize("module", PURE_MODULES)
def test_core_modules_import_no_io(module: str) -> None:
    """A core module that imports an I/O library, reads the clock or opens a file breaks
    the design; it imports only its own folder's modules and standard ones that do no I/O."""
    folder = module.rsplit("/", 1)[0].replace("/", ".")
    own = (folder, "monitor.core") if folder != "monitor.core" else (folder,)
    assert _pure_problems((ROOT / module).read_text(), own) == []


@pytest.mark.parametrize(("source", "problem"), [
    ("import os\n", "imports os (does I/O)"),
    ("import ssl\n", "imports ssl (does I/O)"),
    ("from time import monotonic\n", "imports time (does I/O)"),
    ("import random\n", "imports random"),
    ("from monitor.store import Store\n", "imports monitor.store"),
    ("def f():\n    return open('x').read()\n", "calls open()"),
])
def test_purity_check_catches_io(source: str, problem: str) -> None:
    """The check itself fails on what it must catch."""
    assert [p.split(": ", 1)[1] for p in _pure_problems(source, ("monitor.core",))] == [problem]


def test_page_message_reads_well_on_a_lock_screen() -> None:
    """Durations in a page are whole and short: '3m', '20m', never '6.66667 s'."""
    clock = CoreDriver(make_config(stillness=180, long_session=1200))
    clock.send(Occupancy("b1", True))
    clock.send(Motion("b1", MotionState.STILL))
    out = clock.advance(180)
    assert [english(c.message) for c in out if isinstance(c, SendPage)] == [
        "Booth 1: no movement for 3m"]
    out = clock.advance(1020)
    assert incident(out).view.triggers == ("unresponsive", "long_session")
    odd = CoreDriver(make_config(stillness=6.66667))
    odd.send(Occupancy("b1", True))
    odd.send(Motion("b1", MotionState.STILL))
    assert [english(c.message) for c in odd.advance(7) if isinstance(c, SendPage)] == [
        "Booth 1: no movement for 7s"]
