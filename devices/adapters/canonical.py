"""The canonical booth event (interface section 4): topic and payload to a `BoothEvent`.

Pure: bytes in, a `Parsed` or a `Rejected` (`devices.adapters.payload`) out, no
I/O; `parse_event` never raises for any input. Checks run in the order of
`REASONS`, so a payload that is wrong in several ways is counted once, under the
first: size, encoding, syntax, shape, booth, kind, fields. Unknown extra fields
are ignored because firmware adds them.

The firmware adapters (`devices/adapters/`) reject with these same reasons, so
one counter covers every device; they add no label of their own.
"""

from __future__ import annotations

import math
from collections.abc import Container, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypeVar

from devices.adapters.payload import (
    BadField,
    Rejected,
    bad,
    field_error,
    json_object,
    show,
)
from monitor.core.durations import describe
from monitor.core.events import BoothEvent, Button, Heartbeat, Motion, MotionState, Occupancy, Press
from monitor.core.settings import RISKS, ROUTES

MAX_ID: Final = 128

KINDS: Final = ("button", "occupancy", "motion", "heartbeat")

TOPIC_ROOT: Final = "boothwatch"  # the service's own namespace

_E = TypeVar("_E", Press, MotionState)
_W = TypeVar("_W", bound=str)


@dataclass(frozen=True, slots=True)
class Parsed:
    event: BoothEvent
    event_id: str | None  # the optional "id": a repeated id is a duplicate delivery
    device: str | None
    ts: float | None  # the device's "ts" as epoch seconds; for the record only


def parse_topic(topic: str, site: str) -> str | None:
    """Return the booth of ``boothwatch/<site>/booths/<booth>/events``, else None."""
    parts = topic.split("/")
    if len(parts) != 5:
        return None
    root, topic_site, booths, booth, events = parts
    if (root, topic_site, booths, events) != (TOPIC_ROOT, site, "booths", "events"):
        return None
    if not booth or "+" in booth or "#" in booth or "\x00" in booth:
        return None
    return booth


def topic_problem(topic: str, site: str, booth: str) -> str | None:
    """Why a canonical device of `booth` cannot publish on `topic`, or None.

    It publishes on its booth's events topic; "" for a site or booth that is not
    known (it has a problem of its own) skips the check.
    """
    expected = f"{TOPIC_ROOT}/{site}/booths/{booth}/events"
    if site and booth and topic != expected:
        return (f"a canonical device publishes on its booth's events topic "
                f"{describe(expected)}, got {describe(topic)}")
    return None


def parse_event(booth: str, payload: bytes, known_booths: Container[str]) -> Parsed | Rejected:
    """Parse one canonical event published for `booth`; never raises."""
    data = json_object(payload)
    if isinstance(data, Rejected):
        return data
    if not booth or booth not in known_booths:
        return Rejected("unknown_booth", f"booth {show(booth)} is not configured")
    if "kind" not in data:
        return Rejected("bad_field", "kind: missing")
    kind = data["kind"]
    if not isinstance(kind, str):
        return Rejected("bad_field", f"kind: must be a string, got {show(kind)}")
    if kind not in KINDS:
        return Rejected("unknown_kind", f"kind {show(kind)} is not one of {', '.join(KINDS)}")
    try:
        event_id = _optional_text(data, "id", MAX_ID)
        device = _optional_text(data, "device", None)
        ts = _optional_ts(data)
        event = _event(kind, booth, device, data)
    except BadField as e:
        return field_error(e)
    return Parsed(event=event, event_id=event_id, device=device, ts=ts)


def _event(kind: str, booth: str, device: str | None, data: Mapping[str, Any]) -> BoothEvent:
    match kind:
        case "button":
            return Button(booth, _enum(Press, data, "press"), device=device)
        case "occupancy":
            occupied = _required(data, "occupied")
            if not isinstance(occupied, bool):
                bad("occupied", "must be true or false", occupied)
            # a session's risk and route at check-in: never who the person is
            return Occupancy(booth, occupied, device=device,
                             risk=_optional_word(data, "risk", RISKS),
                             route=_optional_word(data, "route", ROUTES))
        case "motion":
            return Motion(booth, _enum(MotionState, data, "state"), device=device)
        case "heartbeat":
            return Heartbeat(booth, _optional_battery(data), device=device)
    raise AssertionError(f"kind {kind!r} is in KINDS but has no case")  # our bug, not theirs


def _required(data: Mapping[str, Any], key: str) -> Any:
    if key not in data:
        raise BadField(f"{key}: missing")
    return data[key]


def _enum(cls: type[_E], data: Mapping[str, Any], key: str) -> _E:
    value = _required(data, key)
    # Exact match only: "CALL" is a firmware bug to surface, not a value to guess at.
    for member in cls:
        if isinstance(value, str) and value == member.value:
            return member
    bad(key, f"must be one of {'|'.join(m.value for m in cls)}", value)


def _optional_word(data: Mapping[str, Any], key: str, words: tuple[_W, ...]) -> _W | None:
    if key not in data:
        return None
    value = data[key]
    for word in words:
        if isinstance(value, str) and value == word:
            return word
    bad(key, f"must be one of {'|'.join(words)}", value)


def _optional_text(data: Mapping[str, Any], key: str, max_len: int | None) -> str | None:
    if key not in data:
        return None
    value = data[key]
    if not isinstance(value, str) or not value:
        bad(key, "must be a non-empty string", value)
    if max_len is not None and len(value) > max_len:
        raise BadField(f"{key}: {len(value)} characters, the limit is {max_len}")
    if not _encodable(value):
        # JSON escapes can smuggle in lone surrogates, which the store and logs cannot write.
        bad(key, "must be valid Unicode", value)
    return value


def _optional_battery(data: Mapping[str, Any]) -> int | None:
    if "battery" not in data:
        return None
    value = data["battery"]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        bad("battery", "must be an integer from 0 to 100", value)
    return value


def _optional_ts(data: Mapping[str, Any]) -> float | None:
    if "ts" not in data:
        return None
    value = data["ts"]
    if isinstance(value, bool):
        bad("ts", "must be ISO 8601 or epoch seconds", value)
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
        if not math.isfinite(seconds):
            bad("ts", "must be a finite number of epoch seconds", value)
        return seconds
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
            if when.tzinfo is None or when.utcoffset() is None:
                # A local time without its offset is ambiguous; guessing would misfile it.
                bad("ts", "ISO 8601 needs an offset or Z", value)
            return when.timestamp()
        except (ValueError, OverflowError):
            pass
    bad("ts", "must be ISO 8601 with an offset, or epoch seconds", value)



def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True

