"""Loading a device's payload, and rejecting it: what every decoder shares. Pure.

A device that sends garbage is the device's fault, not ours, so a decoder never
raises for any input: every failure becomes a `Rejected` whose `reason` is one of
the bounded set `REASONS` (it is a Prometheus label value, so it must never carry
input text) and whose `detail` says what was wrong for the log. Checks run in the
order of `REASONS`: size, encoding, syntax, shape, then each decoder's own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, NoReturn

MAX_PAYLOAD: Final = 16 * 1024

REASONS: Final = frozenset(
    {
        "too_large",  # payload over MAX_PAYLOAD bytes
        "bad_utf8",  # payload is not strict UTF-8
        "not_json",  # not JSON, or JSON with NaN/Infinity, or nested too deep
        "not_object",  # JSON, but not an object
        "unknown_booth",  # the topic's booth is not configured
        "unknown_kind",  # "kind" is a string, but not one we know
        "bad_field",  # a field is missing, of the wrong type, or out of range
        "bad_topic",  # parse_topic failed (reported by the caller), or not an adapter topic
    }
)

_SHOWN: Final = 60  # characters of a bad value quoted in a `detail`


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    detail: str

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"reason {self.reason!r} is not in REASONS")


class BadField(Exception):
    """A field a decoder reads has the wrong type or value; `field_error` reports it."""


def show(value: object) -> str:
    """A bad value for a `detail`: its repr, cut short so input never floods the log."""
    shown = repr(value)
    return shown if len(shown) <= _SHOWN else shown[: _SHOWN - 3] + "..."


def bad(key: str, rule: str, value: object) -> NoReturn:
    raise BadField(f"{key}: {rule}, got {show(value)}")


def field_error(error: BadField) -> Rejected:
    return Rejected("bad_field", str(error))


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
        data = _DECODER.decode(decoded)
    except RecursionError:
        return Rejected("not_json", "nested too deep")
    except ValueError as e:  # JSONDecodeError, NaN/Infinity, an int too long to convert
        return Rejected("not_json", str(e)[:200])
    if not isinstance(data, dict):
        return Rejected("not_object", f"a JSON {type(data).__name__}, not an object")
    return data


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


# one decoder for every message: json.loads(..., parse_constant=...) builds one per call
_DECODER = json.JSONDecoder(parse_constant=_no_constant)
