"""ESPHome: a binary sensor's ``ON``/``OFF`` state and the node's status (LWT). Pure.

A device's ``topic`` is ``<node>/binary_sensor/<name>/state``; the node's
``<node>/status`` says ``online``/``offline``. A press from a binary sensor
(``ON``, an edge from ``OFF``) needs the previous state, so the registry makes
it from `Reading.binary`, not this stateless adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from devices.adapters._common import Handler, Result, check_topic, route, word
from devices.adapters.payload import Rejected
from monitor.core.readings import Reading
from monitor.core.settings import DeviceConfig

STATES: Final[Mapping[str, bool]] = {"ON": True, "OFF": False}
STATUS: Final[Mapping[str, bool]] = {"online": True, "offline": False}

_SENSOR: Final = "/binary_sensor/"


def topics(device: DeviceConfig) -> tuple[str, ...]:
    return tuple(_routes(device))


def decode(device: DeviceConfig, topic: str, payload: bytes, retained: bool) -> Result:
    """Readings from one message of `device`; never raises for any topic or payload."""
    return route(_routes(device), topic, payload, retained)


def _routes(device: DeviceConfig) -> dict[str, Handler]:
    node, _, sensor = device.topic.rpartition(_SENSOR)
    form = "<node>/binary_sensor/<name>/state"
    check_topic(device, form, bool(node and sensor.endswith("/state") and sensor != "/state"))
    return {device.topic: _state, f"{node}/status": _status}


def _state(payload: bytes, retained: bool) -> Result:
    binary = word(payload, STATES)
    return binary if isinstance(binary, Rejected) else [Reading(binary=binary)]


def _status(payload: bytes, retained: bool) -> Result:
    online = word(payload, STATUS)
    return online if isinstance(online, Rejected) else [Reading(online=online)]
