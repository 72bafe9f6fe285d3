"""What the firmware adapters share: payload loading, field checks, topic routing. Pure.

Every failure is a `Rejected` from `devices.canonical`, with the same bounded
reasons and the same order of checks: size, encoding, syntax, shape, fields.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final, NoReturn, TypeVar

from devices.adapters.canonical import MAX_PAYLOAD, TOPIC_ROOT, Rejected
from monitor.core.readings import Reading
from monitor.core.settings import DeviceConfig

Result = list[Reading] | Rejected
#: decodes one payload of one topic: (payload, retained) -> readings or a rejection
Handler = Callable[[bytes, bool], Result]

_SHOWN: Final = 60  # characters of a bad value quoted in a `detail`

_T = TypeVar("_T")


class BadField(Exception):
    """A field the adapter reads has the wrong type or value; `field_error` reports it."""


def show(value: object) -> str:
    """A bad value for a `detail`: its repr, cut short so input never floods the log."""
    shown = repr(value)
    return shown if len(shown) <= _SHOWN else shown[: _SHOWN - 3] + "..."


def text(payload: bytes) -> str | Rejected:
    if len(payload) > MAX_PAYLOAD:
        return Rejected("too_large", f"{len(payload)} bytes, the limit is {MAX_PAYLOAD}")
    try:
        return payload.decode("utf-8", errors="strict")
    except UnicodeDecodeError as e:
        return Rejected("bad_utf8", f"invalid UTF-8 at byte {e.start}")


def json_object(payload: bytes) -> dict[str, Any] | Rejected:
    decoded = text(payload)
    if isinstance(decoded, Rejected):
        return decoded
    return object_from_text(decoded)


def object_from_text(decoded: str) -> dict[str, Any] | Rejected:
    try:
        data = json.loads(decoded, parse_constant=_no_constant)
    except RecursionError:
        return Rejected("not_json", "nested too deep")
    except ValueError as e:  # JSONDecodeError, NaN/Infinity, an int too long to convert
        return Rejected("not_json", str(e)[:200])
    if not isinstance(data, dict):
        return Rejected("not_object", f"a JSON {type(data).__name__}, not an object")
    return data


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


def bad(key: str, rule: str, value: object) -> NoReturn:
    raise BadField(f"{key}: {rule}, got {show(value)}")


def field_error(error: BadField) -> Rejected:
    return Rejected("bad_field", str(error))


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


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")
