"""What `boothwatch report` prints: a table for people, CSV for spreadsheets, JSON for scripts.

The report is the JSON object `monitor.report.build_report` makes (its keys are in
docs/coordinators/report.md); each renderer only reads it.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
import zoneinfo
from datetime import date, datetime
from typing import Any

from monitor.core.settings import PRIORITIES

RESPONSES = ("to_acknowledge", "to_presence", "to_resolve", "to_enter", "to_naloxone")
STATS = ("n", "p50", "p90", "max")
WIDTH = 100  # the table fits a terminal this wide (unless group keys are very long)
TIMELINE_HEAD, TIMELINE_TAIL = 12, 4  # timeline entries shown per longest incident
#: the fatigue figures of a group, as CSV columns
FATIGUE_COLUMNS = ("classed", "non_actionable", "share", "occupied_hours", "per_occupied_hour")
AFTER = ("to_acknowledge_after_run", "to_acknowledge_after_actionable")
ITEM_COLUMNS = ("id", "booth", "trigger", "priority", "raised_at", "to_acknowledge",
                "to_presence", "to_resolve", "outcome", "open")


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


def _keys(report: dict[str, Any]) -> list[str]:
    return str(report["by"]).split(",")


def _cells(values: dict[str, Any], names: tuple[str, ...]) -> list[Any]:
    return ["" if values[n] is None else values[n] for n in names]


def render_csv(report: dict[str, Any]) -> str:
    """One row per group; with --incidents, one row per incident behind them."""
    keys = _keys(report)
    fatigue = "fatigue" in report
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    if report.get("listed"):
        columns = ITEM_COLUMNS + (("after",) if fatigue else ())
        writer.writerow([*keys, *columns])
        for g in report["groups"]:
            for item in g["list"]:
                writer.writerow([*g["keys"].values(), *_cells(item, columns)])
        return buf.getvalue()
    outcomes = sorted({o for g in report["groups"] for o in g["outcomes"]})
    priorities = list(dict.fromkeys(p for g in report["groups"] for p in g["priority"]))
    priorities = priorities or list(PRIORITIES)
    header = [*keys, "incidents", *priorities, "unresolved", "reopened", "max_level",
              "pages_sent", "pages_failed"]
    header += [f"{r}_{s}" for r in RESPONSES for s in STATS]
    header += [f"outcome_{o}" for o in outcomes]
    if fatigue:
        header += [*FATIGUE_COLUMNS, *(f"{a}_{s}" for a in AFTER for s in STATS), "drift"]
    writer.writerow(header)
    for g in report["groups"]:
        row: list[Any] = [*g["keys"].values(), g["incidents"],
                          *(g["priority"].get(p, 0) for p in priorities),
                          g["unresolved"], g["reopened"], g["max_level"], g["pages"]["sent"],
                          g["pages"]["failed"]]
        for r in RESPONSES:
            row += _cells(g[r], STATS)
        row += [g["outcomes"].get(o, 0) for o in outcomes]
        if fatigue:
            f = g["fatigue"]
            row += _cells(f, FATIGUE_COLUMNS)
            for a in AFTER:
                row += _cells(f[a], STATS)
            row += _cells(f, ("drift",))
        writer.writerow(row)
    return buf.getvalue()


def _local(at: float, tz: zoneinfo.ZoneInfo, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return datetime.fromtimestamp(at, tz).strftime(fmt)


def offset(when: datetime) -> str:
    """``+01:00``: the UTC offset as ISO 8601 writes it."""
    z = when.strftime("%z")
    return f"{z[:3]}:{z[3:]}"


def _label(group: dict[str, Any]) -> list[str]:
    """A group's key values as the table shows them (a day with its weekday)."""
    return [f"{date.fromisoformat(v):%a} {v}" if k == "day" else v
            for k, v in group["keys"].items()]


def _widths(rows: list[list[str]]) -> list[int]:
    return [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]


def _table(rows: list[list[str]], right_from: int = 1, left_from: int | None = None
           ) -> list[str]:
    """Rows of cells as aligned lines: the first `right_from` columns left, the rest right
    (but those from `left_from` on, left)."""
    widths = _widths(rows)
    left = len(widths) if left_from is None else left_from
    return [
        "  ".join(cell.ljust(w) if c < right_from or c >= left else cell.rjust(w)
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
    keys = _keys(report)
    groups = report["groups"]
    total = report["total"]
    lines = [f"Incidents raised {_span(report, tz)}, {_zone(report, tz)}, by "
             f"{' and '.join(keys)}"]
    filters = [f"{what} {', '.join(values)}" for what, values in report["filters"].items()
               if values]
    if filters:
        lines.append("only " + "; ".join(filters))
    if "shift" in keys:
        lines.append("shifts: " + ", ".join(_shift(s) for s in report["shifts"]))
    if not groups:
        lines.append("No incidents.")
        return "\n".join(lines) + "\n"
    k = len(keys)
    everything = [*((_label(g), g) for g in groups), (["total"] + [""] * (k - 1), total)]

    lines.append("")
    rows = [[*keys, "incidents", "high", "medium", "low", "open", "reopened", "max level",
             "pages sent", "failed"]]
    for key, g in everything:
        p = g["priority"]
        rows.append([*key, str(g["incidents"]), str(p["high"]), str(p["medium"]),
                     str(p["low"]), str(g["unresolved"]), str(g["reopened"]),
                     str(g["max_level"]), str(g["pages"]["sent"]), str(g["pages"]["failed"])])
    lines += _totalled(rows, k)

    lines += ["", "Response times from raised (n: incidents with that stamp; "
                  "nearest-rank percentiles)"]
    lines += _times(everything, keys, RESPONSES[:3],
                    ("to acknowledge", "to presence", "to resolve"))
    lines += ["", "Protocol steps from raised (n: incidents with that step)"]
    lines += _times(everything, keys, RESPONSES[3:], ("to enter", "to first naloxone"))

    lines += ["", "Outcomes of resolved incidents"]
    named = [(" / ".join(v for v in key if v), g) for key, g in everything]
    key_width = max(len(name) for name, _ in named)
    for name, g in named:
        counts = sorted(g["outcomes"].items(), key=lambda kv: (-kv[1], kv[0]))
        # no-break spaces inside an item keep "name count" on one line
        text = ", ".join(f"{o} {n}".replace(" ", "\xa0") for o, n in counts) or "-"
        wrapped = textwrap.wrap(text, WIDTH - key_width - 2, break_on_hyphens=False)
        lines += [f"{name if i == 0 else '':<{key_width}}  {part.replace(chr(0xA0), ' ')}"
                  for i, part in enumerate(wrapped)]

    if "fatigue" in report:
        lines += _fatigue_lines(report, everything, keys)
    if report.get("listed"):
        lines += ["", "The incidents behind each group (times from raised; after: the booth's "
                      "alarms before)"]
        for name, g in named[:-1]:
            lines += _listed(name, g, tz)
    if report["longest"]:
        count = len(report["longest"])
        title = "The longest incident" if count == 1 else f"The {count} longest incidents"
        lines += ["", f"{title} (time to resolve; open ones by their age at the end of the "
                      "report)"]
        for n, inc in enumerate(report["longest"], 1):
            lines += _incident_lines(n, inc, tz)
    return "\n".join(lines) + "\n"


def _shift(shift: dict[str, Any]) -> str:
    """``night 00:00-08:00``; a roster shift is named as written, its hours in the name."""
    span = f"{shift['start']}-{shift['end']}"
    return shift["name"] if span in shift["name"] else f"{shift['name']} {span}"


def _stats(figures: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    cells = []
    for name in names:
        cells += [str(figures[name]["n"])] + [human(figures[name][s]) for s in STATS[1:]]
    return cells


def _times(everything: list[tuple[list[str], Any]], keys: list[str],
           names: tuple[str, ...], titles: tuple[str, ...]) -> list[str]:
    """n, p50, p90 and max of the response times `names`, a titled block of columns each."""
    rows = [[*keys] + list(STATS) * len(names)]
    for key, g in everything:
        rows.append([*key, *_stats(g, names)])
    return _titled(rows, len(keys), titles)


def _totalled(rows: list[list[str]], keys: int) -> list[str]:
    """The rows aligned, a rule above the last (the total)."""
    table = _table(rows, keys)
    return [*table[:-1], "-" * len(table[0]), table[-1]]


def _titled(rows: list[list[str]], keys: int, titles: tuple[str, ...]) -> list[str]:
    """As `_totalled`, with a title centred over each block of n, p50, p90, max."""
    widths = _widths(rows)
    starts = [sum(widths[:c]) + 2 * c for c in range(len(widths) + 1)]
    line = ""
    for block, title in enumerate(titles):
        first, last = keys + 4 * block, keys + 3 + 4 * block
        span = starts[last] + widths[last] - starts[first]
        line = line.ljust(starts[first]) + title.center(span).rstrip()
    return [line, *_totalled(rows, keys)]


def _fatigue_lines(report: dict[str, Any], everything: list[tuple[list[str], Any]],
                   keys: list[str]) -> list[str]:
    f = report["fatigue"]
    lines = ["", f"Alarm fatigue (non-actionable: {' or '.join(f['non_actionable'])}; a run: "
                 f"{f['run']} in a row at the booth)",
             "classed: incidents whose outcome a person recorded; occupied: hours in use"]
    rows = [[*keys, "classed", "non-act.", "share", "occupied", "per hour"]]
    for key, g in everything:
        a = g["fatigue"]
        share = "-" if a["share"] is None else f"{a['share']:.0%}"
        rate = "-" if a["per_occupied_hour"] is None else f"{a['per_occupied_hour']:.2f}"
        rows.append([*key, str(a["classed"]), str(a["non_actionable"]), share,
                     f"{a['occupied_hours']:.1f}h", rate])
    lines += _totalled(rows, len(keys))
    lines += ["", "Time to acknowledge after a run of non-actionable alarms at the booth, and "
                  "after an actionable one"]
    rows = [[*keys, *list(STATS) * 2, "drift"]]
    for key, g in everything:
        a = g["fatigue"]
        drift = "-" if a["drift"] is None else (
            ("+" if a["drift"] >= 0 else "-") + human(abs(a["drift"])))
        rows.append([*key, *_stats(a, AFTER), drift])
    return lines + _titled(rows, len(keys), ("after a run", "after actionable"))


def _listed(name: str, group: dict[str, Any], tz: zoneinfo.ZoneInfo) -> list[str]:
    """A group's incidents, one aligned line each; the booth and trigger when they vary."""
    shown = [c for c in ("booth", "trigger") if c not in group["keys"]]
    rows = [["id", "raised", *shown, "ack", "presence", "resolve", "outcome", "after"]]
    for item in group["list"]:
        when = datetime.fromisoformat(item["raised_at"]).astimezone(tz)
        rows.append([item["id"], f"{when:%a %m-%d %H:%M}", *(item[c] for c in shown),
                     human(item["to_acknowledge"]), human(item["to_presence"]),
                     human(item["to_resolve"]),
                     "open" if item["open"] else item["outcome"] or "unspecified",
                     item.get("after") or ""])
    if not any(row[-1] for row in rows[1:]):
        rows = [row[:-1] for row in rows]  # without --fatigue, or none classed
    return ["", f"{name} ({len(group['list'])})",
            *(_clip("  " + line) for line in _table(rows, 2 + len(shown), 5 + len(shown)))]


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


