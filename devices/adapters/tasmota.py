"""Tasmota: LWT, button actions in ``stat/<t>/RESULT``, ``Switch1`` in ``tele/<t>/SENSOR``. Pure.

A device's ``topic`` is Tasmota's ``%topic%``. Button actions appear in RESULT
with ``SetOption73 1`` as ``{"Button1":{"Action":"SINGLE"}}``; RESULT also
answers every command (``{"POWER":"ON"}``), which says nothing to us. A press
from ``Switch1`` (``ON``, an edge from ``OFF``) needs the previous state, so the
registry makes it from `Reading.binary`.
"""

from __future__ import annotations

import re
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
    word,
)
from devices.adapters.payload import BadField, Rejected, bad, field_error, json_object, show
from monitor.core.durations import describe
from monitor.core.readings import Reading
from monitor.core.settings import DeviceConfig

#: ``ButtonN.Action`` -> press type (docs/devices.md); any other action is no press
PRESSES: Final[Mapping[str, str]] = {
    "SINGLE": "single",
    "DOUBLE": "double",
    "TRIPLE": "triple",
    "QUAD": "quadruple",
    "PENTA": "quadruple",
    "HOLD": "hold",
    "CLEAR": "release",
}
LWT: Final[Mapping[str, bool]] = {"Online": True, "Offline": False}
SWITCH: Final[Mapping[str, bool]] = {"ON": True, "OFF": False}

_BUTTON: Final = re.compile(r"Button[1-9][0-9]*", re.ASCII)


def topic_problem(topic: str) -> str | None:
    """Why `topic` cannot be a Tasmota device's %topic%, or None."""
    if problem := firmware_topic_problem(topic):
        return problem
    if "/" in topic:
        return f'expected <t>, Tasmota\'s %topic% (one level, no "/"), got {describe(topic)}'
    return None


def topics(device: DeviceConfig) -> tuple[str, ...]:
    return tuple(_routes(device))


def decode(device: DeviceConfig, topic: str, payload: bytes, retained: bool) -> Result:
    """Readings from one message of `device`; never raises for any topic or payload."""
    return route(_routes(device), topic, payload, retained)


def _routes(device: DeviceConfig) -> dict[str, Handler]:
    check_topic(device, topic_problem(device.topic))
    t = device.topic
    return {f"tele/{t}/LWT": _lwt, f"stat/{t}/RESULT": _result, f"tele/{t}/SENSOR": _sensor}


def _lwt(payload: bytes, retained: bool) -> Result:
    online = word(payload, LWT)
    return online if isinstance(online, Rejected) else [Reading(online=online)]


def _result(payload: bytes, retained: bool) -> Result:
    data = json_object(payload)
    if isinstance(data, Rejected):
        return data
    try:
        presses = [_press(key, value) for key, value in data.items() if _BUTTON.fullmatch(key)]
    except BadField as e:
        return field_error(e)
    if retained:  # a retained message is a snapshot, never a new press
        return []
    return readings(*(Reading(press=press) for press in presses))


def _press(key: str, value: Any) -> str | None:
    if not isinstance(value, dict):
        bad(key, 'must be an object like {"Action":"SINGLE"}', value)
    action = optional(value, "Action", str, "must be a string")
    return PRESSES.get(action) if action is not None else None


def _sensor(payload: bytes, retained: bool) -> Result:
    data = json_object(payload)
    if isinstance(data, Rejected):
        return data
    switch = data.get("Switch1")
    if switch is None:  # telemetry of other sensors
        return []
    if not isinstance(switch, str) or switch not in SWITCH:
        return Rejected("bad_field", f"Switch1: must be ON|OFF, got {show(switch)}")
    return [Reading(binary=SWITCH[switch])]
