"""What the firmware adapters share: field checks, plain-word payloads, topic routing. Pure.

Every failure is a `Rejected` (`devices.adapters.payload`), with the same bounded
reasons and the same order of checks as the canonical decoder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from devices.adapters.canonical import TOPIC_ROOT
from devices.adapters.payload import Rejected, bad, show, text
from monitor.core.readings import Reading
from monitor.core.settings import DeviceConfig

Result = list[Reading] | Rejected
#: decodes one payload of one topic: (payload, retained) -> readings or a rejection
Handler = Callable[[bytes, bool], Result]

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


def level_problem(topic: str) -> str | None:
    """Why `topic` cannot be any device's topic (canonical too), or None."""
    if not topic:
        return "must not be empty"
    if "+" in topic or "#" in topic:
        return "must not contain the wildcards + or #"
    if "\x00" in topic:
        return "must not contain a NUL character"
    if topic.startswith("/") or topic.endswith("/"):
        return 'must not start or end with "/"'
    if "//" in topic:
        return 'must not have an empty level ("//")'
    return None


def firmware_topic_problem(topic: str) -> str | None:
    """`level_problem`, or a topic in the service's own namespace: only canonical devices
    publish there. Each firmware module adds the form of its own topics."""
    if problem := level_problem(topic):
        return problem
    if topic == TOPIC_ROOT or topic.startswith(f"{TOPIC_ROOT}/"):
        return (f'must not be under "{TOPIC_ROOT}/" (that namespace is the service\'s own; '
                'a device publishing the canonical event takes source = "canonical")')
    return None


def check_topic(device: DeviceConfig, problem: str | None) -> None:
    """Raise ValueError (our configuration's fault) if the device's topic has a `problem`.

    The config loader reports the same problem by key path, so this fires only for a
    `DeviceConfig` built by hand."""
    if problem is not None:
        raise ValueError(f"device {device.id} ({device.source}): topic {device.topic!r}: {problem}")


def route(routes: Mapping[str, Handler], topic: str, payload: bytes, retained: bool) -> Result:
    handler = routes.get(topic)
    if handler is None:
        return Rejected("bad_topic", f"topic {show(topic)} is not one of this device's")
    return handler(payload, retained)
