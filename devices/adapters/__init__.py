"""Firmware adapters: MQTT messages of off-the-shelf devices to `Reading`s. Pure.

One module per firmware (``zigbee2mqtt``, ``esphome``, ``tasmota``,
``shelly``), each with the same three functions, dispatched here by
`DeviceConfig.source`:

- ``topic_problem(topic)``: why ``topic`` cannot be the device's topic, or None
  (the config loader reports it under ``devices[i].topic``);

- ``topics(device)``: the exact topics to subscribe for the device, derived from
  its ``topic`` as docs/devices.md lays out per source;
- ``decode(device, topic, payload, retained)``: the readings one message
  carries, or a `Rejected` from `devices.canonical` with the same bounded
  reasons (``bad_topic`` for a topic that is not one of ``topics(device)``).

``decode`` never raises for any topic, payload or flag: a device that sends
garbage is its fault, counted and dropped. Raising is kept for our own bugs: a
device whose ``topic`` does not fit its source's form (the registry calls
``topics`` at startup, so that surfaces before any message), and a ``canonical``
device, which publishes booth events that `devices.canonical` parses instead.

A retained message is a state snapshot: it never yields a press, though its
other fields (availability, occupancy, battery) count. Press vocabularies are
module constants (``PRESSES``...) mapping firmware words to `PRESS_TYPES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Protocol

from devices.adapters import canonical, esphome, shelly, tasmota, zigbee2mqtt
from devices.adapters._common import firmware_topic_problem, level_problem
from devices.adapters.payload import Rejected
from monitor.core.readings import Reading
from monitor.core.settings import DeviceConfig, DeviceSource

__all__ = ["SOURCES", "decode", "topic_problem", "topics"]


class _Adapter(Protocol):
    def topic_problem(self, topic: str, /) -> str | None: ...

    def topics(self, device: DeviceConfig, /) -> tuple[str, ...]: ...

    def decode(
        self, device: DeviceConfig, topic: str, payload: bytes, retained: bool, /
    ) -> list[Reading] | Rejected: ...


_ADAPTERS: Final[Mapping[str, _Adapter]] = {
    "zigbee2mqtt": zigbee2mqtt,
    "esphome": esphome,
    "tasmota": tasmota,
    "shelly": shelly,
}

#: the sources these adapters handle; "canonical" devices go through devices.canonical
SOURCES: Final[tuple[DeviceSource, ...]] = ("zigbee2mqtt", "esphome", "tasmota", "shelly")


def topic_problem(source: str | None, topic: str, site: str, booth: str) -> str | None:
    """Why `topic` cannot be the topic of a `source` device of `booth` at `site`, or None.

    A source, site or booth that is not known (None or "": it has a problem of its
    own) skips only the checks that need it.
    """
    if source == "canonical":
        return level_problem(topic) or canonical.topic_problem(topic, site, booth)
    adapter = _ADAPTERS.get(source or "")
    return firmware_topic_problem(topic) if adapter is None else adapter.topic_problem(topic)


def topics(device: DeviceConfig) -> tuple[str, ...]:
    """The topics to subscribe for `device`; ValueError for a canonical or misconfigured one."""
    return _adapter(device).topics(device)


def decode(
    device: DeviceConfig, topic: str, payload: bytes, retained: bool
) -> list[Reading] | Rejected:
    """Readings from one message on one of ``topics(device)``; never raises for any message."""
    return _adapter(device).decode(device, topic, payload, retained)


def _adapter(device: DeviceConfig) -> _Adapter:
    adapter = _ADAPTERS.get(device.source)
    if adapter is None:
        raise ValueError(
            f"device {device.id}: source {device.source!r} has no firmware adapter "
            f"(one of {', '.join(SOURCES)}); canonical devices publish booth events"
        )
    return adapter
