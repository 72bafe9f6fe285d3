"""Durations as people write and read them: "90s", "20m", "1h30m". Pure."""

from __future__ import annotations

import datetime
import json
import math
import re

_NUM = r"[0-9]+(?:\.[0-9]+)?"
_PLAIN_NUMBER_RE = re.compile(_NUM)
_DURATION_RE = re.compile(rf"(?:(?P<h>{_NUM})h)?(?:(?P<m>{_NUM})m)?(?:(?P<s>{_NUM})s)?")
_DURATION_HINT = 'expected seconds or a duration like "90s", "20m", "1h30m"'
#: the strings parse_duration reads, as a JSON Schema pattern (no named groups)
DURATION_PATTERN = rf"^(?:{_NUM}|{_NUM}h(?:{_NUM}m)?(?:{_NUM}s)?|{_NUM}m(?:{_NUM}s)?|{_NUM}s)$"


def describe(value: object) -> str:
    """How a rejected value is shown in a problem: strings quoted, others by kind."""
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return json.dumps(shown, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return "a date/time"
    return f"a {type(value).__name__}"


def _duration_from_str(text: str) -> float | None:
    """The seconds in `text` ("45", "90s", "1h30m"), or None if it is not that form."""
    if _PLAIN_NUMBER_RE.fullmatch(text):
        return float(text)
    match = _DURATION_RE.fullmatch(text)
    if match is None or not any(match.group("h", "m", "s")):
        return None
    hours, minutes, seconds = (float(part or 0) for part in match.group("h", "m", "s"))
    return hours * 3600.0 + minutes * 60.0 + seconds


def parse_duration(value: object) -> float:
    """Seconds from a number of seconds or a string like "90s", "20m", "1h30m15s", "45".

    Raises ValueError with a message fit to show after a key path.
    """
    seconds: float | None
    if isinstance(value, bool):
        seconds = None
    elif isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(f"duration too large, got {describe(value)}") from None
        if math.isnan(seconds):
            raise ValueError(f"{_DURATION_HINT}, got nan")
    elif isinstance(value, str):
        seconds = _duration_from_str(value)
        if seconds is None and value.startswith("-") and _duration_from_str(value[1:]):
            raise ValueError(f"must not be negative, got {describe(value)}")
    else:
        seconds = None
    if seconds is None:
        raise ValueError(f"{_DURATION_HINT}, got {describe(value)}")
    if seconds < 0:
        raise ValueError(f"must not be negative, got {describe(value)}")
    if math.isinf(seconds):
        raise ValueError(f"duration too large, got {describe(value)}")
    return seconds


def format_duration(seconds: float) -> str:
    """A human form of a duration that parse_duration reads back: "90s", "20m", "1h30m".

    Under two minutes it stays in seconds ("60s", "90s"); longer ones use h/m/s parts.
    """
    if seconds < 0:
        return "-" + format_duration(-seconds)
    millis = round(seconds * 1000)
    if millis < 120_000:
        return _format_seconds(millis) + "s"
    whole, frac = divmod(millis, 1000)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    out = ""
    if hours:
        out += f"{hours}h"
    if minutes:
        out += f"{minutes}m"
    if secs or frac:
        out += _format_seconds(secs * 1000 + frac) + "s"
    return out


def _format_seconds(millis: int) -> str:
    whole, frac = divmod(millis, 1000)
    return f"{whole}.{frac:03d}".rstrip("0") if frac else str(whole)
