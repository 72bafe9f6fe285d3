"""What off-the-shelf devices put on the wire, for the simulator. Pure, no I/O.

`encode(device, action)` turns one semantic action of one simulated device into
the MQTT messages its firmware publishes, as `Wire(topic, payload, retain)`
tuples: exactly the topics and payloads docs/devices.md lists per source, so
the service's adapters (devices/adapters) read them back into the same meaning.
An action the device cannot express gives ``[]`` (a Tasmota switch has no
battery, a Shelly button no quadruple press, the canonical event no door).

Actions: `Press` (a press type of `devices.readings.PRESS_TYPES`), `Motion`
(moving / still / absent), `Occupancy`, `Door`, `Online` and `Battery`.

Retain flags follow the firmware: availability (Zigbee2MQTT ``availability``,
ESPHome ``status``, Tasmota ``LWT``, Shelly ``online``) and ESPHome sensor
states are retained; presses and everything else are not.

Models (`SimDevice.model`):

| model | firmware, device | says |
|---|---|---|
| ``wxkg11lm`` | Zigbee2MQTT, Aqara button | every press type, battery |
| ``mccgq11lm`` | Zigbee2MQTT, Aqara door contact | door, battery |
| ``rtcgq11lm`` | Zigbee2MQTT, Aqara PIR | occupancy (a PIR cannot see a still person), battery |
| ``fp1e`` | Zigbee2MQTT, Aqara FP1E mmWave (mains) | motion |
| ``zy-m100`` | Zigbee2MQTT, Tuya ZY-M100 mmWave (mains) | motion |
| ``esphome`` | an ESPHome ``binary_sensor`` | single press (ON then OFF), motion, occupancy, door |
| ``tasmota-button`` | Tasmota ``Button1`` (``SetOption73 1``) | every press type |
| ``tasmota-switch`` | Tasmota ``Switch1`` | motion, occupancy, door |
| ``shelly-gen2`` | Shelly Plus i4 ``input:0`` | single, double, triple, hold |
| ``shelly-gen1`` | Shelly Button1 | single, double, triple, hold |
| ``canonical`` | the canonical booth event (interface section 4) | all but door and offline |

A binary sensor cannot tell a still person from nobody: ``still`` goes out as
``OFF``, which the service reads as ``absent`` (and an occupied booth's core
counts as still). Every device says `Online`, except a canonical one, whose
going away is only silence; its `Online(True)` and `Battery` are heartbeats.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, assert_never

from monitor.core.readings import PRESS_TYPES

MotionName = Literal["moving", "still", "absent"]
Source = Literal["zigbee2mqtt", "esphome", "tasmota", "shelly", "canonical"]
Role = Literal["call_button", "presence_button", "motion", "occupancy", "door"]

MODELS: Final = (
    "wxkg11lm", "mccgq11lm", "rtcgq11lm", "fp1e", "zy-m100", "esphome",
    "tasmota-button", "tasmota-switch", "shelly-gen2", "shelly-gen1", "canonical",
)
BUTTON_ROLES: Final = frozenset({"call_button", "presence_button"})


# --- actions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Press:
    type: str  # one of PRESS_TYPES

    def __post_init__(self) -> None:
        if self.type not in PRESS_TYPES:
            raise ValueError(f"press type must be one of {PRESS_TYPES}, got {self.type!r}")


@dataclass(frozen=True, slots=True)
class Motion:
    state: MotionName


@dataclass(frozen=True, slots=True)
class Occupancy:
    occupied: bool


@dataclass(frozen=True, slots=True)
class Door:
    open: bool


@dataclass(frozen=True, slots=True)
class Online:
    online: bool


@dataclass(frozen=True, slots=True)
class Battery:
    percent: int

    def __post_init__(self) -> None:
        if not 0 <= self.percent <= 100:
            raise ValueError(f"battery must be 0-100, got {self.percent!r}")


Action = Press | Motion | Occupancy | Door | Online | Battery


# --- devices and messages -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimDevice:
    """A simulated device: its config entry (id, source, topic, booth, role) and model."""

    id: str
    source: Source
    model: str  # one of MODELS
    topic: str  # as in its [[devices]] entry; for a canonical device, the events topic
    booth: str
    role: Role

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")

    def config(self) -> dict[str, str]:
        """The device's [[devices]] entry."""
        return {"id": self.id, "source": self.source, "topic": self.topic,
                "booth": self.booth, "role": self.role}


class Wire(NamedTuple):
    topic: str
    payload: bytes
    retain: bool


def encode(
    device: SimDevice,
    action: Action,
    *,
    battery: int | None = None,
    n: int = 0,
    event_id: str | None = None,
) -> list[Wire]:
    """What `device` publishes for `action`; ``[]`` if it cannot say that.

    `battery` is the level a battery device repeats in its Zigbee2MQTT state
    cache, `n` numbers the device's reports (it varies what a radar measures),
    and `event_id` is the canonical event's ``id``.
    """
    if isinstance(action, Press) and device.role not in BUTTON_ROLES:
        return []
    match device.source:
        case "zigbee2mqtt":
            return _zigbee2mqtt(device, action, battery, n)
        case "esphome":
            return _esphome(device, action)
        case "tasmota":
            return _tasmota(device, action)
        case "shelly":
            return _shelly(device, action, n)
        case "canonical":
            return _canonical(device, action, event_id)
        case _:
            assert_never(device.source)


def zigbee2mqtt_bridge(online: bool, base: str = "zigbee2mqtt") -> Wire:
    """The Zigbee2MQTT bridge's own availability (2.x form), retained."""
    return _json(f"{base}/bridge/state", {"state": "online" if online else "offline"}, True)


def _json(topic: str, body: dict[str, Any], retain: bool = False) -> Wire:
    return Wire(topic, json.dumps(body, separators=(",", ":")).encode(), retain)


def _text(topic: str, text: str, retain: bool = False) -> Wire:
    return Wire(topic, text.encode(), retain)


def _linkquality(device: SimDevice) -> int:
    return 60 + zlib.crc32(device.id.encode()) % 120  # fixed per device, as if by distance


# --- Zigbee2MQTT ----------------------------------------------------------------------

_FP1E: Final[dict[MotionName, tuple[bool, str]]] = {
    "moving": (True, "movement"),
    "still": (True, "no_movement"),
    "absent": (False, "no_presence"),
}
_TUYA: Final[dict[MotionName, tuple[bool, str]]] = {
    "moving": (True, "move"),
    "still": (True, "presence"),
    "absent": (False, "none"),
}
_Z2M_BATTERY: Final = frozenset({"wxkg11lm", "mccgq11lm", "rtcgq11lm"})


def _distance(state: MotionName, n: int) -> float:
    if state == "absent":
        return 0.0
    base = 0.8 if state == "still" else 0.6 + (n % 7) * 0.15
    return round(base + (n % 3) * 0.01, 2)


def _zigbee2mqtt(device: SimDevice, action: Action, battery: int | None, n: int) -> list[Wire]:
    model = device.model
    body: dict[str, Any] = {}
    match action:
        case Online(online=online):
            state = "online" if online else "offline"
            return [_json(f"{device.topic}/availability", {"state": state}, True)]
        case Press(type=press) if model == "wxkg11lm":
            body["action"] = press
        case Motion(state=state) if model == "fp1e":
            presence, movement = _FP1E[state]
            body |= {"presence": presence, "movement": movement,
                     "target_distance": _distance(state, n)}
        case Motion(state=state) if model == "zy-m100":
            presence, word = _TUYA[state]
            body |= {"state": word, "presence": presence, "distance": _distance(state, n)}
        case Occupancy(occupied=occupied) if model == "rtcgq11lm":
            body |= {"occupancy": occupied, "illuminance": 40 + n % 5}
        case Door(open=is_open) if model == "mccgq11lm":
            body["contact"] = not is_open
        case Battery(percent=percent) if model in _Z2M_BATTERY:
            battery = percent
        case _:
            return []
    if model in _Z2M_BATTERY and battery is not None:
        body["battery"] = battery
        body["voltage"] = 2800 + 4 * battery
    body["linkquality"] = _linkquality(device)
    return [_json(device.topic, body)]


# --- ESPHome ------------------------------------------------------------------------


def _esphome(device: SimDevice, action: Action) -> list[Wire]:
    node = device.topic.split("/", 1)[0]
    state = device.topic
    match action:
        case Online(online=online):
            status = _text(f"{node}/status", "online" if online else "offline", True)
            if online and device.role in BUTTON_ROLES:
                # ESPHome reports every state on connecting: the button's OFF, which the
                # service needs as the edge a press starts from (not retained: a
                # retained message is a snapshot, and the service learns no edge from it)
                return [status, _text(state, "OFF")]
            return [status]
        case Press(type="single"):
            # a push button: ON while pressed, OFF on release; not retained, or a
            # reconnecting client would see the last press again
            return [_text(state, "ON"), _text(state, "OFF")]
        case Motion(state=motion) if device.role == "motion":
            return [_text(state, "ON" if motion == "moving" else "OFF", True)]
        case Occupancy(occupied=occupied) if device.role == "occupancy":
            return [_text(state, "ON" if occupied else "OFF", True)]
        case Door(open=is_open) if device.role == "door":
            return [_text(state, "ON" if is_open else "OFF", True)]  # device_class door
        case _:
            return []


# --- Tasmota ------------------------------------------------------------------------

_TASMOTA_PRESSES: Final = {
    "single": "SINGLE", "double": "DOUBLE", "triple": "TRIPLE", "quadruple": "QUAD",
    "hold": "HOLD", "release": "CLEAR",
}


def _tasmota(device: SimDevice, action: Action) -> list[Wire]:
    t = device.topic
    sensor = f"tele/{t}/SENSOR"
    switch = device.model == "tasmota-switch"
    match action:
        case Online(online=online):
            return [_text(f"tele/{t}/LWT", "Online" if online else "Offline", True)]
        case Press(type=press) if device.model == "tasmota-button":
            return [_json(f"stat/{t}/RESULT", {"Button1": {"Action": _TASMOTA_PRESSES[press]}})]
        case Motion(state=motion) if switch and device.role == "motion":
            return [_json(sensor, {"Switch1": "ON" if motion == "moving" else "OFF"})]
        case Occupancy(occupied=occupied) if switch and device.role == "occupancy":
            return [_json(sensor, {"Switch1": "ON" if occupied else "OFF"})]
        case Door(open=is_open) if switch and device.role == "door":
            return [_json(sensor, {"Switch1": "ON" if is_open else "OFF"})]
        case _:
            return []


# --- Shelly -------------------------------------------------------------------------

_GEN2_PRESSES: Final = {
    "single": "single_push", "double": "double_push", "triple": "triple_push",
    "hold": "long_push",
}
_GEN1_PRESSES: Final = {"single": "S", "double": "SS", "triple": "SSS", "hold": "L"}


def _shelly(device: SimDevice, action: Action, n: int) -> list[Wire]:
    t = device.topic
    match action:
        case Online(online=online):
            return [_text(f"{t}/online", "true" if online else "false", True)]
        case Press(type=press) if device.model == "shelly-gen2" and press in _GEN2_PRESSES:
            event = {"component": "input:0", "id": 0, "event": _GEN2_PRESSES[press]}
            body = {"src": t, "dst": f"{t}/events", "method": "NotifyEvent",
                    "params": {"events": [event]}}
            return [_json(f"{t}/events/rpc", body)]
        case Press(type=press) if device.model == "shelly-gen1" and press in _GEN1_PRESSES:
            gen1 = {"event": _GEN1_PRESSES[press], "event_cnt": n + 1}
            return [_json(f"{t}/input_event/0", gen1)]
        case _:
            return []


# --- canonical ----------------------------------------------------------------------

_CANONICAL_PRESSES: Final[dict[str, dict[str, str]]] = {
    "call_button": {p: "call" for p in PRESS_TYPES if p != "release"},
    "presence_button": {"single": "presence", "double": "clear", "triple": "clear",
                        "quadruple": "clear", "hold": "clear"},
}


def _canonical(device: SimDevice, action: Action, event_id: str | None) -> list[Wire]:
    body: dict[str, Any]
    match action:
        case Press(type=press) if press in _CANONICAL_PRESSES[device.role]:
            body = {"kind": "button", "press": _CANONICAL_PRESSES[device.role][press]}
        case Motion(state=state) if device.role == "motion":
            body = {"kind": "motion", "state": state}
        case Occupancy(occupied=occupied) if device.role == "occupancy":
            body = {"kind": "occupancy", "occupied": occupied}
        case Online(online=True):
            body = {"kind": "heartbeat"}
        case Battery(percent=percent):
            body = {"kind": "heartbeat", "battery": percent}
        case _:
            return []
    if event_id is not None:
        body["id"] = event_id
    body["device"] = device.id
    return [_json(device.topic, body)]
