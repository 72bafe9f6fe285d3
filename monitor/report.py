"""``boothwatch report``: incidents and response times, read from the store.

Usage::

    boothwatch report --db FILE|URL [--from DATE] [--to DATE] [--by booth|trigger|shift|day]
                      [--format table|csv|json] [--timezone NAME | --config FILE]
                      [--shifts "night=00:00-08:00,day=08:00-16:00,evening=16:00-24:00"]
                      [--longest N]

It reads the store directly (opened read-only, so it is safe while the service
runs), not Prometheus, which keeps no detail: a SQLite file, or a PostgreSQL URL
(``postgresql://user@host:port/db``, its password from BOOTHWATCH_DB_PASSWORD or
libpq's password file), as ``[store]`` names them. Selection and grouping:

* The incidents reported are those with ``raised_at`` in ``[from, to)``. A DATE
  is ``YYYY-MM-DD``, midnight at the start of that day in the report's time
  zone, so ``--from 2026-11-23 --to 2026-11-30`` is one week; a full ISO 8601
  time (``2026-11-23T08:00``, ``...Z``, ``...+01:00``) is taken as it is, in the
  time zone when it has no offset. Without ``--from`` it starts at the first
  incident; without ``--to`` it ends now.
* The time zone is ``--timezone``, else the site's (``[site] timezone``) when
  ``--config`` is given, else the one the service recorded in the store when it
  last started, else UTC. Days and shifts are those of ``raised_at`` in it; the
  times the table shows carry its UTC offset. With ``--config`` and no ``--db``,
  the store is the config's.
* ``--by booth`` groups by booth id, ``trigger`` by the first trigger (the one
  that raised the incident), ``shift`` by the shift ``raised_at`` falls in,
  ``day`` by the local date of ``raised_at``.
* Shifts: ``--shifts "name=HH:MM-HH:MM,..."``, local wall-clock times, end
  exclusive, ``24:00`` for midnight at the end, a shift may cross midnight
  (``night=22:00-06:00``); shifts may not overlap; an incident in no shift is in
  the group ``other``. The default is night 00:00-08:00, day 08:00-16:00,
  evening 16:00-24:00. The staff roster (a later issue) will supply the shifts;
  ``--shifts`` will then override it.

Figures, per group and in total:

* ``incidents``; ``priority``: incidents by priority (high, medium, low always present).
* ``to_acknowledge``, ``to_presence``, ``to_resolve``: seconds from ``raised_at``
  to the first ack, the first presence, the resolve (as in the API's
  ``response``). Over the incidents that have that stamp, whose count is ``n``:
  ``p50``, ``p90`` and ``max``, all ``null`` when ``n`` is 0. Percentiles are
  **nearest-rank**: the smallest value with at least p % of the values at or
  below it, so always a time that really happened (p50 of one value is that
  value; p50 of 10, 20, 30, 40 is 20). Values are rounded to milliseconds.
* ``unresolved``: incidents not resolved when the report was made.
  ``outcomes``: resolved incidents by outcome; one resolved without an outcome
  (a clear at the booth, or a sensor) counts as ``unspecified``.
* ``reopened``: incidents re-opened at least once (an ack with nobody at the
  booth by the ack timeout). ``max_level``: the highest escalation level reached
  (0 with no incidents).
* ``pages``: pages of these incidents by status, ``sent`` and ``failed`` (queued,
  retrying and cancelled pages are in neither).

``longest``: the ``--longest`` (default 5) incidents that took longest to
resolve, an incident still open counting by its age at the end of the report
(``--to``, or now if that is later than now). The table shows their timeline.

JSON (``--format json``): one object with these keys, which scripts may rely on::

    {"from": ISO 8601 or null (no --from), "to": ISO 8601, "by": "booth",
     "timezone": "UTC", "shifts": [{"name", "start": "HH:MM", "end": "HH:MM"}],
     "groups": [{"key": "b1", <figures>}, ...], "total": {<figures>},
     "longest": [<incident>, ...]}

    <figures> = "incidents": int, "priority": {"high": int, "medium": int, "low": int},
        "to_acknowledge" | "to_presence" | "to_resolve":
            {"n": int, "p50": s|null, "p90": s|null, "max": s|null},
        "unresolved": int, "outcomes": {outcome: int}, "reopened": int,
        "max_level": int, "pages": {"sent": int, "failed": int}

``from``/``to`` are in the report's time zone with their UTC offset. Groups are
in key order (booths naturally: b2 before b10; shifts in ``--shifts`` order;
days by date). A ``longest`` item is the incident of the API (interface section
7: ``id``, ``booth``, ``priority``, ``state``, ``triggers``, ``raised_at``...,
``response``, ``timeline``; times in UTC) plus ``duration`` (seconds) and
``open`` (true when ``duration`` is its age, not its time to resolve).

CSV (``--format csv``): RFC 4180, a header row then one row per group (no total
row): the group key (its column named after ``--by``), incidents, high, medium,
low, unresolved, reopened, max_level, pages_sent, pages_failed, then ``n``,
``p50``, ``p90``, ``max`` of each response time (``to_acknowledge_p50``...) in
seconds (empty when there is none), then one ``outcome_<name>`` column per
outcome in the report.

Cost: one pass over the selected rows in chunks (``fetchmany``), so memory is
the response times (8 bytes each), not the rows. A view's JSON is parsed in SQL
only for ``reopened`` and in Python only for the longest incidents. With more
than 20,000 rows and stderr a terminal, a progress bar shows on stderr.
"""

from __future__ import annotations

import argparse
import csv
import heapq
import io
import json
import math
import os
import re
import sys
import textwrap
import time
import zoneinfo
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from monitor.codec import incident_from_record, incident_json
from monitor.core.settings import PRIORITIES
from monitor.store import SITE_TIMEZONE, open_reader
from monitor.store_base import DB_PASSWORD_ENV, Reader, StoreUnavailable

GROUPINGS = ("booth", "trigger", "shift", "day")
FORMATS = ("table", "csv", "json")
DEFAULT_SHIFTS = "night=00:00-08:00,day=08:00-16:00,evening=16:00-24:00"
DEFAULT_LONGEST = 5
NO_SHIFT = "other"
RESPONSES = ("to_acknowledge", "to_presence", "to_resolve")
PROGRESS_MIN_ROWS = 20_000
CHUNK = 5_000
WIDTH = 100  # the table fits a terminal this wide (unless group keys are very long)
TIMELINE_HEAD, TIMELINE_TAIL = 12, 4  # timeline entries shown per longest incident



def _select(db: Reader) -> str:
    return (
        f"SELECT i.id, i.booth, i.priority, {db.json_field('i.triggers', 0)}, i.max_level,"
        " i.raised_at, i.acknowledged_at, i.presence_at, i.resolved_at, i.outcome,"
        f" {db.json_field('i.view', 'reopened')},"
        # sum(), not count() with status = ?: that makes SQLite pick the status index
        " (SELECT sum(CASE WHEN p.status = 'sent' THEN 1 ELSE 0 END) FROM pages p"
        " WHERE p.incident = i.id),"
        " (SELECT sum(CASE WHEN p.status = 'failed' THEN 1 ELSE 0 END) FROM pages p"
        " WHERE p.incident = i.id)"
        " FROM incidents i WHERE i.raised_at >= ? AND i.raised_at < ?"
    )


class ReportError(Exception):
    """The store cannot be read (missing, unreachable, not a boothwatch store)."""


# --------------------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class Shift:
    name: str
    start: int  # minutes after local midnight, 0..1439
    end: int  # exclusive, 0..1440; <= start for a shift that crosses midnight

    def minutes(self) -> Iterable[int]:
        length = (self.end - self.start) % 1440 or 1440
        return ((self.start + m) % 1440 for m in range(length))


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
        if int(m[3]) > 59 or int(m[5]) > 59 or start >= 1440 or end > 1440:
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
                raise ValueError(f"{name} overlaps {owner[minute]} at {_hhmm(minute)}")
            owner[minute] = name
        shifts.append(shift)
    return tuple(shifts)


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _shift_json(shift: Shift) -> dict[str, str]:
    return {"name": shift.name, "start": _hhmm(shift.start), "end": _hhmm(shift.end)}


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

    def figures(self, times: Sequence[Iterable[float]] | None = None) -> dict[str, Any]:
        priority: dict[str, int] = {p: self.priority.get(p, 0) for p in PRIORITIES}
        priority.update(sorted((p, n) for p, n in self.priority.items() if p not in priority))
        out: dict[str, Any] = {"incidents": self.incidents, "priority": priority}
        for name, values in zip(RESPONSES, times or self.times, strict=True):
            out[name] = summarize(values)
        out["unresolved"] = self.unresolved
        out["outcomes"] = dict(sorted(self.outcomes.items()))
        out["reopened"] = self.reopened
        out["max_level"] = self.max_level
        out["pages"] = {"sent": self.sent, "failed": self.failed}
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


def store_timezone(db: Reader) -> str | None:
    """The site's time zone, as the service recorded it when it last started."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (SITE_TIMEZONE,)).fetchone()
    return str(row[0]) if row else None


def build_report(
    db: Reader,
    *,
    start: datetime | None,
    end: datetime | None,
    by: str,
    tz: zoneinfo.ZoneInfo,
    shifts: Sequence[Shift] = (),
    longest: int = DEFAULT_LONGEST,
    now: float | None = None,
    progress: TextIO | None = None,
    progress_min_rows: int = PROGRESS_MIN_ROWS,
) -> dict[str, Any]:
    """The report as the JSON object described in the module docstring."""
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {GROUPINGS}")
    if by == "shift" and not shifts:
        shifts = parse_shifts(DEFAULT_SHIFTS)
    now = time.time() if now is None else now
    end = end or datetime.fromtimestamp(now, tz)
    lo = start.timestamp() if start is not None else -math.inf
    hi = end.timestamp()
    if lo >= hi:
        raise ValueError("from must be before to")
    age_end = min(hi, now)  # open incidents: their age at the report's end

    shift_of: list[str] = [NO_SHIFT] * 1440
    for shift in shifts:
        for minute in shift.minutes():
            shift_of[minute] = shift.name

    groups: dict[str, _Group] = {}
    top: list[tuple[float, float, str]] = []  # min-heap of the longest (duration, -raised, id)
    bar: tqdm[Any] | None = None
    if progress is not None:
        (total_rows,) = db.execute(
            "SELECT count(*) FROM incidents WHERE raised_at >= ? AND raised_at < ?", (lo, hi)
        ).fetchone()
        if total_rows > progress_min_rows:
            bar = tqdm(total=total_rows, file=progress, desc="reading incidents",
                       unit=" incidents", leave=False, dynamic_ncols=True)
    fromts = datetime.fromtimestamp
    try:
        cur = db.execute(_select(db), (lo, hi))
        while rows := cur.fetchmany(CHUNK):
            for (iid, booth, priority, trigger, max_level, raised, acked, presence, resolved,
                 outcome, reopened, sent, failed) in rows:
                if by == "booth":
                    key = booth
                elif by == "trigger":
                    key = trigger or "?"
                else:
                    local = fromts(raised, tz)
                    key = (local.date().isoformat() if by == "day"
                           else shift_of[local.hour * 60 + local.minute])
                g = groups.get(key)
                if g is None:
                    g = groups[key] = _Group()
                g.incidents += 1
                g.priority[priority] += 1
                ack_t, presence_t, resolve_t = g.times
                if acked is not None:
                    ack_t.append(acked - raised)
                if presence is not None:
                    presence_t.append(presence - raised)
                if resolved is not None:
                    duration = resolved - raised
                    resolve_t.append(duration)
                    g.outcomes[outcome or "unspecified"] += 1
                else:
                    duration = max(0.0, age_end - raised)
                    g.unresolved += 1
                if reopened:
                    g.reopened += 1
                if max_level > g.max_level:
                    g.max_level = max_level
                g.sent += sent or 0
                g.failed += failed or 0
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

    total = _Group()
    for g in groups.values():
        total.incidents += g.incidents
        total.priority.update(g.priority)
        total.outcomes.update(g.outcomes)
        total.unresolved += g.unresolved
        total.reopened += g.reopened
        total.max_level = max(total.max_level, g.max_level)
        total.sent += g.sent
        total.failed += g.failed
    all_times = []
    for i in range(len(RESPONSES)):
        joined = array("d")
        for g in groups.values():
            joined.extend(g.times[i])
        all_times.append(joined)
    order = {s.name: n for n, s in enumerate(shifts)}
    keys = sorted(groups, key=(
        (lambda k: (order.get(k, len(order)), k)) if by == "shift" else _natural
    ))
    return {
        "from": start.isoformat() if start is not None else None,
        "to": end.isoformat(),
        "by": by,
        "timezone": str(tz),
        "shifts": [_shift_json(s) for s in shifts],
        "groups": [{"key": k, **groups[k].figures()} for k in keys],
        "total": total.figures(all_times),
        "longest": _longest(db, sorted(top, reverse=True)),
    }


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


# --------------------------------------------------------------------------- output


def human(seconds: float | None) -> str:
    """A duration for people: 7s, 2.5s, 1m05s, 2h03m, 3d04h; "-" for none."""
    if seconds is None:
        return "-"
    if seconds < 9.95 and seconds != int(seconds):
        return f"{seconds:.1f}s"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def render_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2) + "\n"


def render_csv(report: dict[str, Any]) -> str:
    outcomes = sorted({o for g in report["groups"] for o in g["outcomes"]})
    priorities = list(dict.fromkeys(p for g in report["groups"] for p in g["priority"]))
    priorities = priorities or list(PRIORITIES)
    header = [report["by"], "incidents", *priorities, "unresolved", "reopened", "max_level",
              "pages_sent", "pages_failed"]
    header += [f"{r}_{s}" for r in RESPONSES for s in ("n", "p50", "p90", "max")]
    header += [f"outcome_{o}" for o in outcomes]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(header)
    for g in report["groups"]:
        row: list[Any] = [g["key"], g["incidents"], *(g["priority"].get(p, 0) for p in priorities),
                          g["unresolved"], g["reopened"], g["max_level"], g["pages"]["sent"],
                          g["pages"]["failed"]]
        for r in RESPONSES:
            row += ["" if g[r][s] is None else g[r][s] for s in ("n", "p50", "p90", "max")]
        row += [g["outcomes"].get(o, 0) for o in outcomes]
        writer.writerow(row)
    return buf.getvalue()


def _local(at: float, tz: zoneinfo.ZoneInfo, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return datetime.fromtimestamp(at, tz).strftime(fmt)


def offset(when: datetime) -> str:
    """``+01:00``: the UTC offset as ISO 8601 writes it."""
    z = when.strftime("%z")
    return f"{z[:3]}:{z[3:]}"


def _label(report: dict[str, Any], key: str) -> str:
    if report["by"] == "day":
        return f"{date.fromisoformat(key):%a} {key}"
    return key


def _widths(rows: list[list[str]]) -> list[int]:
    return [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]


def _table(rows: list[list[str]], right_from: int = 1) -> list[str]:
    """Rows of cells as aligned lines: the first `right_from` columns left, the rest right."""
    widths = _widths(rows)
    return [
        "  ".join(cell.ljust(w) if c < right_from else cell.rjust(w)
                  for c, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
        for row in rows
    ]


def _span(report: dict[str, Any], tz: zoneinfo.ZoneInfo) -> str:
    def show(text: str) -> str:
        when = datetime.fromisoformat(text).astimezone(tz)
        midnight = when.time() == datetime.min.time()
        return f"{when:%Y-%m-%d}" if midnight else f"{when:%Y-%m-%d %H:%M}"

    if report["from"] is None:
        return f"before {show(report['to'])}"
    return f"from {show(report['from'])} to {show(report['to'])} (exclusive)"


def _zone(report: dict[str, Any], tz: zoneinfo.ZoneInfo) -> str:
    """``Europe/Lisbon time (UTC+00:00)``; both offsets when the span crosses a change."""
    offsets = dict.fromkeys(offset(datetime.fromisoformat(report[end]).astimezone(tz))
                            for end in ("from", "to") if report[end] is not None)
    return f"{report['timezone']} time (UTC{' to '.join(offsets)})"


def render_table(report: dict[str, Any]) -> str:
    tz = zoneinfo.ZoneInfo(report["timezone"])
    by = report["by"]
    groups = report["groups"]
    total = report["total"]
    lines = [f"Incidents raised {_span(report, tz)}, {_zone(report, tz)}, by {by}"]
    if by == "shift":
        lines.append("shifts: " + ", ".join(
            f"{s['name']} {s['start']}-{s['end']}" for s in report["shifts"]))
    if not groups:
        lines.append("No incidents.")
        return "\n".join(lines) + "\n"
    everything = [*((_label(report, g["key"]), g) for g in groups), ("total", total)]

    lines.append("")
    rows = [[by, "incidents", "high", "medium", "low", "open", "reopened", "max level",
             "pages sent", "failed"]]
    for key, g in everything:
        p = g["priority"]
        rows.append([key, str(g["incidents"]), str(p["high"]), str(p["medium"]), str(p["low"]),
                     str(g["unresolved"]), str(g["reopened"]), str(g["max_level"]),
                     str(g["pages"]["sent"]), str(g["pages"]["failed"])])
    table = _table(rows)
    lines += [*table[:-1], "-" * len(table[0]), table[-1]]

    lines += ["", "Response times from raised (n: incidents with that stamp; "
                  "nearest-rank percentiles)"]
    rows = [[by] + ["n", "p50", "p90", "max"] * 3]
    for key, g in everything:
        row = [key]
        for r in RESPONSES:
            row += [str(g[r]["n"])] + [human(g[r][s]) for s in ("p50", "p90", "max")]
        rows.append(row)
    table = _table(rows)
    widths = _widths(rows)
    starts = [sum(widths[:c]) + 2 * c for c in range(len(widths) + 1)]
    titles = ""
    for block, title in enumerate(("to acknowledge", "to presence", "to resolve")):
        first, last = 1 + 4 * block, 4 + 4 * block
        span = starts[last] + widths[last] - starts[first]
        titles = titles.ljust(starts[first]) + title.center(span).rstrip()
    lines += [titles, *table[:-1], "-" * len(table[0]), table[-1]]

    lines += ["", "Outcomes of resolved incidents"]
    key_width = max(len(key) for key, _ in everything)
    for key, g in everything:
        counts = sorted(g["outcomes"].items(), key=lambda kv: (-kv[1], kv[0]))
        # no-break spaces inside an item keep "name count" on one line
        text = ", ".join(f"{o} {n}".replace(" ", "\xa0") for o, n in counts) or "-"
        wrapped = textwrap.wrap(text, WIDTH - key_width - 2, break_on_hyphens=False)
        lines += [f"{key if i == 0 else '':<{key_width}}  {part.replace(chr(0xA0), ' ')}"
                  for i, part in enumerate(wrapped)]

    if report["longest"]:
        count = len(report["longest"])
        title = "The longest incident" if count == 1 else f"The {count} longest incidents"
        lines += ["", f"{title} (time to resolve; open ones by their age at the end of the "
                      "report)"]
        for n, inc in enumerate(report["longest"], 1):
            lines += _incident_lines(n, inc, tz)
    return "\n".join(lines) + "\n"


def _incident_lines(n: int, inc: dict[str, Any], tz: zoneinfo.ZoneInfo) -> list[str]:
    raised = _epoch(inc["raised_at"])
    facts = [f"raised {_local(raised, tz, '%a %Y-%m-%d %H:%M:%S')} "
             f"{offset(datetime.fromtimestamp(raised, tz))}"]
    if inc["open"]:
        facts.append(f"still {inc['state']} after {human(inc['duration'])}")
    else:
        facts.append(f"resolved after {human(inc['duration'])}"
                     + (f" ({inc['outcome']})" if inc["outcome"] else ""))
    if inc["reopened"]:
        facts.append(f"re-opened {inc['reopened']}x")
    facts.append(f"max level {inc['max_level']}")
    lines = [_clip(f"{n}. {inc['id']}  booth {inc['booth']}  {inc['priority']}  "
                   f"{'+'.join(inc['triggers'])}"),
             _clip("   " + ", ".join(facts))]
    timeline = inc["timeline"]
    shown = timeline
    if len(timeline) > TIMELINE_HEAD + TIMELINE_TAIL + 1:
        shown = [*timeline[:TIMELINE_HEAD], None, *timeline[-TIMELINE_TAIL:]]
    for entry in shown:
        if entry is None:
            hidden = len(timeline) - TIMELINE_HEAD - TIMELINE_TAIL
            lines.append(f"     ... {hidden} more entries ...")
            continue
        at = _epoch(entry["at"])
        detail = " ".join(f"{k}={v}" for k, v in entry.items() if k not in ("at", "kind"))
        text = (f"     {_local(at, tz, '%H:%M:%S')} {'+' + human(at - raised):>7}  "
                f"{entry['kind']:<11} {detail}")
        lines.append(_clip(text))
    return lines


def _clip(text: str) -> str:
    return text if len(text) <= WIDTH else text[: WIDTH - 3] + "..."


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="FILE|URL",
                        help="the store: a SQLite file or postgresql://user@host:port/db, its "
                             "password from BOOTHWATCH_DB_PASSWORD (default: the store of "
                             "--config)")
    parser.add_argument("--from", dest="start", metavar="DATE",
                        help="first day (YYYY-MM-DD) or time (ISO 8601); default: all")
    parser.add_argument("--to", dest="end", metavar="DATE",
                        help="end, exclusive: the day after the last; default: now")
    parser.add_argument("--by", choices=GROUPINGS, default="booth", help="grouping (booth)")
    parser.add_argument("--format", choices=FORMATS, default="table", dest="fmt",
                        help="table for people, csv for spreadsheets, json for scripts")
    parser.add_argument("--timezone", metavar="NAME",
                        help="days, shifts and dates are in this zone (default: the site's: "
                             "from --config, else as the service recorded it in the store; "
                             "else UTC)")
    parser.add_argument("--config", metavar="FILE",
                        help="site config: its time zone, and its store when --db is not given")
    parser.add_argument("--shifts", default=DEFAULT_SHIFTS, metavar="SPEC",
                        help=f'name=HH:MM-HH:MM,... local time (default "{DEFAULT_SHIFTS}"; '
                             "the roster will supply them later)")
    parser.add_argument("--longest", type=int, default=DEFAULT_LONGEST, metavar="N",
                        help=f"list the N longest incidents (default {DEFAULT_LONGEST})")


def main(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    """Run ``boothwatch report`` with parsed arguments; 2 for a usage problem, 1 for the store."""
    out = stdout or sys.stdout

    def fail(message: str, code: int = 2) -> int:
        print(f"boothwatch report: {message}", file=sys.stderr)
        return code

    db_path, zone_name = args.db, args.timezone
    password = os.environ.get(DB_PASSWORD_ENV) or None
    if args.config:
        from monitor.config import ConfigError, load_config

        try:
            config = load_config(args.config)
        except ConfigError as exc:
            for problem in exc.problems:
                print(f"config: {problem}", file=sys.stderr)
            return fail(f"{args.config} has problems (--timezone NAME needs no config)")
        zone_name = zone_name or config.site.timezone
        db_path = db_path or config.store.where
        password = password or config.store.password
    if not db_path:
        return fail("--db FILE|URL is required (or --config FILE)")
    try:
        db = open_store(db_path, password)
    except ReportError as exc:
        return fail(str(exc), 1)
    try:
        try:
            tz = load_zone(zone_name or store_timezone(db) or "UTC")
            start = parse_time(args.start, tz) if args.start else None
            end = parse_time(args.end, tz) if args.end else None
            shifts = parse_shifts(args.shifts)
        except ValueError as exc:
            return fail(str(exc))
        if args.longest < 0:
            return fail("--longest must be 0 or more")
        if start is not None and end is not None and start >= end:
            return fail("--from must be before --to (--to is exclusive: give the day after)")
        report = build_report(
            db, start=start, end=end, by=args.by, tz=tz, shifts=shifts,
            longest=args.longest, progress=sys.stderr if sys.stderr.isatty() else None,
        )
    except ReportError as exc:
        return fail(str(exc), 1)
    except ValueError as exc:  # --from without --to, after now
        return fail(str(exc))
    except db.errors as exc:
        return fail(f"{db.where}: {' '.join(str(exc).split())}", 1)
    finally:
        db.close()
    render = {"table": render_table, "csv": render_csv, "json": render_json}[args.fmt]
    out.write(render(report))  # a closed pipe (| head): monitor.cli ends quietly
    return 0

