"""Alarm fatigue for `boothwatch report --fatigue`: which booth's sensor needs retuning.

Per group (``--by``) and in total:

* ``classed``, ``non_actionable``, ``share``: incidents with an outcome a person
  recorded (a sensor's ``session_ended`` or none says nothing of the alarm),
  those recorded as ``false_alarm`` or ``no_one_there``, and their share of the
  classed ones (null with none);
* ``occupied_hours``: hours the group's booths were occupied within the report's
  span (sessions from the store, cut at ``from`` and at ``to`` or now; split
  between shifts and days by local wall-clock time); ``per_occupied_hour``:
  incidents per occupied hour (null with no occupied time). Grouped by trigger,
  each trigger's incidents are over the same occupied hours;
* ``to_acknowledge_after_run`` and ``to_acknowledge_after_actionable``: n, p50,
  p90 and max of the time to acknowledge of incidents raised after a run of
  non-actionable alarms at their booth, and after an actionable one
  (`monitor.core.fatigue` says which are which; the booth's alarms before
  ``from`` count, and every trigger's, whatever ``--trigger`` reports);
  ``drift``: the first p50 minus the second (null unless both have one), the
  slowing that alarm-fatigue research measures.
"""

from __future__ import annotations

import math
import zoneinfo
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from monitor.core.fatigue import After, History, actionable
from monitor.report_time import DAY, WEEK, ShiftTable
from monitor.store import recent_outcomes
from monitor.store_base import Reader

Summarize = Callable[[Iterable[float]], dict[str, Any]]


@dataclass(slots=True)
class Fatigue:
    """A group's fatigue figures as the rows go by."""

    classed: int = 0
    non_actionable: int = 0
    after_run: array[float] = field(default_factory=lambda: array("d"))
    after_actionable: array[float] = field(default_factory=lambda: array("d"))

    def after(self, after: After, to_acknowledge: float) -> None:
        (self.after_run if after == "run" else self.after_actionable).append(to_acknowledge)

    def outcome(self, outcome: str | None) -> None:
        classed = actionable(outcome)
        if classed is not None:
            self.classed += 1
            self.non_actionable += not classed

    def absorb(self, other: Fatigue) -> None:
        self.classed += other.classed
        self.non_actionable += other.non_actionable
        self.after_run.extend(other.after_run)
        self.after_actionable.extend(other.after_actionable)

    def figures(self, incidents: int, occupied: float, summarize: Summarize
                ) -> dict[str, Any]:
        hours = occupied / 3600
        run, calm = summarize(self.after_run), summarize(self.after_actionable)
        return {
            "classed": self.classed,
            "non_actionable": self.non_actionable,
            "share": round(self.non_actionable / self.classed, 3) if self.classed else None,
            "occupied_hours": round(hours, 3),
            "per_occupied_hour": round(incidents / hours, 3) if hours else None,
            "to_acknowledge_after_run": run,
            "to_acknowledge_after_actionable": calm,
            "drift": (round(run["p50"] - calm["p50"], 3)
                      if run["p50"] is not None and calm["p50"] is not None else None),
        }


def _booths(booths: Sequence[str]) -> tuple[str, list[Any]]:
    if not booths:
        return "", []
    return f" AND booth IN ({','.join('?' * len(booths))})", list(booths)


def histories(db: Reader, before: float, booths: Sequence[str],
              run: int) -> dict[str, History]:
    """Each booth's history of the `run` classed alarms raised before `before`."""
    out: dict[str, History] = {}
    if before == -math.inf:
        return out
    for booth, outcome in db.execute(*recent_outcomes(before, booths, run)):
        out.setdefault(booth, History(run)).add(outcome)
    return out


def occupied_seconds(
    db: Reader, lo: float, hi: float, tz: zoneinfo.ZoneInfo,
    keys: Sequence[str], table: ShiftTable, booths: Sequence[str],
) -> tuple[dict[tuple[str, ...], float], float]:
    """Occupied seconds in ``[lo, hi)`` per value of `keys` (booth, shift, day), and in all."""
    where, params = _booths(booths)
    per: dict[tuple[str, ...], float] = defaultdict(float)
    total = 0.0
    split = "shift" in keys or "day" in keys
    for booth, started, ended in db.execute(
            "SELECT booth, started_at, ended_at FROM sessions WHERE started_at < ?"
            f" AND coalesce(ended_at, ?) > ?{where}", [hi, hi, lo, *params]):
        t, end = max(started, lo), min(ended if ended is not None else hi, hi)
        total += max(0.0, end - t)
        while t < end:
            local = datetime.fromtimestamp(t, tz) if split else None
            step = end - t
            if local is not None:
                minutes = table.minutes_left(local) if "shift" in keys else WEEK
                if "day" in keys:
                    minutes = min(minutes, DAY - local.hour * 60 - local.minute)
                step = min(step, max(1e-3, minutes * 60 - local.second
                                     - local.microsecond / 1e6))
            if local is None:  # grouped by booth (or by trigger only): no split
                key = tuple(booth for _ in keys)
            else:
                key = tuple(booth if k == "booth" else table.of(local) if k == "shift"
                            else local.date().isoformat() for k in keys)
            per[key] += step
            t += step
    return dict(per), total
