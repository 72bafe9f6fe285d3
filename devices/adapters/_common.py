"""What the firmware adapters share: field checks, plain-word payloads, topic routing. Pure.

Every failure is a `Rejected` (`devices.adapters.payload`), with the same bounded
reasons and the same order of checks as the canonical decoder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from devices.adapters.payload import Rejected, bad, show, text
from monitor.core.readings import Reading
from monitor.core.settings import DeviceConfig

Result = list[Reading] | Rejected
#: decodes one payload of one topic: (payload, retained) -> readings or a rejection
Handler = Callable[[bytes, bool], Result]

_WILDCARDS: Final = ("+", "#", "\x00")

_T = TypeVar("_T")


def word(payload: bytes, table: Mapping[str, _T]) -> _T | Rejected:
    """The value `table` gives a plain-text payload (``ON``, ``Online``, ``true``...)."""
    decoded = text(payload)
    if isinstance(decoded, Rejected):
        return decoded
    if decoded in table:
        return table[decoded]
    return Rejected("bad_field", f"payload: must be {'|'.join(table)}, got {show(decoded)}")


def optional(data: Mapping[str, Any], key: str, kind: type[_T], rule: str) -> _T | None:
    """`data[key]` if it is a `kind`; None when absent or null (firmware's "unknown")."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, kind):
        bad(key, rule, value)
    return value


def readings(*found: Reading) -> list[Reading]:
    """The readings that say something: a message with nothing we read gives []."""
    return [reading for reading in found if reading != _NOTHING]


_NOTHING: Final = Reading()


def check_topic(device: DeviceConfig, form: str, ok: bool) -> None:
    """Raise ValueError (our configuration's fault) unless the device topic fits `form`."""
    if not ok or not device.topic or any(w in device.topic for w in _WILDCARDS):
        raise ValueError(
            f"device {device.id}: topic {device.topic!r} is not of the form {form} "
            f"(source {device.source}), or holds a wildcard"
        )


def route(routes: Mapping[str, Handler], topic: str, payload: bytes, retained: bool) -> Result:
    handler = routes.get(topic)
    if handler is None:
        return Rejected("bad_topic", f"topic {show(topic)} is not one of this device's")
    return handler(payload, retained)
