"""``boothwatch report``: incidents and response times, read from the SQLite store.

Usage::

    boothwatch report --db FILE|URL [--from DATE] [--to DATE] [--booth b1,b3] [--trigger call]
                      [--by booth|trigger|shift|day[,...]] [--incidents] [--fatigue [--run N]]
                      [--format table|csv|json] [--timezone NAME | --config FILE]
                      [--shifts "night=00:00-08:00,day=08:00-16:00,evening=16:00-24:00"]
                      [--longest N]

It reads the store directly (opened read-only, so it is safe while the service
runs), not Prometheus, which keeps no detail: a SQLite file, or a PostgreSQL URL
(``postgresql://user@host:port/db``, its password from BOOTHWATCH_DB_PASSWORD or
libpq's password file), as ``[store]`` names them. docs/coordinators/report.md says
what each figure means and what scripts may rely on in the JSON and CSV; in
short:

* The incidents reported are those with ``raised_at`` in ``[from, to)`` (a DATE
  is midnight in the report's time zone), of the ``--booth`` booths and with
  one of the ``--trigger`` first triggers when given.
* The time zone is ``--timezone``, else the site's (``--config``), else the one
  the service recorded in the store when it last started, else UTC. Days and
  shifts are those of ``raised_at`` in it.
* ``--by`` groups by one key or several at once (``--by booth,shift``): booth,
  trigger (the first), shift, day. Shifts are ``--shifts``, else the roster's
  (the responders' shifts in ``--config``, else as the service recorded them in
  the store), else night/day/evening (`monitor.report_time`).
* Figures per group and in total: incidents by priority; time to acknowledge,
  to presence, to resolve, and of the protocol steps to enter and to the first
  naloxone (n, nearest-rank p50 and p90, max); unresolved, outcomes, re-opened,
  highest level, pages sent and failed; and the ``--longest`` incidents with
  their timeline.
* ``--incidents`` lists the incidents behind each group's figures.
* ``--fatigue`` adds alarm fatigue (`monitor.report_fatigue`): the share of
  incidents resolved as non-actionable, incidents per occupied hour, and time
  to acknowledge after a run of non-actionable alarms at the booth against after
  an actionable one.

Cost: one pass over the selected rows in chunks (``fetchmany``), so memory is
the response times (8 bytes each), not the rows (with ``--incidents``, the
listed rows too). A view's JSON is parsed in SQL only for ``reopened`` and in
Python only for the longest incidents. With more than 20,000 rows and stderr a
terminal, a progress bar shows on stderr.
"""

from __future__ import annotations

import heapq
import json
import math
import re
import time
import zoneinfo
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from monitor.codec import incident_from_record, incident_json
from monitor.core.fatigue import DEFAULT_RUN, NON_ACTIONABLE, History
from monitor.core.incident import Trigger
from monitor.core.roster import parse_shift
from monitor.core.settings import PRIORITIES
from monitor.report_fatigue import Fatigue, histories, occupied_seconds
from monitor.report_render import RESPONSES, human, render_csv, render_json, render_table
from monitor.report_time import (
    DEFAULT_SHIFTS,
    Shift,
    ShiftTable,
    load_zone,
    parse_shifts,
    parse_time,
    roster_shifts,
)
from monitor.store import ROSTER_SHIFTS, SITE_TIMEZONE, open_reader
from monitor.store_base import Reader, StoreUnavailable

__all__ = ["DEFAULT_SHIFTS", "build_report", "human", "load_zone", "nearest_rank",
           "open_store", "parse_shifts", "parse_time", "render_csv", "render_json",
           "render_table"]

GROUPINGS = ("booth", "trigger", "shift", "day")
TRIGGERS = tuple(t.value for t in Trigger)
FORMATS = ("table", "csv", "json")
DEFAULT_LONGEST = 5
PROGRESS_MIN_ROWS = 20_000
CHUNK = 5_000



def _select(db: Reader) -> str:
    return (
        f"SELECT i.id, i.booth, i.priority, {db.json_field('i.triggers', 0)}, i.max_level,"
        " i.raised_at, i.acknowledged_at, i.presence_at, i.resolved_at, i.outcome,"
        f" {db.json_field('i.view', 'reopened')},"
        # sum(), not count() with status = ?: that makes SQLite pick the status index
        " (SELECT sum(CASE WHEN p.status = 'sent' THEN 1 ELSE 0 END) FROM pages p"
        " WHERE p.incident = i.id),"
        " (SELECT sum(CASE WHEN p.status = 'failed' THEN 1 ELSE 0 END) FROM pages p"
        " WHERE p.incident = i.id),"
        f" {_protocol_columns(db)} FROM incidents i WHERE i.raised_at >= ? AND i.raised_at < ?"
    )


class ReportError(Exception):
    """The store cannot be read (missing, unreachable, not a boothwatch store)."""


def parse_by(text: str) -> tuple[str, ...]:
    """``"booth,shift"`` -> the grouping keys; ValueError names a wrong one."""
    keys = tuple(k.strip() for k in text.split(","))
    for key in keys:
        if key not in GROUPINGS:
            raise ValueError(f"--by: {key!r} is not one of {', '.join(GROUPINGS)}")
    if len(set(keys)) < len(keys):
        raise ValueError(f"--by: {text!r} names a key twice")
    return keys


def parse_list(text: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip())) if text else ()


# --------------------------------------------------------------------------- figures


def nearest_rank(ordered: Sequence[float], p: float) -> float:
    """The nearest-rank p-th percentile of sorted, non-empty values."""
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def summarize(values: Iterable[float]) -> dict[str, Any]:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0, "p50": None, "p90": None, "max": None}
    return {"n": len(ordered), "p50": round(nearest_rank(ordered, 50), 3),
            "p90": round(nearest_rank(ordered, 90), 3), "max": round(ordered[-1], 3)}


@dataclass(slots=True)
class _Group:
    incidents: int = 0
    priority: Counter[str] = field(default_factory=Counter)
    times: tuple[array[float], ...] = field(
        default_factory=lambda: tuple(array("d") for _ in RESPONSES))
    outcomes: Counter[str] = field(default_factory=Counter)
    unresolved: int = 0
    reopened: int = 0
    max_level: int = 0
    sent: int = 0
    failed: int = 0
    fatigue: Fatigue = field(default_factory=Fatigue)
    items: list[dict[str, Any]] = field(default_factory=list)

    def absorb(self, other: _Group) -> None:
        """Add another group's figures (for the total)."""
        self.incidents += other.incidents
        self.priority.update(other.priority)
        for mine, theirs in zip(self.times, other.times, strict=True):
            mine.extend(theirs)
        self.outcomes.update(other.outcomes)
        self.unresolved += other.unresolved
        self.reopened += other.reopened
        self.max_level = max(self.max_level, other.max_level)
        self.sent += other.sent
        self.failed += other.failed
        self.fatigue.absorb(other.fatigue)

    def figures(self, occupied: float | None) -> dict[str, Any]:
        """The group's figures; with `occupied` (seconds), its alarm fatigue too."""
        priority: dict[str, int] = {p: self.priority.get(p, 0) for p in PRIORITIES}
        priority.update(sorted((p, n) for p, n in self.priority.items() if p not in priority))
        out: dict[str, Any] = {"incidents": self.incidents, "priority": priority}
        for name, values in zip(RESPONSES, self.times, strict=True):
            out[name] = summarize(values)
        out["unresolved"] = self.unresolved
        out["outcomes"] = dict(sorted(self.outcomes.items()))
        out["reopened"] = self.reopened
        out["max_level"] = self.max_level
        out["pages"] = {"sent": self.sent, "failed": self.failed}
        if occupied is not None:
            out["fatigue"] = self.fatigue.figures(self.incidents, occupied, summarize)
        return out


def _natural(key: str) -> tuple[Any, ...]:
    """Sort key: "b2" before "b10"."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                 for part in re.split(r"(\d+)", key))


# --------------------------------------------------------------------------- reading


def open_store(where: str | Path, password: str | None = None) -> Reader:
    """The store (a SQLite file or a PostgreSQL URL) opened read-only: the service may be
    writing it."""
    try:
        return open_reader(str(where), password)
    except StoreUnavailable as exc:
        raise ReportError(str(exc)) from None


def _meta(db: Reader, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return str(row[0]) if row else None


def store_timezone(db: Reader) -> str | None:
    """The site's time zone, as the service recorded it when it last started."""
    return _meta(db, SITE_TIMEZONE)


def store_roster(db: Reader) -> tuple[Shift, ...]:
    """The roster's shifts, as the service recorded them when it last started."""
    text = _meta(db, ROSTER_SHIFTS)
    try:
        return roster_shifts(parse_shift(s) for s in json.loads(text)) if text else ()
    except (ValueError, TypeError):  # our own record, but never a reason to fail a report
        return ()


def build_report(
    db: Reader,
    *,
    start: datetime | None,
    end: datetime | None,
    by: str | Sequence[str],
    tz: zoneinfo.ZoneInfo,
    shifts: Sequence[Shift] = (),
    longest: int = DEFAULT_LONGEST,
    now: float | None = None,
    progress: TextIO | None = None,
    progress_min_rows: int = PROGRESS_MIN_ROWS,
    booths: Sequence[str] = (),
    triggers: Sequence[str] = (),
    incidents: bool = False,
    fatigue: bool = False,
    run: int = DEFAULT_RUN,
) -> dict[str, Any]:
    """The report as the JSON object docs/coordinators/report.md describes."""
    keys = parse_by(by) if isinstance(by, str) else tuple(by)
    if "shift" in keys and not shifts:
        shifts = parse_shifts(DEFAULT_SHIFTS)
    table = ShiftTable(shifts)
    now = time.time() if now is None else now
    end = end or datetime.fromtimestamp(now, tz)
    lo = start.timestamp() if start is not None else -math.inf
    hi = end.timestamp()
    if lo >= hi:
        raise ValueError("from must be before to")
    age_end = min(hi, now)  # open incidents: their age at the report's end
    where = ""
    params: list[Any] = [lo, hi]
    if booths:
        where = f" AND i.booth IN ({','.join('?' * len(booths))})"
        params += booths
    wanted = frozenset(triggers)
    local_keys = "shift" in keys or "day" in keys

    groups: dict[tuple[str, ...], _Group] = {}
    top: list[tuple[float, float, str]] = []  # min-heap of the longest (duration, -raised, id)
    booth_history = histories(db, lo, booths, run) if fatigue else {}
    bar: tqdm[Any] | None = None
    if progress is not None:
        (total_rows,) = db.execute(
            f"SELECT count(*) FROM incidents i WHERE i.raised_at >= ? AND i.raised_at < ?"
            f"{where}", params).fetchone()
        if total_rows > progress_min_rows:
            bar = tqdm(total=total_rows, file=progress, desc="reading incidents",
                       unit=" incidents", leave=False, dynamic_ncols=True)
    fromts = datetime.fromtimestamp
    try:
        # in raised order: a booth's earlier alarms come first (alarm fatigue)
        select = _select(db)
        cur = db.execute(f"{select}{where} ORDER BY i.raised_at, i.id", params)
        while rows := cur.fetchmany(CHUNK):
            for (iid, booth, priority, trigger, max_level, raised, acked, presence, resolved,
                 outcome, reopened, sent, failed, entered, naloxone) in rows:
                trigger = trigger or "?"
                after = None
                if fatigue:  # every trigger is the booth's history, whatever is reported
                    history = booth_history.get(booth) or booth_history.setdefault(
                        booth, History(run))
                    after = history.after()
                    history.add(outcome)
                if wanted and trigger not in wanted:
                    continue
                local = fromts(raised, tz) if local_keys else None
                key = tuple(
                    booth if k == "booth" else trigger if k == "trigger"
                    else table.of(local) if k == "shift" and local is not None
                    else local.date().isoformat() if local is not None else "?"
                    for k in keys)
                g = groups.get(key)
                if g is None:
                    g = groups[key] = _Group()
                g.incidents += 1
                g.priority[priority] += 1
                ack_t, presence_t, resolve_t, *protocol_t = g.times
                if entered is not None or naloxone is not None:
                    _protocol_times(protocol_t, raised, (entered, naloxone))
                if acked is not None:
                    ack_t.append(acked - raised)
                    if after is not None:
                        g.fatigue.after(after, acked - raised)
                if presence is not None:
                    presence_t.append(presence - raised)
                if resolved is not None:
                    duration = resolved - raised
                    resolve_t.append(duration)
                    g.outcomes[outcome or "unspecified"] += 1
                    g.fatigue.outcome(outcome)
                else:
                    duration = max(0.0, age_end - raised)
                    g.unresolved += 1
                if reopened:
                    g.reopened += 1
                if max_level > g.max_level:
                    g.max_level = max_level
                g.sent += sent or 0
                g.failed += failed or 0
                if incidents:
                    g.items.append(_item(iid, booth, trigger, priority, raised, acked,
                                         presence, resolved, outcome, tz, fatigue, after))
                if longest > 0:  # ties: the earlier raised ranks higher
                    if len(top) < longest:
                        heapq.heappush(top, (duration, -raised, iid))
                    elif (duration, -raised) > top[0][:2]:
                        heapq.heapreplace(top, (duration, -raised, iid))
            if bar is not None:
                bar.update(len(rows))
    finally:
        if bar is not None:
            bar.close()

    occupied: dict[tuple[str, ...], float] = {}
    occupied_total = 0.0
    time_keys = tuple(k for k in keys if k != "trigger")
    if fatigue:
        occupied, occupied_total = occupied_seconds(
            db, lo, age_end, tz, time_keys, table, booths)
    total = _Group()
    for g in groups.values():
        total.absorb(g)
    order = {s.name: n for n, s in enumerate(shifts)}

    def sort_key(key: tuple[str, ...]) -> tuple[Any, ...]:
        return tuple((order.get(v, len(order)), v) if k == "shift" else _natural(v)
                     for k, v in zip(keys, key, strict=True))

    def group_json(key: tuple[str, ...], g: _Group) -> dict[str, Any]:
        part = tuple(v for k, v in zip(keys, key, strict=True) if k != "trigger")
        out = {"key": " / ".join(key), "keys": dict(zip(keys, key, strict=True)),
               **g.figures(occupied.get(part, 0.0) if fatigue else None)}
        if incidents:
            out["list"] = g.items
        return out

    report: dict[str, Any] = {
        "from": start.isoformat() if start is not None else None,
        "to": end.isoformat(),
        "by": ",".join(keys),
        "timezone": str(tz),
        "shifts": [s.json() for s in shifts],
        "groups": [group_json(k, groups[k]) for k in sorted(groups, key=sort_key)],
        "total": total.figures(occupied_total if fatigue else None),
        "longest": _longest(db, sorted(top, reverse=True)),
        "filters": {"booth": list(booths), "trigger": list(triggers)},
        "listed": incidents,
    }
    if fatigue:
        report["fatigue"] = {"run": run, "non_actionable": sorted(NON_ACTIONABLE)}
    return report


def _protocol_columns(db: Reader) -> str:
    """The select list of the first ``entered`` and ``naloxone`` of each incident; NULLs
    from a store made before protocol steps (read-only here: the service adds the table)."""
    if not db.has("steps"):
        return "NULL, NULL"
    return ", ".join(f"(SELECT min(s.at) FROM steps s WHERE s.incident = i.id AND s.step = "
                     f"'{step}')" for step in ("entered", "naloxone"))


def _protocol_times(times: Sequence[array[float]], raised: float,
                    stamps: Sequence[float | None]) -> None:
    """Add an incident's time to enter and to the first naloxone, where it has them."""
    for into, at in zip(times, stamps, strict=True):
        if at is not None:
            into.append(at - raised)


def _item(iid: str, booth: str, trigger: str, priority: str, raised: float,
          acked: float | None, presence: float | None, resolved: float | None,
          outcome: str | None, tz: zoneinfo.ZoneInfo, fatigue: bool,
          after: str | None) -> dict[str, Any]:
    """One incident behind a group's figures (--incidents)."""
    def since(at: float | None) -> float | None:
        return None if at is None else round(at - raised, 3)

    item = {"id": iid, "booth": booth, "trigger": trigger, "priority": priority,
            "raised_at": datetime.fromtimestamp(raised, tz).isoformat(timespec="seconds"),
            "to_acknowledge": since(acked), "to_presence": since(presence),
            "to_resolve": since(resolved), "outcome": outcome, "open": resolved is None}
    if fatigue:
        item["after"] = after
    return item


def _longest(
    db: Reader, top: list[tuple[float, float, str]]
) -> list[dict[str, Any]]:
    if not top:
        return []
    ids = [iid for _, _, iid in top]
    marks = ",".join("?" * len(ids))
    views = dict(db.execute(f"SELECT id, view FROM incidents WHERE id IN ({marks})", ids))
    out = []
    for duration, _, iid in top:
        view = incident_from_record(json.loads(views[iid]))
        item = incident_json(view)
        item["duration"] = round(duration, 3)
        item["open"] = view.resolved_at is None
        out.append(item)
    return out
