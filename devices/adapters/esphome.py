"""ESPHome: a binary sensor's ``ON``/``OFF`` state and the node's status (LWT). Pure.

A device's ``topic`` is ``<node>/binary_sensor/<name>/state``; the node's
``<node>/status`` says ``online``/``offline``. A press from a binary sensor
(``ON``, an edge from ``OFF``) needs the previous state, so the registry makes
it from `Reading.binary`, not this stateless adapter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from devices.adapters._common import (
    Handler,
    Result,
    check_topic,
    firmware_topic_problem,
    route,
    word,
)
from devices.adapters.payload import Rejected
from monitor.core.durations import describe
from monitor.core.readings import Reading
from monitor.core.settings import DeviceConfig

STATES: Final[Mapping[str, bool]] = {"ON": True, "OFF": False}
STATUS: Final[Mapping[str, bool]] = {"online": True, "offline": False}

_TOPIC: Final = re.compile(r".+/binary_sensor/[^/]+/state")


def topic_problem(topic: str) -> str | None:
    """Why `topic` cannot be an ESPHome binary sensor's state topic, or None."""
    if problem := firmware_topic_problem(topic):
        return problem
    if not _TOPIC.fullmatch(topic):
        return f"expected <node>/binary_sensor/<name>/state for esphome, got {describe(topic)}"
    return None


def topics(device: DeviceConfig) -> tuple[str, ...]:
    return tuple(_routes(device))


def decode(device: DeviceConfig, topic: str, payload: bytes, retained: bool) -> Result:
    """Readings from one message of `device`; never raises for any topic or payload."""
    return route(_routes(device), topic, payload, retained)


def _routes(device: DeviceConfig) -> dict[str, Handler]:
    check_topic(device, topic_problem(device.topic))
    node = device.topic.rpartition("/binary_sensor/")[0]
    return {device.topic: _state, f"{node}/status": _status}


def _state(payload: bytes, retained: bool) -> Result:
    binary = word(payload, STATES)
    return binary if isinstance(binary, Rejected) else [Reading(binary=binary)]


def _status(payload: bytes, retained: bool) -> Result:
    online = word(payload, STATUS)
    return online if isinstance(online, Rejected) else [Reading(online=online)]
