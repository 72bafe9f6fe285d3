"""Device registry: readings become booth events by role; device health. Pure, no I/O.

Theory of operation
-------------------
Each configured device has a role (call button, presence button, motion,
occupancy, door). A `Reading` from its firmware adapter becomes canonical
booth events:

* Buttons: a press maps to an action (per device, else the role's default).
  A binary sensor used as a button presses on its OFF -> ON edge.
* Motion and occupancy: only a change is an event (Zigbee2MQTT repeats its whole
  state cache in every message; mmWave sensors talk several times a second).
  After the first reading, a new value must hold for `DEBOUNCE` seconds before
  it is passed on, so a sensor flapping between two states neither floods the
  store nor flaps the booth.
* Doors: every real report passes (a second "closed" without an "open" between
  means an open was missed, and the booth needs to know). Only ESPHome reports
  purely on change; a retained snapshot, Zigbee2MQTT's state cache and Tasmota's
  periodic telemetry repeat state, and a repeat from them is not a report.

Health: a device is offline on its availability / LWT message, or when nothing
was heard from it for its booth's ``device_timeout`` (only chatty mains-powered
presence sensors; battery devices, ESPHome nodes, doors and buttons get at least
`BUTTON_SILENCE`, see `Device.silence_limit`); any message brings it back. A
battery under the device's ``battery_low`` is low, reported at most once a day.
The registry reports health changes; the site core turns them into triggers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from monitor.core.events import BoothEvent, Button, Door, MotionState, Occupancy, Press
from monitor.core.events import Motion as MotionEvent
from monitor.core.readings import Reading
from monitor.core.settings import BoothConfig, DeviceConfig, PressAction

DEBOUNCE = 2.0
BUTTON_SILENCE = 2 * 3600.0
LOW_BATTERY_EVERY = 24 * 3600.0
SENSOR_ROLES = frozenset({"motion", "occupancy", "door"})
#: sources whose non-retained door reports are each a real change (so "closed" twice
#: means an open was missed); the others repeat their state periodically
REPORTS_CHANGES_ONLY = frozenset({"esphome"})

ROLE_ACTIONS: dict[str, dict[str, PressAction]] = {
    "call_button": {
        "single": "call", "double": "call", "triple": "call", "quadruple": "call",
        "hold": "call", "release": "ignore",
    },
    "presence_button": {
        "single": "presence", "double": "clear", "triple": "clear", "quadruple": "clear",
        "hold": "clear", "release": "ignore",
    },
}
_PRESS = {"call": Press.CALL, "presence": Press.PRESENCE, "clear": Press.CLEAR}


@dataclass(frozen=True, slots=True)
class HealthChange:
    """A device went offline or came back, or its battery is low (again, after a day)."""

    device: str
    booth: str
    role: str
    kind: str  # "offline" | "online" | "low_battery" | "battery_ok"
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DeviceView:
    id: str
    booth: str
    role: str
    source: str
    online: bool
    last_seen: float | None
    battery: int | None
    battery_low: bool


class Device:
    def __init__(self, config: DeviceConfig, booth: BoothConfig, now: float) -> None:
        self.config = config
        self.booth = booth
        self.online = True  # until proven otherwise; silence is timed from start
        self.last_seen: float | None = None
        self.silent_since = now
        self.battery: int | None = None
        self.low_notified_at: float | None = None
        self.emitted: dict[str, Any] = {}  # field -> value last passed on
        self.pending: tuple[str, Any, float] | None = None  # (field, value, since)
        self.binary: bool | None = None

    @property
    def silence_limit(self) -> float:
        """How long a healthy device may stay silent.

        Mains-powered presence sensors (mmWave) talk all the time: the booth's
        device_timeout. Battery devices (anything that reported a battery) check in
        only about hourly, ESPHome nodes publish only on change and have a Last Will
        for going offline, and doors and buttons speak only when used: at least
        BUTTON_SILENCE, so a quiet booth does not page anyone about its devices.
        """
        c = self.config
        chatty = c.role in ("motion", "occupancy") and c.source != "esphome"
        if chatty and self.battery is None:
            return self.booth.device_timeout
        return max(self.booth.device_timeout, BUTTON_SILENCE)

    @property
    def battery_low(self) -> bool:
        return self.battery is not None and self.battery < self.config.battery_low

    def deadlines(self) -> list[float]:
        out = []
        if self.online:
            out.append(self.silent_since + self.silence_limit)
        if self.pending is not None:
            out.append(self.pending[2] + DEBOUNCE)
        if self.battery_low and self.low_notified_at is not None:
            out.append(self.low_notified_at + LOW_BATTERY_EVERY)
        return out

    def view(self) -> DeviceView:
        c = self.config
        return DeviceView(id=c.id, booth=c.booth, role=c.role, source=c.source,
                          online=self.online, last_seen=self.last_seen, battery=self.battery,
                          battery_low=self.battery_low)

    def snapshot(self) -> dict[str, Any]:
        return {"id": self.config.id, "online": self.online, "last_seen": self.last_seen,
                "battery": self.battery, "low_notified_at": self.low_notified_at,
                "emitted": {k: (v.value if isinstance(v, MotionState) else v)
                            for k, v in self.emitted.items()}}

    def restore(self, snap: dict[str, Any], now: float) -> None:
        self.online = bool(snap["online"])
        self.last_seen = snap["last_seen"]
        self.silent_since = snap["last_seen"] if snap["last_seen"] is not None else now
        self.battery = snap["battery"]
        self.low_notified_at = snap["low_notified_at"]
        self.emitted = {k: (MotionState(v) if k == "motion" and v is not None else v)
                        for k, v in snap["emitted"].items()}


class DeviceRegistry:
    def __init__(self, devices: tuple[DeviceConfig, ...], booths: dict[str, BoothConfig],
                 now: float) -> None:
        self.devices = {d.id: Device(d, booths[d.booth], now) for d in devices}
        self._by_booth: dict[str, list[Device]] = {}
        for dev in self.devices.values():
            self._by_booth.setdefault(dev.config.booth, []).append(dev)

    def booth_devices(self, booth: str) -> list[Device]:
        return self._by_booth.get(booth, [])

    def handle(
        self, device_id: str, reading: Reading, retained: bool, now: float
    ) -> tuple[list[BoothEvent], list[HealthChange]]:
        dev = self.devices[device_id]
        events: list[BoothEvent] = []
        health: list[HealthChange] = []
        c = dev.config
        if reading.online is False:
            if dev.online:
                dev.online = False
                health.append(HealthChange(c.id, c.booth, c.role, "offline", "reported offline"))
            return events, health
        dev.last_seen = now
        dev.silent_since = now
        if not dev.online:
            dev.online = True
            health.append(HealthChange(c.id, c.booth, c.role, "online"))
        if reading.battery is not None:
            health.extend(self._battery(dev, reading.battery, now))
        self._press(dev, reading, retained, events)
        self._state(dev, reading, retained, now, events)
        return events, health

    def _battery(self, dev: Device, level: int, now: float) -> list[HealthChange]:
        was_low = dev.battery_low
        dev.battery = level
        c = dev.config
        if dev.battery_low and not was_low:
            dev.low_notified_at = now
            return [HealthChange(c.id, c.booth, c.role, "low_battery", f"{level}%")]
        if was_low and not dev.battery_low:
            dev.low_notified_at = None
            return [HealthChange(c.id, c.booth, c.role, "battery_ok", f"{level}%")]
        return []

    def _press(self, dev: Device, reading: Reading, retained: bool,
               events: list[BoothEvent]) -> None:
        c = dev.config
        if c.role not in ROLE_ACTIONS:
            return
        press = reading.press
        if press is None and reading.binary is not None:
            was, dev.binary = dev.binary, reading.binary
            # an ON after OFF or after nothing known is a press: better page twice than never
            press = "single" if reading.binary and was is not True else None
        if press is None or retained:
            return  # a retained message is a snapshot, never a press
        action = c.actions.get(press) or ROLE_ACTIONS[c.role][press]
        if action != "ignore":
            events.append(Button(c.booth, _PRESS[action], device=c.id))

    def _state(self, dev: Device, reading: Reading, retained: bool, now: float,
               events: list[BoothEvent]) -> None:
        c = dev.config
        field: str | None = None
        value: Any = None
        binary = reading.binary
        if binary is not None and c.inverted:
            binary = not binary
        match c.role:
            case "motion":
                if reading.motion is not None:
                    value = reading.motion
                elif reading.occupancy is not None or binary is not None:
                    seen = reading.occupancy if reading.occupancy is not None else binary
                    value = MotionState.MOVING if seen else MotionState.ABSENT
                field = "motion" if value is not None else None
            case "occupancy":
                value = reading.occupancy if reading.occupancy is not None else binary
                field = "occupancy" if value is not None else None
            case "door":
                if reading.contact is not None:
                    value = reading.contact != c.inverted
                elif binary is not None:
                    value = not binary  # ON = open, as ESPHome's door class
                field = "door" if value is not None else None
            case _:
                return
        if field is None:
            return
        if field == "door":
            repeat = dev.emitted.get("door") == value
            if repeat and (retained or c.source not in REPORTS_CHANGES_ONLY):
                return  # a snapshot, or state the firmware repeats (z2m cache, Tasmota tele)
            dev.emitted["door"] = value
            events.append(Door(c.booth, bool(value), device=c.id))
            return
        if dev.emitted.get(field) == value:
            dev.pending = None  # back to what was last passed on: the flap is over
            return
        if field not in dev.emitted:
            self._emit(dev, field, value, events)
        elif dev.pending is None or dev.pending[1] != value:
            dev.pending = (field, value, now)

    def _emit(self, dev: Device, field: str, value: Any, events: list[BoothEvent]) -> None:
        c = dev.config
        dev.emitted[field] = value
        dev.pending = None
        if field == "motion":
            events.append(MotionEvent(c.booth, value, device=c.id))
        else:
            events.append(Occupancy(c.booth, bool(value), device=c.id))

    def next_deadline(self, device_id: str) -> float | None:
        return min(self.devices[device_id].deadlines(), default=None)

    def on_timer(self, device_id: str, now: float) -> tuple[list[BoothEvent], list[HealthChange]]:
        dev = self.devices[device_id]
        c = dev.config
        events: list[BoothEvent] = []
        health: list[HealthChange] = []
        if dev.pending is not None and dev.pending[2] + DEBOUNCE <= now:
            self._emit(dev, dev.pending[0], dev.pending[1], events)
        if dev.online and dev.silent_since + dev.silence_limit <= now:
            dev.online = False
            health.append(HealthChange(c.id, c.booth, c.role, "offline",
                                       f"silent for {int(now - dev.silent_since)} s"))
        if (dev.battery_low and dev.low_notified_at is not None
                and dev.low_notified_at + LOW_BATTERY_EVERY <= now):
            dev.low_notified_at = now
            health.append(HealthChange(c.id, c.booth, c.role, "low_battery", f"{dev.battery}%"))
        return events, health
