"""Time for `boothwatch report`: time zones, the times people type, and shifts.

A shift is named, runs on some days of the week (every day unless told) from a
local wall-clock start to an end (exclusive, ``24:00`` for midnight at the end;
an end at or before the start runs into the next day, and the shift belongs to
the day it starts, as in the roster). Two sources:

* ``--shifts "night=00:00-08:00,day=08:00-16:00"``: daily shifts that may not
  overlap;
* the staff roster: every distinct shift of the responders (``mon-fri
  08:00-16:00``), named as written. Responders' shifts may overlap (a
  coordinator's 09:00-17:00 beside the nurses' 08:00-16:00): a moment belongs to
  the shift that started last, the latest hand-over.

`ShiftTable` answers "which shift is this local minute of the week in" with one
list lookup, and how many minutes until that changes (to split a session's
occupied time between shifts).
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from monitor.core import settings

NO_SHIFT = "other"
DEFAULT_SHIFTS = "night=00:00-08:00,day=08:00-16:00,evening=16:00-24:00"
DAY = 1440  # minutes
WEEK = 7 * DAY
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
EVERY_DAY = frozenset(range(7))


@dataclass(frozen=True, slots=True)
class Shift:
    name: str
    start: int  # minutes after local midnight, 0..1439
    end: int  # exclusive, 0..1440; <= start for a shift that crosses midnight
    days: frozenset[int] = field(default=EVERY_DAY)  # the days it starts on, Monday = 0

    @property
    def length(self) -> int:
        return (self.end - self.start) % DAY or DAY

    def minutes(self) -> Iterable[int]:
        """The minutes of the day it covers (a daily shift's)."""
        return ((self.start + m) % DAY for m in range(self.length))

    def json(self) -> dict[str, Any]:
        return {"name": self.name, "start": hhmm(self.start), "end": hhmm(self.end),
                "days": [DAYS[d] for d in sorted(self.days)]}


_SHIFT_RE = re.compile(r"\s*([A-Za-z0-9_-]+)\s*=\s*(\d\d):(\d\d)\s*-\s*(\d\d):(\d\d)\s*")


def parse_shifts(spec: str) -> tuple[Shift, ...]:
    """``"night=00:00-08:00,day=08:00-16:00"`` -> shifts; ValueError says what is wrong."""
    shifts: list[Shift] = []
    owner: dict[int, str] = {}
    for item in spec.split(","):
        m = _SHIFT_RE.fullmatch(item)
        if m is None:
            raise ValueError(f"{item.strip()!r}: expected name=HH:MM-HH:MM")
        name = m[1]
        start, end = int(m[2]) * 60 + int(m[3]), int(m[4]) * 60 + int(m[5])
        if int(m[3]) > 59 or int(m[5]) > 59 or start >= DAY or end > DAY:
            raise ValueError(f"{item.strip()!r}: times run from 00:00 to 24:00 (end only)")
        if start == end:
            raise ValueError(f"{item.strip()!r}: starts and ends at the same time "
                             "(00:00-24:00 is the whole day)")
        if name == NO_SHIFT:
            raise ValueError(f"{NO_SHIFT!r} is the group of incidents in no shift")
        if name in (s.name for s in shifts):
            raise ValueError(f"{name!r} is named twice")
        shift = Shift(name, start, end)
        for minute in shift.minutes():
            if minute in owner:
                raise ValueError(f"{name} overlaps {owner[minute]} at {hhmm(minute)}")
            owner[minute] = name
        shifts.append(shift)
    return tuple(shifts)


def roster_shifts(shifts: Iterable[settings.Shift]) -> tuple[Shift, ...]:
    """The roster's distinct shifts, named as first written, in start order."""
    seen: dict[tuple[frozenset[int], int, int], Shift] = {}
    for s in shifts:
        seen.setdefault((s.days, s.start, s.end),
                        Shift(s.text or _roster_name(s), s.start, s.end, s.days))
    return tuple(sorted(seen.values(), key=lambda s: (s.start, min(s.days), s.name)))


def _roster_name(shift: settings.Shift) -> str:
    days = ",".join(DAYS[d] for d in sorted(shift.days))
    return f"{days} {hhmm(shift.start)}-{hhmm(shift.end)}"


class ShiftTable:
    """Which shift each local minute of the week is in (see the module docstring)."""

    def __init__(self, shifts: Sequence[Shift]) -> None:
        self.shifts = tuple(shifts)
        owner: list[int] = [-1] * WEEK
        age: list[int] = [WEEK] * WEEK  # minutes since the owning shift began
        for n, shift in enumerate(self.shifts):
            for day in shift.days:
                first = day * DAY + shift.start
                for m in range(shift.length):
                    at = (first + m) % WEEK
                    if m < age[at]:
                        owner[at], age[at] = n, m
        names = [s.name for s in self.shifts]
        self._names = [names[o] if o >= 0 else NO_SHIFT for o in owner]
        # minutes from each minute of the week until the shift changes (at most a week)
        self._left = [0] * WEEK
        run = 0
        for at in reversed(range(2 * WEEK)):
            i = at % WEEK
            run = 1 if self._names[i] != self._names[(i + 1) % WEEK] else run + 1
            if at < WEEK:
                self._left[i] = min(run, WEEK)

    def of(self, local: datetime) -> str:
        return self._names[minute_of_week(local)]

    def minutes_left(self, local: datetime) -> int:
        """Whole minutes from the start of `local`'s minute until its shift changes."""
        return self._left[minute_of_week(local)]


def minute_of_week(local: datetime) -> int:
    return local.weekday() * DAY + local.hour * 60 + local.minute


def hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_time(text: str, tz: zoneinfo.ZoneInfo) -> datetime:
    """DATE (midnight in tz) or ISO 8601 (in tz when it has no offset); ValueError if neither."""
    text = text.strip()
    try:
        if _DATE_RE.fullmatch(text):
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), tz)
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r}: expected YYYY-MM-DD or an ISO 8601 time") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=tz)


def load_zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (expected a name like Europe/Lisbon)"
                         ) from None
