"""Crash anywhere, many times: SIGKILL the real service during a scripted scenario.

Runs ``--trials`` trials of `tests/harness/crash.py` (four booths: a call acknowledged
over MQTT, a still person acknowledged through the ack link, a long session, a short
session; 1-3 kills per trial at random points, each with a random downtime) against
one Mosquitto of our own, and prints what was checked and what diverged. Trial *i* uses
seed ``--seed + i``; a failed trial prints its seed, the kill plan, what diverged and
its timeline, and ``--trials 1 --seed S`` plays the same plan again (the processes'
timing is real, so the moments differ by milliseconds). Exit 1 when a trial failed; a
ghost incident (a page naming an id the store never had) is a failure. ``--src DIR``
runs the service from another copy of the packages (e.g. main, to compare).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import add_src_option, percentile
from tests.harness.broker import Mosquitto
from tests.harness.crash import TrialResult, run_trials


def _spread(values: list[float]) -> str:
    if not values:
        return "none"
    return (f"p50 {percentile(values, 50):.3f} s  p90 {percentile(values, 90):.3f} s  "
            f"max {max(values):.3f} s  (n={len(values)})")


def summary(results: list[TrialResult], wall: float) -> str:
    failed = [r for r in results if r.failures]

    def total(name: str) -> int:
        return sum(int(getattr(r, name)) for r in results)

    late_spawn = [x for r in results for x in r.late_from_spawn]
    late_ready = [x for r in results for x in r.late_from_ready]
    restarts = [x for r in results for x in r.restart_seconds]
    kills = total("kills")
    return "\n".join([
        f"trials run:               {len(results)} in {wall:.0f} s "
        f"({wall / max(1, len(results)):.1f} s each)",
        f"failures:                 {len(failed)}"
        + (f"  (seeds {', '.join(str(r.seed) for r in failed)})" if failed else ""),
        f"kills (SIGKILL):          {kills}  ({kills / max(1, len(results)):.2f} per trial)",
        f"events published:         {total('events')}  (each stored exactly once unless a "
        "failure says otherwise)",
        f"incidents stored:         {total('incidents')}",
        f"pages expected:           {total('pages_expected')}  "
        "((incident, responder, level) due before the ack)",
        f"pages received:           {total('pages_received')}",
        f"pages duplicated:         {total('duplicates')}  (each across a crash)",
        f"ghost incidents:          {total('ghost_incidents')}  (paged, killed before "
        "the commit, raised again under another id: target 0)",
        f"acks repeated:            {total('reacks')}  (the first named a ghost incident)",
        f"ghost links offered:      {total('offers_taken')}  (a link to a ghost incident "
        "acknowledged the alarm raised again, through its page's offer)",
        f"restart -> late page:     {_spread(late_spawn)}  (pages due while dead, "
        "from the restart's spawn)",
        f"ready -> late page:       {_spread(late_ready)}  (negative: before /readyz said so)",
        f"restart -> ready:         {_spread(restarts)}",
    ])


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    parser.add_argument("--keep", action="store_true", help="keep every trial's files")
    parser.add_argument("--verbose", action="store_true",
                        help="print every trial's kill plan and timeline")
    add_src_option(parser)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="boothwatch-crash-"))
    broker = Mosquitto(workdir / "mosquitto")
    broker.start()
    print(f"seed {args.seed}, {args.trials} trials, files in {workdir}", flush=True)
    started = time.monotonic()

    def progress(result: TrialResult) -> None:
        status = "FAILED" if result.failures else "ok"
        print(f"  seed {result.seed}: {status}  {result.kills} kill(s)  "
              f"{result.duration:.1f} s", flush=True)
        if result.failures or args.verbose:
            print(result.report(), flush=True)
        elif not args.keep and result.workdir is not None:
            shutil.rmtree(result.workdir, ignore_errors=True)

    try:
        results = await run_trials(range(args.seed, args.seed + args.trials),
                                   (broker.host, broker.port), workdir, progress,
                                   src=args.src.resolve())
    finally:
        broker.stop()
    print(summary(results, time.monotonic() - started))
    failed = any(r.failures for r in results)
    if not failed and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
