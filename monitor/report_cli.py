"""The command line of ``boothwatch report``: its options, and reading the site config.

What the report selects and shows is in `monitor.report` and docs/coordinators/report.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

from monitor.core.fatigue import DEFAULT_RUN
from monitor.report import (
    DEFAULT_LONGEST,
    FORMATS,
    GROUPINGS,
    TRIGGERS,
    ReportError,
    build_report,
    open_store,
    parse_by,
    parse_list,
    store_roster,
    store_timezone,
)
from monitor.report_render import render_csv, render_json, render_table
from monitor.report_time import (
    DEFAULT_SHIFTS,
    Shift,
    load_zone,
    parse_shifts,
    parse_time,
    roster_shifts,
)
from monitor.store_base import DB_PASSWORD_ENV


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="FILE|URL",
                        help="the store: a SQLite file or postgresql://user@host:port/db, its "
                             "password from BOOTHWATCH_DB_PASSWORD (default: the store of "
                             "--config)")
    parser.add_argument("--from", dest="start", metavar="DATE",
                        help="first day (YYYY-MM-DD) or time (ISO 8601); default: all")
    parser.add_argument("--to", dest="end", metavar="DATE",
                        help="end, exclusive: the day after the last; default: now")
    parser.add_argument("--booth", metavar="IDS", help="only these booths (b1,b3)")
    parser.add_argument("--trigger", metavar="NAMES",
                        help=f"only incidents raised by these triggers ({', '.join(TRIGGERS)})")
    parser.add_argument("--by", default="booth", metavar="KEYS",
                        help=f"grouping: one or more of {', '.join(GROUPINGS)}, comma-separated "
                             "(default booth; booth,shift groups by both)")
    parser.add_argument("--format", choices=FORMATS, default="table", dest="fmt",
                        help="table for people, csv for spreadsheets, json for scripts")
    parser.add_argument("--timezone", metavar="NAME",
                        help="days, shifts and dates are in this zone (default: the site's: "
                             "from --config, else as the service recorded it in the store; "
                             "else UTC)")
    parser.add_argument("--config", metavar="FILE",
                        help="site config: its time zone, roster and booths, and its store "
                             "when --db is not given")
    parser.add_argument("--shifts", default=None, metavar="SPEC",
                        help="name=HH:MM-HH:MM,... local time (default: the roster's shifts, "
                             f'else "{DEFAULT_SHIFTS}")')
    parser.add_argument("--longest", type=int, default=DEFAULT_LONGEST, metavar="N",
                        help=f"list the N longest incidents (default {DEFAULT_LONGEST})")
    parser.add_argument("--incidents", action="store_true",
                        help="list the incidents behind each group (CSV: one row each)")
    parser.add_argument("--fatigue", action="store_true",
                        help="alarm fatigue: non-actionable share, incidents per occupied "
                             "hour, time to acknowledge after a run of non-actionable alarms")
    parser.add_argument("--run", type=int, default=DEFAULT_RUN, metavar="N",
                        help=f"non-actionable alarms in a row that make a run (default "
                             f"{DEFAULT_RUN})")


def main(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    """Run ``boothwatch report`` with parsed arguments; 2 for a usage problem, 1 for the store."""
    out = stdout or sys.stdout

    def fail(message: str, code: int = 2) -> int:
        print(f"boothwatch report: {message}", file=sys.stderr)
        return code

    db_path, zone_name = args.db, args.timezone
    password = os.environ.get(DB_PASSWORD_ENV) or None
    known_booths: list[str] | None = None
    roster: tuple[Shift, ...] = ()
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
        known_booths = [b.id for b in config.booths]
        roster = roster_shifts(s for r in config.responders for s in r.shifts)
    if not db_path:
        return fail("--db FILE|URL is required (or --config FILE)")
    booths, triggers = parse_list(args.booth), parse_list(args.trigger)
    unknown = [b for b in booths if known_booths is not None and b not in known_booths]
    if unknown:
        return fail(f"--booth: unknown booth {', '.join(unknown)} "
                    f"(known: {', '.join(known_booths or ())})")
    if any(t not in TRIGGERS for t in triggers):
        return fail(f"--trigger: expected some of {', '.join(TRIGGERS)}")
    if args.run < 1:
        return fail("--run must be 1 or more")
    try:
        db = open_store(db_path, password)
    except ReportError as exc:
        return fail(str(exc), 1)
    try:
        try:
            keys = parse_by(args.by)
            tz = load_zone(zone_name or store_timezone(db) or "UTC")
            start = parse_time(args.start, tz) if args.start else None
            end = parse_time(args.end, tz) if args.end else None
            shifts = (parse_shifts(args.shifts) if args.shifts else roster or store_roster(db)
                      or parse_shifts(DEFAULT_SHIFTS))
        except ValueError as exc:
            return fail(str(exc))
        if args.longest < 0:
            return fail("--longest must be 0 or more")
        if start is not None and end is not None and start >= end:
            return fail("--from must be before --to (--to is exclusive: give the day after)")
        report = build_report(
            db, start=start, end=end, by=keys, tz=tz, shifts=shifts,
            longest=args.longest, progress=sys.stderr if sys.stderr.isatty() else None,
            booths=booths, triggers=triggers, incidents=args.incidents,
            fatigue=args.fatigue, run=args.run,
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

