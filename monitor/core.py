"""The site core: every booth and open incident of one site. Pure, no I/O.

Theory of operation
-------------------
Adapters feed it events with the current wall-clock time and carry out the
commands it returns; it never reads a clock and never waits::

    commands = core.handle(event, now)      # an MQTT event, an ack, a failed page
    deadline = core.next_deadline()         # when to call on_timer next, or None
    commands = core.on_timer(now)           # stillness, long sessions, escalation, ack timeouts

Booth timers fire incident triggers; a trigger opens the booth's incident or
folds into the open one. Escalation steps become one `SendPage` per responder.
Any change to a booth or incident is returned as `BoothChanged` /
`IncidentChanged`, which the runtime publishes and stores; `restore` rebuilds the
core from what was stored, and the next `on_timer` fires whatever fell due
while the service was down.

Deadlines sit in a heap with lazy deletion, so a site with thousands of booths
costs O(log n) per event. Unknown incidents raise `UnknownIncident`; actions an
incident's state does not allow raise `IllegalTransition` and change nothing.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from typing import Any, assert_never

from alerts.escalation import Fired, resolve_targets
from devices.registry import SENSOR_ROLES, DeviceRegistry, DeviceView, HealthChange
from monitor.booth import Booth, BoothView, IncidentRef, Timer
from monitor.config import BoothConfig, Config, Policy, Priority, format_duration
from monitor.events import (
    Acknowledge,
    Attend,
    BoothChanged,
    BoothEvent,
    Button,
    Command,
    DeviceChanged,
    DeviceReading,
    Door,
    Event,
    Heartbeat,
    IncidentChanged,
    Motion,
    MotionState,
    Occupancy,
    PageFailed,
    Press,
    Resolve,
    SendPage,
)
from monitor.incident import Incident, IncidentView, Trigger

_Key = tuple[str, str]  # ("booth" | "incident" | "device", id)

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


class SiteCore:
    def __init__(self, config: Config, new_id: Callable[[], str]) -> None:
        self.config = config
        self._new_id = new_id
        self._policies: dict[Priority, Policy] = dict(config.escalation)
        self.booths: dict[str, Booth] = {b.id: Booth(b) for b in config.booths}
        self.incidents: dict[str, Incident] = {}  # unresolved only
        self._open_at: dict[str, str] = {}  # booth id -> its unresolved incident id
        self._views: dict[str, BoothView] = {}
        self._heap: list[tuple[float, _Key]] = []
        self._due: dict[_Key, float] = {}
        self.registry = DeviceRegistry(
            config.devices, {b.id: b for b in config.booths}, now=0.0
        )
        for booth in self.booths.values():
            self._views[booth.config.id] = booth.view(None)

    def start(self, now: float) -> None:
        """Begin timing device silence (devices never heard are timed from now)."""
        for dev in self.registry.devices.values():
            if dev.last_seen is None:
                dev.silent_since = now
            self._schedule(("device", dev.config.id), self.registry.next_deadline(dev.config.id))

    # --- public API -----------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Command]:
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
            case Resolve(incident=iid, responder=who, outcome=outcome, via=via):
                inc = self._incident(iid)
                self._apply(inc, now, out, lambda: inc.resolve(who, now, outcome, via))
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

    def on_timer(self, now: float) -> list[Command]:
        out: list[Command] = []
        while (at := self.next_deadline()) is not None and at <= now:
            _, key = heapq.heappop(self._heap)
            del self._due[key]
            kind, ident = key
            if kind == "booth":
                self._booth_timer(self.booths[ident], now, out)
            elif kind == "device":
                events, health = self.registry.on_timer(ident, now)
                self._device_results(ident, events, health, now, out)
            else:
                inc = self.incidents[ident]
                self._apply(inc, now, out, lambda: None)
        return out

    def restore(
        self,
        booths: Iterable[dict[str, Any]],
        incidents: Iterable[dict[str, Any]],
        devices: Iterable[dict[str, Any]] = (),
        now: float = 0.0,
    ) -> None:
        """Rebuild from stored views; what the config no longer has is skipped."""
        for snap in devices:
            dev = self.registry.devices.get(snap["id"])
            if dev is not None:
                dev.restore(snap, now)
        for snap in booths:
            booth = self.booths.get(snap["id"])
            if booth is not None:
                booth.restore(snap)
                self._schedule(("booth", booth.config.id), booth.next_deadline())
        for snap in incidents:
            if snap["booth"] not in self.booths or snap["state"] == "resolved":
                continue
            inc = Incident.restore(snap, self._policies)
            self.incidents[inc.id] = inc
            self._open_at[inc.booth] = inc.id
            self._schedule(("incident", inc.id), inc.next_deadline())
        for booth_id in self.booths:
            self._views[booth_id] = self._booth_view(booth_id)

    def booth_views(self) -> list[BoothView]:
        return [self._views[b] for b in self.booths]

    def incident_view(self, incident_id: str) -> IncidentView:
        return self._incident(incident_id).view()

    def open_incident_views(self) -> list[IncidentView]:
        return [inc.view() for inc in self.incidents.values()]

    # --- booths ---------------------------------------------------------------------

    def _booth_event(self, event: BoothEvent, now: float, out: list[Command]) -> None:
        booth = self.booths.get(event.booth)
        if booth is None:
            raise UnknownBooth(event.booth)
        inc = self._open_incident(event.booth)
        match event:
            case Occupancy(occupied=occupied):
                if booth.occupancy_reading(occupied, now):
                    self._session_changed(booth, now, out)
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
        for timer in booth.on_timer(now):
            self._trigger(booth, _TIMER_TRIGGER[timer], now, out)
        self._schedule(("booth", booth.config.id), booth.next_deadline())
        self._emit_booth(booth.config.id, out)

    def _booth_view(self, booth_id: str) -> BoothView:
        inc = self._open_incident(booth_id)
        devices = self.registry.booth_devices(booth_id)
        ref = None if inc is None else IncidentRef(inc.id, inc.priority, inc.state.value, inc.level)
        return self.booths[booth_id].view(
            ref,
            devices_ok=all(d.online and not d.battery_low for d in devices),
            unmonitored=self._unmonitored(booth_id),
        )

    def _emit_booth(self, booth_id: str, out: list[Command]) -> None:
        view = self._booth_view(booth_id)
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
    ) -> None:
        inc = self._open_incident(booth.config.id)
        if inc is None:
            inc = Incident(self._new_id(), booth.config.id, trigger, now, self._policies,
                           priority)
            self.incidents[inc.id] = inc
            self._open_at[booth.config.id] = inc.id
            if detail:
                inc.note(now, "note", **detail)
            self._apply(inc, now, out, lambda: None, new_from=0)
        else:
            def add() -> None:
                inc.add_trigger(trigger, now, priority)
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
        action()  # raises IllegalTransition before anything changed
        fired = inc.on_timer(now)
        if fired is not None:
            out.extend(self._pages(inc, fired, now))
        new = tuple(inc.timeline[start:])
        if new:
            out.append(IncidentChanged(inc.view(), new))
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

    def _pages(self, inc: Incident, fired: Fired, now: float) -> list[SendPage]:
        booth = self.booths[inc.booth].config
        pages = []
        for responder in resolve_targets(fired.targets, self.config.responders):
            inc.note(now, "page", responder=responder, level=fired.level)
            pages.append(
                SendPage(
                    incident=inc.id,
                    booth=booth.id,
                    booth_name=booth.name,
                    responder=responder,
                    level=fired.level,
                    priority=inc.priority,
                    triggers=tuple(t.value for t in inc.triggers),
                    message=page_message(booth, inc.triggers),
                    raised_at=inc.raised_at,
                )
            )
        return pages

    # --- timers ---------------------------------------------------------------------

    def _schedule(self, key: _Key, at: float | None) -> None:
        if at is None:
            self._due.pop(key, None)
        elif self._due.get(key) != at:
            self._due[key] = at
            heapq.heappush(self._heap, (at, key))


def page_message(booth: BoothConfig, triggers: Iterable[Trigger]) -> str:
    """The one line a nurse reads on a lock screen, in the order the triggers came."""
    parts = []
    for trigger in triggers:
        match trigger:
            case Trigger.CALL:
                parts.append("call button pressed")
            case Trigger.UNRESPONSIVE:
                parts.append(f"no movement for {format_duration(round(booth.stillness))}")
            case Trigger.LONG_SESSION:
                parts.append(f"session over {format_duration(round(booth.long_session))}")
            case Trigger.DEVICE_OFFLINE:
                parts.append("a device is offline")
            case Trigger.LOW_BATTERY:
                parts.append("a device's battery is low")
            case _:
                assert_never(trigger)
    return f"{booth.name}: " + "; ".join(parts)
