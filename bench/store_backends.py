"""Ingest and press-to-page latency with the store on SQLite and on PostgreSQL, one run.

Runs bench/ingest.py and bench/latency.py once per backend per round, alternating
(sqlite, postgresql, sqlite, ...) so that both meet the same load on a shared box,
each with its own broker, service and store (PostgreSQL: a cluster of the run's own,
fsync and synchronous_commit on, as durable as SQLite's synchronous=FULL). Prints
each run's output, then the figures side by side with their range over the rounds.

    .venv/bin/python bench/store_backends.py [--rounds 2] [--events 30000]
        [--booths 2000] [--presses 200]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BACKENDS = ("sqlite", "postgresql")
_RATE = re.compile(r"^ingest rate:\s+([\d,]+) events/s", re.MULTILINE)
_LATENCY = re.compile(r"^press -> page \(service\):.*?p50 ([\d.]+)\s+p90 ([\d.]+)\s+"
                      r"p99 ([\d.]+)", re.MULTILINE)


def run(script: str, *args: str) -> str:
    """A bench script's output, shown as it is; an error if it failed."""
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True,
                          text=True, timeout=900, check=False)
    print("    " + done.stdout.rstrip().replace("\n", "\n    "), flush=True)
    if done.returncode != 0:
        raise SystemExit(f"{script} {' '.join(args)} failed ({done.returncode}):\n"
                         f"{done.stderr[-2000:]}")
    return done.stdout


def spread(values: Sequence[float], unit: str, digits: int = 2) -> str:
    """The median of the rounds and their range."""
    ordered = sorted(values)
    n = len(ordered)
    middle = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
    return (f"{middle:,.{digits}f} {unit} ({ordered[0]:,.{digits}f}-{ordered[-1]:,.{digits}f})"
            if len(ordered) > 1 else f"{middle:,.{digits}f} {unit}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each, per backend")
    parser.add_argument("--events", type=int, default=30_000, help="ingest: events")
    parser.add_argument("--booths", type=int, default=2_000, help="ingest: booths")
    parser.add_argument("--presses", type=int, default=200,
                        help="latency: call presses (and booths)")
    args = parser.parse_args(argv)
    rates: dict[str, list[float]] = {b: [] for b in BACKENDS}
    latency: dict[str, list[tuple[float, float, float]]] = {b: [] for b in BACKENDS}
    for n in range(1, args.rounds + 1):
        for backend in BACKENDS:
            print(f"round {n}, {backend}: ingest", flush=True)
            out = run("ingest.py", "--backend", backend, "--events", str(args.events),
                      "--booths", str(args.booths))
            rate = _RATE.search(out)
            assert rate is not None, "ingest.py printed no rate"
            rates[backend].append(float(rate.group(1).replace(",", "")))
            print(f"round {n}, {backend}: press to page", flush=True)
            out = run("latency.py", "--backend", backend, "--booths", str(args.presses))
            found = _LATENCY.search(out)
            assert found is not None, "latency.py printed no press -> page line"
            latency[backend].append((float(found[1]), float(found[2]), float(found[3])))
    print(f"\nstore backends, {args.rounds} round(s) each, alternating; median (range):")
    print(f"  {'':<11} {'ingest':<28} {'press->page p50':<26} {'p99':<26}")
    for backend in BACKENDS:
        p50 = [t[0] for t in latency[backend]]
        p99 = [t[2] for t in latency[backend]]
        print(f"  {backend:<11} {spread(rates[backend], 'ev/s', 0):<28} "
              f"{spread(p50, 'ms'):<26} {spread(p99, 'ms'):<26}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
