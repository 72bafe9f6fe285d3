"""Shelly: Gen2 RPC events and Gen1 input events from an input, plus online. Pure.

A device whose ``topic`` starts with ``shellies/`` is a Gen1 device
(``shellies/<id>``): ``<topic>/input_event/0`` carries ``{"event":"S"}``
(``event_cnt`` counts presses and is ignored). Any other ``topic`` is a Gen2
device id: ``<id>/events/rpc`` carries ``NotifyEvent`` notifications whose
``input:0`` events are presses, next to status notifications we do not read.
Both generations publish ``<topic>/online`` as ``true``/``false``.
"""

from __future__ import annotations

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
from devices.adapters.payload import BadField, Rejected, bad, field_error, json_object
from monitor.core.durations import describe
from monitor.core.readings import Reading
from monitor.core.settings import DeviceConfig

#: Gen2 ``input:0`` event -> press type (docs/devices.md); other events are no press
GEN2_PRESSES: Final[Mapping[str, str]] = {
    "single_push": "single",
    "double_push": "double",
    "triple_push": "triple",
    "long_push": "hold",
}
#: Gen1 ``input_event`` event -> press type; "" (no event yet) and others are no press
GEN1_PRESSES: Final[Mapping[str, str]] = {
    "S": "single",
    "SS": "double",
    "SSS": "triple",
    "L": "hold",
}
ONLINE: Final[Mapping[str, bool]] = {"true": True, "false": False}

GEN1_PREFIX: Final = "shellies/"
_INPUT: Final = "input:0"


def topic_problem(topic: str) -> str | None:
    """Why `topic` cannot be a Shelly device's id topic (Gen1 or Gen2), or None."""
    if problem := firmware_topic_problem(topic):
        return problem
    levels = topic.count("/") + 1
    if levels != (2 if topic.startswith(GEN1_PREFIX) else 1):
        return (f"expected shellies/<id> (Gen1) or <id> (Gen2, one level) for shelly, "
                f"got {describe(topic)}")
    return None


def topics(device: DeviceConfig) -> tuple[str, ...]:
    return tuple(_routes(device))


def decode(device: DeviceConfig, topic: str, payload: bytes, retained: bool) -> Result:
    """Readings from one message of `device`; never raises for any topic or payload."""
    return route(_routes(device), topic, payload, retained)


def _routes(device: DeviceConfig) -> dict[str, Handler]:
    check_topic(device, topic_problem(device.topic))
    t = device.topic
    if t.startswith(GEN1_PREFIX):
        return {f"{t}/input_event/0": _gen1_event, f"{t}/online": _online}
    return {f"{t}/events/rpc": _gen2_rpc, f"{t}/online": _online}


def _online(payload: bytes, retained: bool) -> Result:
    online = word(payload, ONLINE)
    return online if isinstance(online, Rejected) else [Reading(online=online)]


def _gen2_rpc(payload: bytes, retained: bool) -> Result:
    data = json_object(payload)
    if isinstance(data, Rejected):
        return data
    try:
        method = optional(data, "method", str, "must be a string")
        if method != "NotifyEvent":  # NotifyStatus, NotifyFullStatus: state we do not read
            return []
        params = optional(data, "params", dict, "must be an object")
        events = optional(params or {}, "events", list, "must be a list")
        presses = [_gen2_press(event) for event in events or ()]
    except BadField as e:
        return field_error(e)
    if retained:  # a retained message is a snapshot, never a new press
        return []
    return readings(*(Reading(press=press) for press in presses))


def _gen2_press(event: Any) -> str | None:
    if not isinstance(event, dict):
        bad("events[]", "must be an object", event)
    component = optional(event, "component", str, "must be a string")
    name = optional(event, "event", str, "must be a string")
    if component != _INPUT or name is None:
        return None
    return GEN2_PRESSES.get(name)


def _gen1_event(payload: bytes, retained: bool) -> Result:
    data = json_object(payload)
    if isinstance(data, Rejected):
        return data
    try:
        name = optional(data, "event", str, "must be a string")
    except BadField as e:
        return field_error(e)
    if retained or name is None:
        return []
    return readings(Reading(press=GEN1_PRESSES.get(name)))
