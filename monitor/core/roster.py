"""Who is on duty now. Pure: the time is passed in, never read.

Theory of operation
-------------------
A responder with ``shifts`` is on duty during them (weekly, in the site's time
zone, so a shift keeps its local hours across daylight-saving changes). A
responder without shifts is always on duty. Either can check in or out (HTTP or
MQTT); that *override* holds until the next start or end of one of their shifts,
so a nurse who checks out early is on duty again at her next shift, and one who
checks in early is simply on shift when it starts. A responder without shifts
keeps an override until the next check-in or check-out.

``role:X`` in an escalation step pages only on-duty responders with role X
(`escalation.resolve_targets` takes `Roster.on_duty`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from monitor.core.settings import ResponderConfig, Shift


@dataclass(frozen=True, slots=True)
class Override:
    """A check-in (``on``) or check-out, and until when it holds (None: until changed)."""

    responder: str
    on: bool
    at: float
    until: float | None
    by: str
    via: str

    def snapshot(self) -> dict[str, Any]:
        return {"responder": self.responder, "on": self.on, "at": self.at,
                "until": self.until, "by": self.by, "via": self.via}


class UnknownResponder(KeyError):
    """The configuration has no responder with this id."""


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SHIFT_RE = re.compile(r"(?P<days>[a-z,-]+)\s+(?P<start>\d{2}:\d{2})-(?P<end>\d{2}:\d{2})")
_SHIFT_HINT = 'expected "<days> HH:MM-HH:MM" such as "mon-fri 08:00-16:00" or "sat,sun 20:00-08:00"'


def parse_shift(text: str) -> Shift:
    """``"mon-fri 08:00-16:00"``, ``"sat,sun 20:00-08:00"``, ``"daily 07:00-19:00"``.

    Raises ValueError with a message fit to show after a key path.
    """
    match = _SHIFT_RE.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(_SHIFT_HINT)
    days = parse_days(match["days"])
    times = []
    for key in ("start", "end"):
        hours, minutes = (int(x) for x in match[key].split(":"))
        if hours > 24 or minutes > 59 or (hours == 24 and minutes):
            raise ValueError(f"{match[key]} is not a time of day (00:00 to 24:00)")
        times.append(hours * 60 + minutes)
    start, end = times
    if start == 24 * 60:
        raise ValueError("a shift cannot start at 24:00")
    return Shift(days=days, start=start, end=end, text=text.strip())


def parse_days(text: str) -> frozenset[int]:
    """``"mon-fri"``, ``"sat,sun"``, ``"daily"`` (lower case) -> weekdays, Monday = 0."""
    days: set[int] = set()
    for part in text.split(","):
        if part == "daily":
            days.update(range(7))
            continue
        first, _, last = part.partition("-")
        if first not in _DAYS or (last and last not in _DAYS):
            raise ValueError(f"unknown day in {part!r} (days: {', '.join(_DAYS)}, or daily)")
        a, b = _DAYS.index(first), _DAYS.index(last or first)
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return frozenset(days)


def shift_bounds(shift: Shift, day: dt.date, tz: ZoneInfo) -> tuple[float, float]:
    """Epoch seconds when ``shift`` starting on local ``day`` begins and ends."""
    def at(date: dt.date, minutes: int) -> float:
        date += dt.timedelta(days=minutes // (24 * 60))
        minutes %= 24 * 60
        local = dt.datetime.combine(date, dt.time(minutes // 60, minutes % 60), tzinfo=tz)
        return local.timestamp()

    end = shift.end if shift.end > shift.start else shift.end + 24 * 60
    return at(day, shift.start), at(day, end)


def intervals(shifts: Iterable[Shift], now: float, tz: ZoneInfo) -> list[tuple[float, float]]:
    """The times of ``shifts`` that start from yesterday to a week ahead, local time."""
    today = dt.datetime.fromtimestamp(now, tz).date()
    out = []
    for offset in range(-1, 8):
        day = today + dt.timedelta(days=offset)
        for shift in shifts:
            if day.weekday() in shift.days:
                out.append(shift_bounds(shift, day, tz))
    return out


def within(shifts: Iterable[Shift], now: float, tz: ZoneInfo) -> bool:
    """Whether ``now`` falls in one of ``shifts`` (a responder's, the board's hours)."""
    return any(start <= now < end for start, end in intervals(shifts, now, tz))


def next_change(shifts: Iterable[Shift], now: float, tz: ZoneInfo) -> float | None:
    """The next start or end of one of ``shifts`` after ``now`` (None: no shifts)."""
    return min((t for interval in intervals(shifts, now, tz) for t in interval if t > now),
               default=None)


class Roster:
    def __init__(self, responders: Iterable[ResponderConfig], timezone: str) -> None:
        self.responders = {r.id: r for r in responders}
        self.tz = ZoneInfo(timezone)
        self.overrides: dict[str, Override] = {}

    def on_shift(self, responder_id: str, now: float) -> bool:
        responder = self._get(responder_id)
        return not responder.shifts or within(responder.shifts, now, self.tz)

    def on_duty(self, responder_id: str, now: float) -> bool:
        override = self.overrides.get(responder_id)
        if override is not None and (override.until is None or now < override.until):
            return override.on
        return self.on_shift(responder_id, now)

    def next_boundary(self, responder_id: str, now: float) -> float | None:
        """The next start or end of one of the responder's shifts (None: no shifts)."""
        return next_change(self._get(responder_id).shifts, now, self.tz)

    def set_duty(self, responder_id: str, on: bool, now: float, by: str, via: str) -> Override:
        """Check a responder in or out until their next shift boundary."""
        override = Override(responder_id, on, now, self.next_boundary(responder_id, now), by, via)
        self.overrides[responder_id] = override
        return override

    def restore(self, overrides: Iterable[dict[str, Any]], now: float) -> None:
        for snap in overrides:
            if snap["responder"] not in self.responders:
                continue  # no longer in the config
            if snap["until"] is not None and snap["until"] <= now:
                continue
            self.overrides[snap["responder"]] = Override(
                snap["responder"], bool(snap["on"]), snap["at"], snap["until"], snap["by"],
                snap["via"])

    def duty_view(self, now: float) -> list[dict[str, Any]]:
        """Every responder's duty as the API shows it (no contact details)."""
        out = []
        for rid, responder in self.responders.items():
            override = self.overrides.get(rid)
            active = override is not None and (override.until is None or now < override.until)
            out.append({
                "id": rid,
                "name": responder.name,
                "roles": list(responder.roles),
                "on_duty": self.on_duty(rid, now),
                "on_shift": self.on_shift(rid, now),
                "shifts": [s.text for s in responder.shifts],
                "override": override.snapshot() if active and override else None,
            })
        return out

    def on_duty_by_role(self, now: float) -> dict[str, int]:
        counts: dict[str, int] = {}
        for rid, responder in self.responders.items():
            for role in responder.roles:
                counts[role] = counts.get(role, 0) + int(self.on_duty(rid, now))
        return counts

    def _get(self, responder_id: str) -> ResponderConfig:
        responder = self.responders.get(responder_id)
        if responder is None:
            raise UnknownResponder(responder_id)
        return responder
