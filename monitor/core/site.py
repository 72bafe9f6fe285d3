"""The site core: every booth and open incident of one site. Pure, no I/O.

Theory of operation
-------------------
Adapters feed it events with the current wall-clock time and carry out the
commands it returns; it never reads a clock and never waits::

    commands = core.handle(event, now)      # an MQTT event, an ack, a failed page
    deadline = core.next_deadline()         # when to call on_timer next, or None
    commands = core.on_timer(now)           # stillness, long sessions, escalation, ack timeouts

Booth timers fire incident triggers; a trigger opens the booth's incident or
folds into the open one. A new incident's id is made of what raised it (an MQTT
message's event id or payload, passed to `handle` as ``cause``, or a timer's
deadline) and the booth's previous incident (`monitor/core/ids.py`), so the same
incident raised again after a crash, or by another process restored from the
store, has the same id. Escalation steps become one `SendPage` per responder.
Any change to a booth or incident is returned as `BoothChanged` /
`IncidentChanged`, which the runtime publishes and stores; `restore` rebuilds the
core from what was stored, and the next `on_timer` fires whatever fell due
while the service was down.

Who gets a page: a step's ``role:X`` pages the on-duty responders with role X
(`roster`). A step with nobody on duty for any of its targets is skipped
at once to the next step, and every role found empty is recorded (timeline
``duty_gap``, counted by the runtime); if even the last step has nobody on
duty, its targets are paged regardless of duty: someone must always hear.
When an incident is acknowledged, attended or resolved, everyone paged for it
so far (but the person who acted) gets a `SendNotice`.

Busy responders: one who acknowledged another booth's incident or is at it is
busy. A step's ``role:X`` pages its free responders first and the busy ones
last, or with the policy's ``skip_busy`` skips the busy ones (timeline
``busy_skipped``) while one is free. When every on-duty responder of the role
is busy they are paged all the same, and the on-duty coordinators not paged
already get one "all staff engaged" notice per incident (``all_engaged``).

Session risk: staff mark the session under way high risk (`MarkSession`, or
the occupancy event's ``risk``); the booth times it on its ``high_risk``
thresholds, and its incidents say ``risk``. A timer the mark made overdue fires
at once.

Opening hours (``[site] hours``): outside them every booth's view says
``closed``; ``long_session``, ``device_offline`` and ``low_battery`` are raised
at low priority under the technician's plan (the low policy's timing, paging
``role:technician`` only: incident ``after_hours``), while calls and stillness
page as always. A timer at each opening and closing republishes the booths.

Maintenance: a booth in maintenance has its automatic triggers
(``long_session``, ``unresponsive``, ``device_offline``) suppressed and
audited; a call still pages, marked as from a booth in maintenance.
Maintenance ends by an API call or by itself at ``until``, both audited.

A device self-test (`boothtest`) records what the booth's devices send and the
triggers that fire instead of raising them; only the person testing hears of them.

Deadlines sit in a heap with lazy deletion, so a site with thousands of booths
costs O(log n) per event. Unknown incidents raise `UnknownIncident`; actions an
incident's state does not allow raise `IllegalTransition` and change nothing.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from typing import Any, assert_never

from monitor.core.booth import Booth, BoothView, IncidentRef, Timer
from monitor.core.boothtest import MAX_TEST, BoothTest, heard
from monitor.core.devices import SENSOR_ROLES, DeviceRegistry, DeviceView, HealthChange
from monitor.core.escalation import Fired, Targets, resolve_targets
from monitor.core.events import (
    Acknowledge,
    AddOutcome,
    Attend,
    Audit,
    BoothChanged,
    BoothEvent,
    Button,
    Command,
    DeviceChanged,
    DeviceReading,
    Door,
    DutyChanged,
    EndBoothTest,
    EndMaintenance,
    Event,
    Heartbeat,
    IncidentChanged,
    MarkSession,
    Motion,
    MotionState,
    Occupancy,
    PageFailed,
    PageReport,
    Press,
    ProtocolStep,
    RecordStep,
    Resolve,
    SendNotice,
    SendPage,
    SetDuty,
    StartBoothTest,
    StartMaintenance,
    StopPaging,
)
from monitor.core.ids import Cause, incident_id
from monitor.core.incident import (
    Action,
    Change,
    IllegalTransition,
    Incident,
    IncidentView,
    State,
    Transition,
    Trigger,
)
from monitor.core.roster import Roster, UnknownResponder, next_change, within
from monitor.core.settings import (
    COORDINATOR_ROLE,
    TECHNICIAN_ROLE,
    Config,
    Policy,
    Priority,
    Risk,
    Route,
    Step,
)
from monitor.core.words import (
    STAFF_AT_THE_BOOTH,
    Words,
    all_engaged_message,
    booth_test_message,
    english,
    notice_message,
    page_message,
)

# ("booth" | "incident" | "device" | "maintenance" | "hours" | "boothtest", id)
_Key = tuple[str, str]
#: triggers a booth in maintenance does not raise (a call still pages)
AUTOMATIC = frozenset({Trigger.LONG_SESSION, Trigger.UNRESPONSIVE, Trigger.DEVICE_OFFLINE})
#: triggers that outside opening hours page only the technician role, at low priority
AFTER_HOURS = frozenset({Trigger.LONG_SESSION, Trigger.DEVICE_OFFLINE, Trigger.LOW_BATTERY})
_HOURS: _Key = ("hours", "site")
MAX_MAINTENANCE = 7 * 24 * 3600.0
#: once an incident reaches one of these, its pages still being retried are not needed
STOPS_PAGING = frozenset({State.ACKNOWLEDGED, State.ATTENDED, State.RESOLVED})

_TIMER_TRIGGER = {
    Timer.UNRESPONSIVE: Trigger.UNRESPONSIVE,
    Timer.LONG_SESSION: Trigger.LONG_SESSION,
}


class UnknownIncident(KeyError):
    """No open incident has this id (it never existed, or it is resolved)."""


class UnknownBooth(KeyError):
    """The event names a booth the configuration does not have."""


class UnknownDevice(KeyError):
    """The reading names a device the configuration does not have."""


class BadRequest(ValueError):
    """A person asked for something that cannot be (maintenance ending in the past...)."""


class BoothBusy(BadRequest):
    """Not now: the booth has an open incident, or a test running (or none to end)."""


class SiteCore:
    def __init__(self, config: Config, new_id: Callable[[], str], *,
                 restoring: bool = False) -> None:
        """``new_id`` makes the ids of device self-tests (never restored); an incident's
        id is made of what raised it (`monitor.core.ids`). ``restoring``: `restore` comes
        next, before anything else (a service's start), and builds every booth's view, so
        they are not built here as well (10,000 booths: ~50 ms of the start)."""
        self.config = config
        self._new_id = new_id
        # what is being handled now, should it raise an incident: an MQTT message's event
        # id (str) or payload (bytes), or the deadline a timer fired for (float)
        self._cause: str | bytes | float | None = None
        self._policies: dict[Priority, Policy] = dict(config.escalation)
        low = config.escalation["low"]
        self._after_hours: dict[Priority, Policy] = {**self._policies, "low": Policy(
            steps=(Step(0.0, (f"role:{TECHNICIAN_ROLE}",)),), repeat=low.repeat,
            ack_timeout=low.ack_timeout)}
        self.closed = False  # outside [site] hours, as of the last opening or closing
        # who is busy with which unresolved incident, kept as they change (see _busy)
        self._engaged: dict[str, tuple[str, ...]] = {}  # incident id -> responders
        self._busy_at: dict[str, list[tuple[str, str]]] | None = {}  # None: to rebuild
        self.booths: dict[str, Booth] = {b.id: Booth(b) for b in config.booths}
        self.roster = Roster(config.responders, config.site.timezone)
        self._names = {r.id: r.name for r in config.responders}
        self.incidents: dict[str, Incident] = {}  # unresolved only
        self._open_at: dict[str, str] = {}  # booth id -> its unresolved incident id
        self.tests: dict[str, BoothTest] = {}  # booth id -> its running or last device test
        self._views: dict[str, BoothView] = {}  # each booth's, as last published
        # booths whose view is still the one restored from the store: rebuilt when read
        # (`booth_views`) or when the booth changes, not by `restore` (see there)
        self._stale: set[str] = set()
        self._heap: list[tuple[float, _Key]] = []
        self._due: dict[_Key, float] = {}
        self.registry = DeviceRegistry(
            config.devices, {b.id: b for b in config.booths}, now=0.0
        )
        if not restoring:
            for booth in self.booths.values():
                self._views[booth.config.id] = booth.view(None)

    def start(self, now: float) -> None:
        """Begin timing device silence (devices never heard are timed from now) and the
        opening hours."""
        for dev in self.registry.devices.values():
            if dev.last_seen is None:
                dev.silent_since = now
            self._schedule(("device", dev.config.id), self.registry.next_deadline(dev.config.id))
        self._hours_changed(now, [])  # the views take it up; they are published on connect

    # --- public API -----------------------------------------------------------------

    def handle(self, event: Event, now: float, cause: str | bytes | None = None
               ) -> list[Command]:
        """``cause``: for an MQTT message, its event id (str) or, with none, its payload
        (bytes): what a redelivery repeats, so an incident it raises again after a crash
        gets the same id. None for what no redelivery repeats (the API)."""
        self._cause = cause
        out: list[Command] = []
        match event:
            case Occupancy() | Motion() | Button() | Heartbeat() | Door():
                self._booth_event(event, now, out)
            case DeviceReading(device=device, reading=reading, retained=retained):
                if device not in self.registry.devices:
                    raise UnknownDevice(device)
                events, health = self.registry.handle(device, reading, retained, now)
                self._device_results(device, events, health, now, out)
            case Acknowledge(incident=iid, responder=who, via=via):
                inc = self._incident(iid)
                self._apply(inc, now, out, lambda: inc.acknowledge(who, now, via))
            case Attend(incident=iid, responder=who, via=via):
                inc = self._incident(iid)
                self._apply(inc, now, out, lambda: inc.attend(who, now, via))
            case Resolve(incident=iid, responder=who, outcome=outcome, via=via, note=note):
                inc = self._incident(iid)
                self._apply(inc, now, out, lambda: inc.resolve(who, now, outcome, via, note))
            case RecordStep(incident=iid, responder=who, step=step, count=count, note=note,
                            via=via):
                inc = self._incident(iid)
                self._apply(inc, now, out,
                            lambda: inc.record_step(step, who, now, via, count, note))
                if step is ProtocolStep.ANSWERED:
                    booth = self.booths[inc.booth]
                    booth.person_answered(now)
                    self._schedule(("booth", inc.booth), booth.next_deadline())
                    self._emit_booth(inc.booth, out)
            case PageReport():
                inc = self._incident(event.incident)
                self._apply(inc, now, out, lambda: inc.page_report(
                    event.responder, event.level, event.channel, event.ok, event.reason, now))
            case SetDuty(responder=who, on=on, by=by, via=via):
                if who not in self._names:
                    raise UnknownResponder(who)
                override = self.roster.set_duty(who, on, now, by, via)
                out.append(DutyChanged(override.snapshot()))
                out.append(Audit(now, "duty", who, {"on": on, "by": by, "via": via,
                                                    "until": override.until}))
            case StartMaintenance(booth=booth_id, until=until, reason=reason, by=by):
                booth = self._booth(booth_id)
                if not now < until <= now + MAX_MAINTENANCE:
                    raise BadRequest("until must be in the future, at most 7 days ahead")
                booth.start_maintenance(now, until, reason, by)
                out.append(Audit(now, "maintenance_started", booth_id,
                                 {"until": until, "reason": reason, "by": by}))
                self._schedule(("maintenance", booth_id), until)
                self._emit_booth(booth_id, out)
            case EndMaintenance(booth=booth_id, by=by):
                self._end_maintenance(self._booth(booth_id), now, by, out)
            case StartBoothTest():
                self._start_test(event, now, out)
            case EndBoothTest(booth=booth_id):
                self._booth(booth_id)
                self._end_test(booth_id, now, "asked", out)
            case MarkSession(booth=booth_id, risk=risk, route=route, by=by, via=via):
                booth = self._booth(booth_id)
                self._mark(booth, risk, route, by, via, now, out)
                self._emit_booth(booth_id, out)
            case AddOutcome(resolved=view, responder=who, outcome=outcome, note=note):
                if view.id in self.incidents:  # not resolved: resolving records the outcome
                    raise IllegalTransition(view.id, self.incidents[view.id].state,
                                            Action.RESOLVE)
                inc = Incident.from_view(view, self._policies)
                before = len(inc.timeline)
                inc.add_outcome(who, outcome, note, now)  # raises OutcomeRecorded
                out.append(IncidentChanged(inc.view(), tuple(inc.timeline[before:]),
                                           tuple(inc.take_changes())))
            case PageFailed():
                inc = self._incident(event.incident)
                self._apply(
                    inc,
                    now,
                    out,
                    lambda: inc.page_failed(
                        event.responder, event.level, event.channel, event.reason, now
                    ),
                )
            case _:
                assert_never(event)
        return out

    def next_deadline(self) -> float | None:
        while self._heap:
            at, key = self._heap[0]
            if self._due.get(key) == at:
                return at
            heapq.heappop(self._heap)  # stale: the entity's deadline moved or went away
        return None

    def on_timer(self, now: float, limit: int | None = None) -> list[Command]:
        """Fire the deadlines due at ``now`` in their order; with `limit`, at most that
        many (the rest stay due, for the next call)."""
        out: list[Command] = []
        fired = 0
        while (at := self.next_deadline()) is not None and at <= now:
            if limit is not None and fired >= limit:
                break
            fired += 1
            _, key = heapq.heappop(self._heap)
            del self._due[key]
            kind, ident = key
            self._cause = at
            if kind == "booth":
                self._booth_timer(self.booths[ident], now, out)
            elif kind == "maintenance":
                self._end_maintenance(self.booths[ident], now, "expiry", out)
            elif kind == "boothtest":
                self._end_test(ident, now, "expiry", out)
            elif kind == "hours":
                self._hours_changed(now, out)
            elif kind == "device":
                events, health = self.registry.on_timer(ident, now)
                self._device_results(ident, events, health, now, out)
            else:
                inc = self.incidents[ident]
                self._apply(inc, now, out, lambda: None)
        return out

    def restore(
        self,
        *,
        now: float,
        booths: Iterable[BoothView] = (),
        incidents: Iterable[IncidentView] = (),
        devices: Iterable[dict[str, Any]] = (),
        duty: Iterable[dict[str, Any]] = (),
    ) -> None:
        """Rebuild from stored views at ``now``; what the config no longer has is skipped."""
        self.roster.restore(duty, now)
        for snap in devices:
            dev = self.registry.devices.get(snap["id"])
            if dev is not None:
                dev.restore(snap, now)
        stored = set()
        for view in booths:
            booth = self.booths.get(view.id)
            if booth is not None:
                booth.load(view)
                self._views[view.id] = view
                stored.add(view.id)
                self._schedule(("booth", booth.config.id), booth.next_deadline())
                if booth.maintenance is not None:
                    self._schedule(("maintenance", booth.config.id), booth.maintenance["until"])
        for iview in incidents:
            if iview.booth not in self.booths or iview.state == "resolved":
                continue
            inc = Incident.from_view(iview, self._plan(iview.after_hours))
            self.incidents[inc.id] = inc
            self._open_at[inc.booth] = inc.id
            booth = self.booths[inc.booth]
            if booth.last_incident is None:  # stored before booths kept it
                booth.last_incident = inc.id
            self._track_engaged(inc)
            self._schedule(("incident", inc.id), inc.next_deadline())
        # A stored booth keeps its stored view, as published before the restart, until it
        # is read or the booth changes (then compared with it): building 10,000 views
        # here took ~0.1 s of the start, and the service reads them all only once
        # connected (their republish, a slice a loop turn: bench/restart.py).
        self._stale = stored
        for booth_id in self.booths:
            if booth_id not in stored:
                self._views[booth_id] = self._booth_view(booth_id)

    def booth_views(self, ids: Iterable[str] | None = None) -> list[BoothView]:
        """The views of every booth, or of the booths `ids`, as they are now."""
        stale = self._stale
        if stale:
            for booth_id in self.booths if ids is None else ids:
                if booth_id in stale:
                    stale.discard(booth_id)
                    self._views[booth_id] = self._booth_view(booth_id)
        return [self._views[b] for b in (self.booths if ids is None else ids)]

    def incident_view(self, incident_id: str) -> IncidentView:
        return self._incident(incident_id).view()

    def open_incident_views(self) -> list[IncidentView]:
        return [inc.view() for inc in self.incidents.values()]

    def open_call(self, booth_id: str) -> str | None:
        """The booth's unresolved incident if a call raised it or folded into it, else None."""
        inc = self._open_incident(booth_id)
        return inc.id if inc is not None and Trigger.CALL in inc.trigger_priority else None

    # --- booths ---------------------------------------------------------------------

    def _booth(self, booth_id: str) -> Booth:
        booth = self.booths.get(booth_id)
        if booth is None:
            raise UnknownBooth(booth_id)
        return booth

    def _end_maintenance(self, booth: Booth, now: float, by: str, out: list[Command]) -> None:
        booth_id = booth.config.id
        ended = booth.end_maintenance(now)  # raises IllegalBoothTransition when not in it
        self._schedule(("maintenance", booth_id), None)
        kind = "maintenance_expired" if by == "expiry" else "maintenance_ended"
        out.append(Audit(now, kind, booth_id, {"by": by, "reason": ended["reason"],
                                               "since": ended["since"]}))
        self._schedule(("booth", booth_id), booth.next_deadline())
        self._emit_booth(booth_id, out)

    def _booth_event(self, event: BoothEvent, now: float, out: list[Command]) -> None:
        booth = self.booths.get(event.booth)
        if booth is None:
            raise UnknownBooth(event.booth)
        test = self.running_test(event.booth)
        if test is not None:
            test.hear(event.device, heard(event), now)
        inc = self._open_incident(event.booth)
        match event:
            case Occupancy(occupied=occupied, risk=risk, route=route, device=device):
                if booth.occupancy_reading(occupied, now):
                    self._session_changed(booth, now, out)
                if booth.occupied and (risk is not None or route is not None):
                    # a repeat may mark the session under way; a vacancy has none to mark
                    self._mark(booth, risk or booth.risk, route, device or "booth", "event",
                               now, out)
            case Door(closed=closed):
                if inc is not None:
                    state = "closed" if closed else "open"
                    self._apply(inc, now, out, lambda: inc.note(now, "door", state=state))
                if booth.door(closed, now):
                    self._session_changed(booth, now, out)
            case Motion(state=state):
                if booth.set_motion(state, now) and inc is not None:
                    self._apply(inc, now, out, lambda: inc.note(now, "motion", state=state.value))
                if state is not MotionState.ABSENT and booth.presence_seen(now):
                    self._session_changed(booth, now, out)
            case Button(press=Press.CALL):
                self._trigger(booth, Trigger.CALL, now, out)
            case Button(press=Press.PRESENCE):
                if inc is not None:
                    self._apply(inc, now, out, lambda: inc.attend("booth", now, "booth"))
            case Button(press=Press.CLEAR):
                if inc is not None:
                    self._apply(inc, now, out, lambda: inc.resolve("booth", now, None, "booth"))
            case Button():
                raise AssertionError("unreachable: Press is exhaustive")
            case Heartbeat():
                pass  # liveness is the device registry's business (issue 3)
            case _:
                assert_never(event)
        self._schedule(("booth", booth.config.id), booth.next_deadline())
        self._emit_booth(booth.config.id, out)

    def _mark(self, booth: Booth, risk: Risk, route: Route | None, by: str, via: str,
              now: float, out: list[Command]) -> None:
        """Mark the session under way; a timer the new thresholds made due fires now. A mark
        that changes nothing (a booth timer repeating itself) is not recorded again."""
        if not booth.mark(risk, route):  # raises IllegalBoothTransition with no session
            return
        out.append(Audit(now, "session_marked", booth.config.id,
                         {"risk": risk, "route": route, "by": by, "via": via}))
        inc = self._open_incident(booth.config.id)
        if inc is not None:
            self._apply(inc, now, out, lambda: inc.note(now, "risk", risk=risk, route=route,
                                                        by=by, via=via))
        due = booth.next_deadline()
        if due is not None and due <= now:
            self._booth_timer(booth, now, out)
        self._schedule(("booth", booth.config.id), booth.next_deadline())

    def _session_changed(self, booth: Booth, now: float, out: list[Command]) -> None:
        """A session started or ended: tell the incident; an unwatched occupied booth is urgent."""
        booth_id = booth.config.id
        inc = self._open_incident(booth_id)
        if booth.occupied:
            if inc is not None:
                self._apply(inc, now, out, lambda: inc.note(now, "note", text="occupied"))
            if self._unmonitored(booth_id):
                self._trigger(booth, Trigger.DEVICE_OFFLINE, now, out, priority="high")
        elif inc is not None:
            self._apply(inc, now, out, lambda: inc.vacated(now))

    # --- devices --------------------------------------------------------------------

    def _device_results(
        self, device: str, events: list[BoothEvent], health: list[HealthChange], now: float,
        out: list[Command],
    ) -> None:
        for event in events:
            self._booth_event(event, now, out)
        for change in health:
            self._health(change, now, out)
        dev = self.registry.devices[device]
        self._schedule(("device", device), self.registry.next_deadline(device))
        out.append(DeviceChanged(dev.view(), dev.snapshot()))
        self._emit_booth(dev.config.booth, out)

    def _unmonitored(self, booth_id: str) -> bool:
        return any(not d.online for d in self.registry.booth_devices(booth_id)
                   if d.config.role in SENSOR_ROLES)

    def _health(self, change: HealthChange, now: float, out: list[Command]) -> None:
        booth = self.booths[change.booth]
        inc = self._open_incident(change.booth)
        sensor = change.role in SENSOR_ROLES
        match change.kind:
            case "offline":
                # nobody is watching a person who may overdose: urgent only while occupied
                urgent = sensor and booth.occupied
                self._trigger(booth, Trigger.DEVICE_OFFLINE, now, out,
                              priority="high" if urgent else "low",
                              detail={"device": change.device, "reason": change.detail})
            case "online":
                if inc is not None and all(d.online for d in
                                           self.registry.booth_devices(change.booth)):
                    self._apply(inc, now, out,
                                lambda: inc.clear(Trigger.DEVICE_OFFLINE, now, change.device))
            case "low_battery":
                self._trigger(booth, Trigger.LOW_BATTERY, now, out,
                              detail={"device": change.device, "battery": change.detail})
            case "battery_ok":
                if inc is not None and not any(d.battery_low for d in
                                               self.registry.booth_devices(change.booth)):
                    self._apply(inc, now, out,
                                lambda: inc.clear(Trigger.LOW_BATTERY, now, change.device))

    def device_views(self) -> list[DeviceView]:
        return [d.view() for d in self.registry.devices.values()]

    def _booth_timer(self, booth: Booth, now: float, out: list[Command]) -> None:
        deadlines = booth.deadlines()
        for timer in booth.on_timer(now):
            self._trigger(booth, _TIMER_TRIGGER[timer], now, out,
                          cause=Cause.deadline(deadlines[timer]))
        self._schedule(("booth", booth.config.id), booth.next_deadline())
        self._emit_booth(booth.config.id, out)

    def _booth_view(self, booth_id: str) -> BoothView:
        """The booth's view now (built on every event of the booth: kept lean)."""
        iid = self._open_at.get(booth_id)
        if iid is None:
            ref = None
        else:
            inc = self.incidents[iid]
            ref = IncidentRef(inc.id, inc.priority, inc.state.value, inc.level)
        devices = self.registry.booth_devices(booth_id)
        if devices and not all(d.online and not d.battery_low for d in devices):
            devices_ok = False
            troubles = tuple(
                {"device": d.config.id, "role": d.config.role, "trouble": trouble}
                for d in devices
                for trouble, on in (("offline", not d.online), ("low_battery", d.battery_low))
                if on)
        else:  # every device well (or none): nothing in trouble, no sensor offline
            devices_ok, troubles = True, ()
        test = self.tests.get(booth_id)
        return self.booths[booth_id].view(
            ref,
            devices_ok=devices_ok,
            unmonitored=not devices_ok and self._unmonitored(booth_id),
            troubles=troubles,
            closed=self.closed,
            test=None if test is None or test.ended is not None else {
                "until": test.until, "tester": test.tester},
        )

    def _emit_booth(self, booth_id: str, out: list[Command]) -> None:
        view = self._booth_view(booth_id)
        self._stale.discard(booth_id)
        if view != self._views[booth_id]:
            self._views[booth_id] = view
            out.append(BoothChanged(view))

    # --- incidents ------------------------------------------------------------------

    def _open_incident(self, booth_id: str) -> Incident | None:
        iid = self._open_at.get(booth_id)
        return self.incidents[iid] if iid is not None else None

    def _incident(self, incident_id: str) -> Incident:
        inc = self.incidents.get(incident_id)
        if inc is None:
            raise UnknownIncident(incident_id)
        return inc

    def _trigger(
        self, booth: Booth, trigger: Trigger, now: float, out: list[Command],
        priority: Priority | None = None, detail: dict[str, Any] | None = None,
        cause: Cause | None = None,
    ) -> None:
        """Open the booth's incident or fold ``trigger`` into it. A new incident's id is
        made of ``cause``, or of what is being handled (`_cause`)."""
        test = self.running_test(booth.config.id)
        if test is not None:  # recorded, not raised: only the person testing hears of it
            test.fire(trigger.value, now)
            out.append(Audit(now, "booth_test_trigger", booth.config.id,
                             {"test": test.id, "trigger": trigger.value}))
            if test.tester is not None:
                out.append(SendNotice(incident=test.id, booth=booth.config.id,
                                      booth_name=booth.config.name, responder=test.tester,
                                      priority="low",
                                      message=booth_test_message(booth.config, trigger)))
            return
        inc = self._open_incident(booth.config.id)
        if booth.maintenance is not None:
            if trigger in AUTOMATIC:
                out.append(Audit(now, "trigger_suppressed", booth.config.id, {
                    "trigger": trigger.value, "reason": booth.maintenance["reason"],
                    **(detail or {})}))
                return
            detail = {**(detail or {}), "text": "booth in maintenance"}
        after_hours = trigger in AFTER_HOURS and self._closed_at(now)
        if after_hours:
            priority = "low"
            text = "outside opening hours: the technician is paged"
            detail = {**(detail or {}), "text": "; ".join(
                t for t in ((detail or {}).get("text"), text) if t)}
        if inc is None:
            booth_id = booth.config.id
            if cause is None:
                raw = self._cause
                cause = (Cause.deadline(raw) if isinstance(raw, int | float)
                         else Cause.message(raw))
            iid = incident_id(self.config.site.id, booth_id, booth.last_incident,
                              trigger.value, cause)
            booth.last_incident = iid
            inc = Incident(iid, booth_id, trigger, now,
                           self._plan(after_hours), priority, booth.risk, after_hours)
            self.incidents[inc.id] = inc
            self._open_at[booth.config.id] = inc.id
            if detail:
                inc.note(now, "note", **detail)
            self._apply(inc, now, out, lambda: None, new_from=0)
        else:
            def add() -> None:
                inc.add_trigger(trigger, now, priority, booth.risk)
                if detail:
                    inc.note(now, "note", **detail)

            self._apply(inc, now, out, add)

    def _apply(
        self,
        inc: Incident,
        now: float,
        out: list[Command],
        action: Callable[[], object],
        new_from: int | None = None,
    ) -> None:
        """Run ``action`` on ``inc``, fire what fell due, and emit the resulting commands."""
        start = len(inc.timeline) if new_from is None else new_from
        before = len(inc.timeline)
        action()  # raises IllegalTransition before anything changed
        self._fire(inc, now, out)
        changes = inc.take_changes()
        self._notices(inc, before, changes, out)
        if any(isinstance(c, Transition) and c.to in STOPS_PAGING for c in changes):
            out.append(StopPaging(inc.id))
        new = tuple(inc.timeline[start:])
        if new:
            out.append(IncidentChanged(inc.view(), new, tuple(changes)))
        self._track_engaged(inc)
        if inc.resolved_at is not None:
            del self.incidents[inc.id]
            del self._open_at[inc.booth]
            self._schedule(("incident", inc.id), None)
            booth = self.booths[inc.booth]
            booth.incident_resolved(now)
            self._schedule(("booth", inc.booth), booth.next_deadline())
        else:
            self._schedule(("incident", inc.id), inc.next_deadline())
        self._emit_booth(inc.booth, out)

    def _fire(self, inc: Incident, now: float, out: list[Command]) -> None:
        """Fire what is due, skipping steps with nobody on duty (see the module docstring)."""
        responders = self.config.responders
        fired = inc.on_timer(now)
        busy: dict[str, str] = {}
        if fired is not None:
            busy = self._busy(inc)
        while fired is not None:
            targets = resolve_targets(fired.targets, responders,
                                      lambda rid: self.roster.on_duty(rid, now), busy,
                                      inc.policy.skip_busy)
            if targets.gaps:
                inc.duty_gap(fired.level, targets.gaps, now)
            if targets.responders:
                for role, skipped in targets.skipped:
                    inc.busy_skipped(fired.level, role, skipped, busy, now)
                out.extend(self._pages(inc, fired, targets.responders, now, busy))
                if targets.engaged:
                    self._all_engaged(inc, fired.level, targets, busy, now, out)
                return
            if inc.skip_step(fired.level, targets.gaps, now):
                fired = inc.on_timer(now)
                continue
            inc.note(now, "note", text="nobody on duty: paging the last step regardless")
            everyone = resolve_targets(fired.targets, responders).responders
            out.extend(self._pages(inc, fired, everyone, now))
            return

    def _track_engaged(self, inc: Incident) -> None:
        """Keep the index of who is busy where, so a page costs nothing per open incident."""
        engaged = inc.engaged() if inc.resolved_at is None else ()
        if self._engaged.get(inc.id, ()) != engaged:
            if engaged:
                self._engaged[inc.id] = engaged
            else:
                del self._engaged[inc.id]
            self._busy_at = None

    def _busy(self, inc: Incident) -> dict[str, str]:
        """Responders busy at another booth (acknowledged its incident or there): the booth."""
        if self._busy_at is None:
            self._busy_at = {}
            for iid, responders in self._engaged.items():
                for responder in responders:
                    self._busy_at.setdefault(responder, []).append(
                        (iid, self.incidents[iid].booth))
        return {responder: next(booth for iid, booth in where if iid != inc.id)
                for responder, where in self._busy_at.items()
                if any(iid != inc.id for iid, _ in where)}

    def _all_engaged(self, inc: Incident, level: int, targets: Targets, busy: dict[str, str],
                     now: float, out: list[Command]) -> None:
        """Every on-duty responder of a role is busy: record it, and tell the coordinators
        on duty (all of them if none is) once per incident, unless this round pages them."""
        first = not any(e.kind == "all_engaged" for e in inc.timeline)
        inc.all_engaged(level, targets.engaged, now)
        if not first:
            return
        role = [f"role:{COORDINATOR_ROLE}"]
        responders = self.config.responders
        coordinators = (resolve_targets(role, responders,
                                        lambda rid: self.roster.on_duty(rid, now)).responders
                        or resolve_targets(role, responders).responders)
        booth = self.booths[inc.booth].config
        message = all_engaged_message(booth.name, (
            (self._names[r], self.booths[busy[r]].config.name)
            for r in targets.responders if r in busy))
        record = english(message)  # the coordinator hears it in the site's language
        for responder in coordinators:
            if responder in targets.responders:
                continue
            inc.note(now, "notice", responder=responder, text=record)
            out.append(SendNotice(incident=inc.id, booth=booth.id, booth_name=booth.name,
                                  responder=responder, priority=inc.priority, message=message))

    def _notices(self, inc: Incident, before: int, changes: list[Change],
                 out: list[Command]) -> None:
        """Tell everyone paged before the action that someone is on it, or that all is clear.

        The timeline is only walked for who was paged when the action changed the state,
        so a long incident's motion notes cost nothing here.
        """
        booth = self.booths[inc.booth].config
        paged: list[str] | None = None
        for change in changes:
            if not isinstance(change, Transition):
                continue
            by = change.by
            who: str | Words = (STAFF_AT_THE_BOOTH if by in (None, "booth")
                                else self._names.get(by, by))
            message = notice_message(change, who, booth.name)
            if message is None:
                continue
            if paged is None:
                paged = inc.paged(upto=before)
            record = english(message)  # the responder hears it in the site's language
            for responder in paged:
                if responder == by:
                    continue
                inc.note(change.at, "notice", responder=responder, text=record)
                out.append(SendNotice(incident=inc.id, booth=booth.id, booth_name=booth.name,
                                      responder=responder, priority=inc.priority,
                                      message=message))

    def _pages(
        self, inc: Incident, fired: Fired, responders: Iterable[str], now: float,
        busy: dict[str, str] | None = None,
    ) -> list[SendPage]:
        booth = self.booths[inc.booth]
        lapsed = None
        if inc.state is State.OPEN and inc.last_ack is not None:  # an ack timeout re-opened it
            who, at = inc.last_ack
            lapsed = (self._names.get(who, who), now - at)
        message = page_message(booth.config, inc.triggers, urgent=inc.urgent,
                               maintenance=booth.maintenance is not None, risk=inc.risk,
                               after_hours=inc.after_hours, reopened=lapsed)
        pages = []
        for responder in responders:
            if busy and responder in busy:  # paged last: say where they are
                inc.note(now, "page", responder=responder, level=fired.level,
                         busy_at=busy[responder])
            else:
                inc.note(now, "page", responder=responder, level=fired.level)
            pages.append(
                SendPage(
                    incident=inc.id,
                    booth=booth.config.id,
                    booth_name=booth.config.name,
                    responder=responder,
                    level=fired.level,
                    priority=inc.priority,
                    triggers=tuple(t.value for t in inc.triggers),
                    message=message,
                    raised_at=inc.raised_at,
                    urgent=inc.urgent,
                )
            )
        return pages

    # --- device self-tests (monitor/core/boothtest.py) ------------------------------

    def running_test(self, booth_id: str) -> BoothTest | None:
        test = self.tests.get(booth_id)
        return test if test is not None and test.ended is None else None

    def _start_test(self, event: StartBoothTest, now: float, out: list[Command]) -> None:
        booth_id = event.booth
        self._booth(booth_id)
        if event.tester is not None and event.tester not in self._names:
            raise UnknownResponder(event.tester)
        if self._open_incident(booth_id) is not None:
            raise BoothBusy("the booth has an open incident: resolve it before a test")
        if self.running_test(booth_id) is not None:
            raise BoothBusy("a test of this booth is running: end it first")
        if not now < event.until <= now + MAX_TEST:
            raise BadRequest(f"until must be in the future, at most {MAX_TEST / 60:g} minutes "
                             "ahead")
        test = self.tests[booth_id] = BoothTest(f"boothtest-{self._new_id()}", booth_id, now,
                                                event.until, event.tester)
        out.append(Audit(now, "booth_test_started", booth_id,
                         {"test": test.id, "until": event.until, "by": event.tester}))
        self._schedule(("boothtest", booth_id), event.until)
        self._emit_booth(booth_id, out)

    def _end_test(self, booth_id: str, now: float, by: str, out: list[Command]) -> None:
        test = self.running_test(booth_id)
        if test is None:
            raise BoothBusy("no test of this booth is running")
        test.ended = now
        self._schedule(("boothtest", booth_id), None)
        booth = self.booths[booth_id]
        booth.incident_resolved(now)  # whoever is still there is timed afresh
        self._schedule(("booth", booth_id), booth.next_deadline())
        out.append(Audit(now, "booth_test_ended", booth_id, {
            "test": test.id, "by": by, "heard": sorted(test.heard),
            "fired": [trigger for _, trigger in test.fired]}))
        self._emit_booth(booth_id, out)

    # --- opening hours --------------------------------------------------------------

    def _plan(self, after_hours: bool) -> dict[Priority, Policy]:
        """The policies of an incident: the technician's low plan outside opening hours."""
        return self._after_hours if after_hours else self._policies

    def _closed_at(self, now: float) -> bool:
        hours = self.config.site.hours
        return hours is not None and not within(hours, now, self.roster.tz)

    def _hours_changed(self, now: float, out: list[Command]) -> None:
        """Opening or closing time (or start): every booth says so; the next one is timed."""
        hours = self.config.site.hours
        if hours is None:
            return
        self.closed = self._closed_at(now)
        self._schedule(_HOURS, next_change(hours, now, self.roster.tz))
        for booth_id in self.booths:
            self._emit_booth(booth_id, out)

    # --- timers ---------------------------------------------------------------------

    def _schedule(self, key: _Key, at: float | None) -> None:
        if at is None:
            self._due.pop(key, None)
        elif self._due.get(key) != at:
            self._due[key] = at
            heapq.heappush(self._heap, (at, key))

