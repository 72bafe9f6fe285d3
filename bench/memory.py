"""Memory: what the service keeps per event, measured with tracemalloc; no broker, no disk.

Two parts, both in this process, both printing traced memory (Python objects,
``tracemalloc``) and resident memory (VmRSS) as events go by:

* ``core``: the pure core (``monitor.core.SiteCore``) lives ``--hours`` simulated
  hours at ``--booths`` booths, like ``bench/soak.py``'s day: sessions with motion
  every minute, heartbeats every 5 minutes, now and then a call that a nurse
  acknowledges, attends and clears. After a warm-up hour it takes a tracemalloc
  snapshot, and at the end prints the allocation sites that grew the most
  (grouped by traceback). A core that keeps nothing per event grows by ~0.
* ``dedupe``: the runtime's memory of event ids (``monitor.ingest.RecentKeys``)
  fed ``--events`` fresh ids: traced memory is flat once it holds
  ``DEDUPE_MEMORY`` ids.

    .venv/bin/python bench/memory.py core [--booths 200] [--hours 48]
    .venv/bin/python bench/memory.py dedupe [--events 1000000]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
import sys
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.core.events import (
    Acknowledge,
    Button,
    Event,
    Heartbeat,
    Motion,
    MotionState,
    Occupancy,
    Press,
    SendPage,
)
from monitor.core.settings import Policy, Step
from monitor.core.site import SiteCore
from tests.harness.core import make_config

MINUTE = 60.0
T0 = 1_800_000_000.0


def rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return kb / 1024


def traced_mib() -> float:
    return tracemalloc.get_traced_memory()[0] / 2**20


def core_day(args: argparse.Namespace) -> int:
    """Drive the core through simulated hours; print the allocation sites that grew."""
    rng = random.Random(args.seed)
    config = make_config(
        booths=args.booths, stillness=3 * MINUTE, long_session=30 * MINUTE,
        high=Policy(steps=(Step(0, ("role:nurse",)), Step(60, ("role:nurse",))),
                    repeat=60, ack_timeout=120),
    )
    ids = itertools.count(1)
    core = SiteCore(config, lambda: f"inc{next(ids)}")
    now = T0
    core.start(now)
    # (at, seq, event): what the booths and the nurse will do, in time order
    plan: list[tuple[float, int, Event | tuple[str, str]]] = []
    seq = itertools.count()
    acked: set[str] = set()

    def later(at: float, event: Event | tuple[str, str]) -> None:
        heapq.heappush(plan, (at, next(seq), event))

    def session(booth: str, start: float) -> None:
        later(start, Occupancy(booth, True))
        minutes = rng.uniform(10, 25) if rng.random() > 0.05 else rng.uniform(2, 5)
        t = start
        for _ in range(int(minutes)):
            t += MINUTE
            later(t, Motion(booth, MotionState.MOVING))
        if minutes < 10:
            later(t + 1, Button(booth, Press.CALL))  # the nurse comes: see respond()
            t += 6 * MINUTE
        later(t + 1, Motion(booth, MotionState.ABSENT))
        later(t + 2, Occupancy(booth, False))
        later(t + 2 + rng.expovariate(1 / (12 * MINUTE)), ("next", booth))

    def respond(commands: Sequence[object], at: float) -> None:
        for cmd in commands:
            if isinstance(cmd, SendPage) and cmd.incident not in acked:
                acked.add(cmd.incident)
                later(at + 20, Acknowledge(cmd.incident, cmd.responder, via="mqtt"))
                later(at + 60, Button(cmd.booth, Press.PRESENCE))
                later(at + 120, Button(cmd.booth, Press.CLEAR))

    booths = [f"b{i}" for i in range(1, args.booths + 1)]
    for booth in booths:
        session(booth, now + rng.uniform(0, 20 * MINUTE))
    for k in range(0, int(args.hours * 12) + 1):
        for booth in booths:
            later(now + k * 5 * MINUTE, Heartbeat(booth, battery=90))

    end = now + args.hours * 3600
    events = 0
    baseline: tracemalloc.Snapshot | None = None
    report_every = 3600.0 * max(1.0, args.hours / 8)
    next_report = now + 3600.0
    tracemalloc.start(args.frames)
    while plan and plan[0][0] < end:
        at, _, event = heapq.heappop(plan)
        while (due := core.next_deadline()) is not None and due <= at:
            respond(core.on_timer(due), due)
        now = at
        if isinstance(event, tuple):
            session(event[1], now)
            continue
        try:
            out = core.handle(event, now)
        except Exception as exc:  # an ack for an incident cleared meanwhile
            if type(exc).__name__ not in ("UnknownIncident", "IllegalTransition"):
                raise
            continue
        events += 1
        respond(out, now)
        if now >= next_report:
            if baseline is None:
                acked.clear()  # the bench's own memory, not the core's
                baseline = tracemalloc.take_snapshot()
                base_events = events
                base_traced = traced_mib()
            print(f"  {(now - T0) / 3600:5.1f} h  events {events:8d}"
                  f"  traced {traced_mib():6.1f} MiB  rss {rss_mib():6.1f} MiB"
                  f"  open incidents {len(core.incidents)}", flush=True)
            next_report += report_every
    acked.clear()
    assert baseline is not None, "run at least 2 hours"
    final = tracemalloc.take_snapshot()
    grown = traced_mib() - base_traced
    print(f"core: {events - base_events} events after the first hour, traced memory "
          f"{grown:+.2f} MiB ({grown * 2**20 / max(1, events - base_events):+.1f} bytes/event)")
    print("allocation sites that grew most (traceback, innermost last):")
    keep = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
    for stat in final.filter_traces(keep).compare_to(baseline.filter_traces(keep),
                                                      "traceback")[:args.top]:
        print(f"  {stat.size_diff / 1024:+9.1f} KiB  {stat.count_diff:+7d} blocks")
        for line in stat.traceback.format()[-2 * args.frames:]:
            print(f"      {line}")
    return 0


def dedupe(args: argparse.Namespace) -> int:
    """Feed the runtime's event-id memory fresh ids; print its traced memory and RSS."""
    from monitor.ingest import DEDUPE_MEMORY, RecentKeys, event_key

    tracemalloc.start(1)
    seen = RecentKeys(DEDUPE_MEMORY)
    step = max(1, args.events // 10)
    for i in range(1, args.events + 1):
        key = event_key(f"b{i % 200}", f"{i:032x}")
        if key in seen:
            raise AssertionError("a fresh id was taken for a duplicate")
        seen.add(key)
        if i % step == 0:
            print(f"  {i:8d} ids  remembered {len(seen):7d}  traced {traced_mib():6.1f} MiB"
                  f"  rss {rss_mib():6.1f} MiB", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="part", required=True)
    core = sub.add_parser("core", help="the pure core through simulated hours")
    core.add_argument("--booths", type=int, default=200)
    core.add_argument("--hours", type=float, default=48.0)
    core.add_argument("--seed", type=int, default=1)
    core.add_argument("--frames", type=int, default=6, help="traceback depth")
    core.add_argument("--top", type=int, default=8, help="allocation sites shown")
    ded = sub.add_parser("dedupe", help="the runtime's memory of event ids")
    ded.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    return core_day(args) if args.part == "core" else dedupe(args)


if __name__ == "__main__":
    sys.exit(main())
