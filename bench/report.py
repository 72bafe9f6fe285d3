"""`boothwatch report` on a large store: seconds and peak RSS for each --by.

Fills a fresh SQLite file with the real schema (``monitor.store.SCHEMA``, WAL)
with ``--incidents`` incidents (default 100,000) over ``--days`` days at
``--booths`` booths, written directly with executemany: each incident with a
realistic stored view (the ``dataclasses.asdict`` form of an IncidentView, a
timeline of 3 to 12 entries), its timeline rows and 1 to 4 pages (about 3 % of
them failed); about 40 % of the resolved high ones record the protocol step
``entered`` and 5 % ``naloxone`` too, in the steps table and the timeline. About
60 % are calls, 20 % unresponsive, 15 % long sessions, 5 % device_offline; the
last few hundred are still open.

Then it runs the command line as a subprocess, output to /dev/null, once per
--by (table), once per format, once for one week, and once each for two keys at
once, one booth, --fatigue and --incidents, and prints wall seconds
and the peak RSS (``ru_maxrss`` of that child, from ``os.wait4``). The first
line is the floor: starting Python and importing ``monitor.cli``.

    .venv/bin/python bench/report.py [--incidents 100000] [--keep]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from monitor.store_sqlite import SCHEMA  # noqa: E402

TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
TRIGGERS = (("call", "high", 60), ("unresponsive", "high", 20),
            ("long_session", "medium", 15), ("device_offline", "low", 5))
OUTCOMES = (None, None, None, "ok", "naloxone", "oxygen", "ambulance", "left")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def fill(path: Path, incidents: int, booths: int, days: int, seed: int = 7) -> None:
    """Incidents over the `days` days before today (UTC); the last ones still open."""
    rnd = random.Random(seed)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA)
    start = (TODAY - timedelta(days=days)).timestamp()
    span = days * 86400.0
    weights = [w for _, _, w in TRIGGERS]
    inc_rows: list[tuple[Any, ...]] = []
    tl_rows: list[tuple[Any, ...]] = []
    page_rows: list[tuple[Any, ...]] = []
    step_rows: list[tuple[Any, ...]] = []
    open_from = incidents - max(1, incidents // 300)
    raised_times = sorted(start + rnd.random() * span for _ in range(incidents))

    def flush() -> None:
        db.execute("BEGIN")
        db.executemany("INSERT INTO incidents VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", inc_rows)
        db.executemany("INSERT INTO timeline(incident, at, kind, detail) VALUES (?,?,?,?)",
                       tl_rows)
        db.executemany("INSERT INTO pages(id, incident, responder, channel, level, payload,"
                       " status, attempts, last_error, created_at, updated_at, sent_at,"
                       " latency) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", page_rows)
        db.executemany("INSERT INTO steps(incident, at, step, responder, count, note, via)"
                       " VALUES (?,?,?,?,?,?,?)", step_rows)
        db.execute("COMMIT")
        step_rows.clear()
        inc_rows.clear()
        tl_rows.clear()
        page_rows.clear()

    for n, raised in enumerate(raised_times):
        iid = f"01J{n:023d}"
        booth = f"b{rnd.randrange(1, booths + 1)}"
        trigger, priority, _ = rnd.choices(TRIGGERS, weights)[0]
        timeline: list[dict[str, Any]] = [
            {"at": raised, "kind": "trigger", "detail": {"trigger": trigger, "priority": priority}},
            {"at": raised, "kind": "state", "detail": {"to": "open"}},
            {"at": raised, "kind": "escalated", "detail": {"level": 1, "priority": priority}},
        ]
        level = 1
        reopened = 0
        ack = presence = resolved = None
        outcome = None
        state = "open"
        if n < open_from:
            ack = raised + rnd.lognormvariate(3.0, 0.6)
            if ack - raised > 30 and priority == "high":
                level = 2
                timeline.append({"at": raised + 30, "kind": "escalated",
                                 "detail": {"level": 2, "priority": priority}})
            timeline.append({"at": ack, "kind": "ack", "detail": {"responder": "ana",
                                                                  "via": "link"}})
            presence = ack + rnd.uniform(20, 100)
            if rnd.random() < 0.03:
                reopened = 1
                presence += 120
                timeline.append({"at": ack + 120, "kind": "state",
                                 "detail": {"to": "open", "from": "acknowledged"}})
            timeline.append({"at": presence, "kind": "presence",
                             "detail": {"responder": "ana", "via": "booth"}})
            if priority == "high" and rnd.random() < 0.4:
                steps: list[tuple[str, float, int | None]] = [
                    ("entered", presence + rnd.uniform(5, 30), None)]
                if rnd.random() < 0.125:
                    steps.append(("naloxone", steps[0][1] + rnd.uniform(10, 60),
                                  rnd.randint(1, 2)))
                for step, at, count in steps:
                    detail = {"step": step, "responder": "ana", "via": "link",
                              **({"count": count} if count else {})}
                    timeline.append({"at": at, "kind": "step", "detail": detail})
                    step_rows.append((iid, at, step, "ana", count, None, "link"))
            resolved = presence + rnd.lognormvariate(5.5, 0.8)
            outcome = rnd.choice(OUTCOMES)
            state = "resolved"
            timeline.append({"at": resolved, "kind": "state",
                             "detail": {"to": "resolved", "from": "attended"}})
        view = {
            "id": iid, "booth": booth, "priority": priority, "state": state,
            "triggers": [trigger], "level": level, "max_level": level, "raised_at": raised,
            "acknowledged_at": ack, "acknowledged_by": ack and "ana", "presence_at": presence,
            "presence_by": presence and "ana", "resolved_at": resolved,
            "resolved_by": resolved and "booth", "outcome": outcome, "reopened": reopened,
            "timeline": timeline, "trigger_priorities": {trigger: priority}, "cleared": [],
            "escalation_priority": priority, "next_index": level,
            "next_at": None if resolved else raised + 60, "ack_deadline": None,
        }
        inc_rows.append((iid, booth, priority, state, _dumps([trigger]), level, level, raised,
                         ack, ack and "ana", presence, resolved, resolved and "booth", outcome,
                         _dumps(view)))
        tl_rows.extend((iid, e["at"], e["kind"], _dumps(e["detail"])) for e in timeline)
        for p in range(rnd.randint(1, 4)):
            status = "failed" if rnd.random() < 0.03 else "sent"
            at = raised + 30 * p
            page_rows.append((f"{iid}p{p}", iid, "ana", "pager", 1 + (p > 0),
                              _dumps({"incident": iid, "booth": booth, "level": 1}), status,
                              1 if status == "sent" else 5, None if status == "sent" else "503",
                              at, at + 0.2, at + 0.2 if status == "sent" else None, 0.2))
        if len(inc_rows) >= 5000:
            flush()
    flush()
    db.close()


def run(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {proc.returncode}\n{err.decode()}")
    return seconds, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--incidents", type=int, default=100_000)
    parser.add_argument("--booths", type=int, default=40)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="boothwatch-report-bench-"))
    db = tmp / "store.db"
    try:
        started = time.perf_counter()
        # in a child: Linux carries a parent's peak RSS over fork and exec into its
        # children's ru_maxrss, so this process stays small for the figures below
        filler = multiprocessing.Process(target=fill,
                                         args=(db, args.incidents, args.booths, args.days))
        filler.start()
        filler.join()
        if filler.exitcode != 0:
            raise SystemExit(f"filling the store failed: exit {filler.exitcode}")
        size = db.stat().st_size / 2**20
        print(f"filled {args.incidents:,} incidents ({args.booths} booths, {args.days} days) "
              f"in {time.perf_counter() - started:.1f} s: {size:.0f} MiB")
        base = [sys.executable, "-m", "monitor.cli", "report", "--db", str(db)]
        baseline = run([sys.executable, "-c", "import monitor.cli"])
        floor = "python -c 'import monitor.cli' (floor)"
        print(f"{floor:51} {baseline[0]:6.2f} s {baseline[1]:7.1f} MiB")
        week_from = (TODAY - timedelta(days=14)).date().isoformat()
        week_to = (TODAY - timedelta(days=7)).date().isoformat()
        cases = [[f"--by={by}"] for by in ("booth", "trigger", "shift", "day")]
        cases += [["--by=day", "--format=csv"], ["--by=day", "--format=json"],
                  ["--by=shift", "--timezone=Europe/Lisbon"],
                  ["--by=booth", f"--from={week_from}", f"--to={week_to}"],
                  ["--by=booth,shift"], ["--booth=b3", "--by=shift"],
                  ["--by=booth", "--fatigue"], ["--by=booth", "--incidents", "--format=json"]]
        for extra in cases:
            seconds, rss = run(base + extra)
            print(f"report {' '.join(extra):44} {seconds:6.2f} s {rss:7.1f} MiB")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            for name in os.listdir(tmp):
                (tmp / name).unlink()
            tmp.rmdir()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
