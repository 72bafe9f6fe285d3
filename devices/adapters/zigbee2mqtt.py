"""Zigbee2MQTT: a device's JSON state object, its availability, the bridge state. Pure.

Topics for a device whose ``topic`` is ``<base>/<friendly_name>``: the state
object on ``<topic>``, availability on ``<topic>/availability`` and the bridge's
``<base>/bridge/state``. The base is the first topic level, because friendly
names may hold ``/`` (``zigbee2mqtt/booth1/button``) and base topics in practice
do not.

Zigbee2MQTT repeats its whole state cache in every message, so one message may
carry a button's ``action`` with its ``battery`` and ``linkquality``: it becomes
one `Reading` with every field read (table in docs/devices.md); the registry
drops what did not change. Fields we do not read are ignored, and so are action,
movement and ``state`` strings outside the tables (the device may be another
model), but a field we read with the wrong type rejects the message. A battery
outside 0-100 is dropped alone: the rest of the message is still good.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from devices.adapters._common import (
    Handler,
    Result,
    check_topic,
    firmware_topic_problem,
    optional,
    readings,
    route,
)
from devices.adapters.payload import (
    BadField,
    Rejected,
    bad,
    field_error,
    json_object,
    object_from_text,
    show,
    text,
)
from monitor.core.durations import describe
from monitor.core.events import MotionState
from monitor.core.readings import Reading
from monitor.core.settings import DeviceConfig

#: ``action`` values -> press type (docs/devices.md); any other action is no press
PRESSES: Final[Mapping[str, str]] = {
    "single": "single",
    "on": "single",
    "toggle": "single",
    "arrow_left_click": "single",
    "arrow_right_click": "single",
    "press": "single",
    "double": "double",
    "off": "double",
    "triple": "triple",
    "quadruple": "quadruple",
    "many": "quadruple",
    "hold": "hold",
    "long": "hold",
    "brightness_move_up": "hold",
    "brightness_move_down": "hold",
    "toggle_hold": "hold",
    "release": "release",
    "brightness_stop": "release",
}

#: Aqara FP1E ``movement`` -> (occupancy, motion)
FP1E_MOVEMENT: Final[Mapping[str, tuple[bool, MotionState]]] = {
    "movement": (True, MotionState.MOVING),
    "no_movement": (True, MotionState.STILL),
    "no_presence": (False, MotionState.ABSENT),
}

#: Tuya ZY-M100 ``state`` -> (occupancy, motion); a switch's "ON"/"OFF" is not in it
TUYA_STATE: Final[Mapping[str, tuple[bool, MotionState]]] = {
    "none": (False, MotionState.ABSENT),
    "presence": (True, MotionState.STILL),
    "move": (True, MotionState.MOVING),
}

#: availability and bridge state, 1.x plain text or 2.x ``{"state": ...}``
AVAILABILITY: Final[Mapping[str, bool]] = {"online": True, "offline": False}

_ABSENT: Final = (False, MotionState.ABSENT)


def topic_problem(topic: str) -> str | None:
    """Why `topic` cannot be a Zigbee2MQTT device's ``<base>/<friendly_name>``, or None."""
    if problem := firmware_topic_problem(topic):
        return problem
    if "/" not in topic:
        return (f"expected <base>/<friendly_name> for zigbee2mqtt "
                f'(e.g. "zigbee2mqtt/booth1-button"), got {describe(topic)}')
    return None


def topics(device: DeviceConfig) -> tuple[str, ...]:
    return tuple(_routes(device))


def decode(device: DeviceConfig, topic: str, payload: bytes, retained: bool) -> Result:
    """Readings from one message of `device`; never raises for any topic or payload."""
    return route(_routes(device), topic, payload, retained)


def _routes(device: DeviceConfig) -> dict[str, Handler]:
    check_topic(device, topic_problem(device.topic))
    base = device.topic.partition("/")[0]
    return {
        device.topic: _state,
        f"{device.topic}/availability": _availability,
        f"{base}/bridge/state": _bridge,
    }


def _state(payload: bytes, retained: bool) -> Result:
    data = json_object(payload)
    if isinstance(data, Rejected):
        return data
    try:
        press = _press(data)
        occupancy, motion = _presence(data)
        reading = Reading(
            press=None if retained else press,  # a retained state is a snapshot, not a press
            occupancy=occupancy,
            motion=motion,
            contact=optional(data, "contact", bool, "must be true or false"),
            battery=_battery(data),
        )
    except BadField as e:
        return field_error(e)
    return readings(reading)


def _press(data: Mapping[str, Any]) -> str | None:
    action = optional(data, "action", str, "must be a string")
    return PRESSES.get(action) if action else None


def _presence(data: Mapping[str, Any]) -> tuple[bool | None, MotionState | None]:
    """Occupancy and motion from whichever sensor fields the message carries.

    Radar fields win over a PIR's ``occupancy``; any of them saying nobody is
    there wins over the others (a stale "still" must not keep a booth occupied).
    """
    presence = optional(data, "presence", bool, "must be true or false")
    movement = optional(data, "movement", str, "must be a string")
    state = data.get("state")  # anything but a Tuya radar's value belongs to another device
    radar = [
        found
        for found in (
            FP1E_MOVEMENT.get(movement) if movement is not None else None,
            TUYA_STATE.get(state) if isinstance(state, str) else None,
        )
        if found is not None
    ]
    if presence is False or _ABSENT in radar:
        return _ABSENT
    if radar:
        return radar[0]
    if presence:
        return True, None
    occupancy = optional(data, "occupancy", bool, "must be true or false")
    if occupancy is None:
        return None, None
    # A PIR sees only movement: when it clears, the person may still be there, but
    # the sensor reports absent and the booth core decides what absence means.
    return (True, MotionState.MOVING) if occupancy else _ABSENT


def _battery(data: Mapping[str, Any]) -> int | None:
    value = data.get("battery")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        bad("battery", "must be a number", value)
    # An int is compared as it is: math.isfinite would raise on one too big for a float.
    if isinstance(value, float) and not math.isfinite(value):  # 1e400 parses as inf
        return None
    percent = round(value)
    return percent if 0 <= percent <= 100 else None


def _online(payload: bytes) -> bool | Rejected:
    decoded = text(payload)
    if isinstance(decoded, Rejected):
        return decoded
    if decoded in AVAILABILITY:  # 1.x
        return AVAILABILITY[decoded]
    data = object_from_text(decoded)  # 2.x
    if isinstance(data, Rejected):
        return data
    state = data.get("state")
    if not isinstance(state, str) or state not in AVAILABILITY:
        return Rejected("bad_field", f"state: must be online|offline, got {show(state)}")
    return AVAILABILITY[state]


def _availability(payload: bytes, retained: bool) -> Result:
    online = _online(payload)
    return online if isinstance(online, Rejected) else [Reading(online=online)]


def _bridge(payload: bytes, retained: bool) -> Result:
    # Bridge offline: every device's state is unknown. Online says nothing about any
    # one device; each device's own availability message follows.
    online = _online(payload)
    if isinstance(online, Rejected):
        return online
    return [] if online else [Reading(online=False)]
