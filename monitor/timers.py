"""Timers: sleep until the core's next deadline, then fire; and watch the service clock.

Times are epoch seconds from the service clock (`monitor.clock`): read from the
wall clock at start, then advanced by the monotonic clock, so an NTP step neither
fires a timer early nor holds one back, and a restart resumes every plan against
its original deadlines.

Full garbage collections are timed here too (`collect_garbage`): at 10,000 booths
one stops the event loop for 15-90 ms, so they wait for a gap between deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Iterator

import structlog

from monitor.clock import ServiceClock
from monitor.metrics import Metrics

log = structlog.get_logger(__name__)

CLOCK_WATCH_EVERY = 1.0  # seconds between looks for a wall-clock step
MAX_CLOCK_CATCH_UP = 6 * 3600.0  # at start, catch up with records at most this far ahead


async def deadline_loop(clock: Callable[[], float], next_deadline: Callable[[], float | None],
                        wake: asyncio.Event, fire: Callable[[float], object],
                        what: str) -> None:
    """Sleep (on the monotonic clock) until the next deadline or a wake, then fire."""
    while True:
        deadline = next_deadline()
        timeout = None if deadline is None else max(0.0, deadline - clock())
        if timeout == 0:
            await asyncio.sleep(0)  # more is due (a slice of a burst): after one turn
        else:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that arrives as the event is set, and shutdown would then hang
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await wake.wait()
        wake.clear()
        try:
            fire(clock())
        except Exception:
            log.exception(f"{what}_failed")
            await asyncio.sleep(1)


def start_clock(clock: ServiceClock, latest: float | None) -> None:
    """Never start behind what is already recorded (the wall clock was stepped back
    while we were down): stored deadlines would otherwise be held back as long."""
    if latest is None:
        return
    behind = latest - clock()
    if 0 < behind <= MAX_CLOCK_CATCH_UP:
        clock.not_before(latest)
        log.warning("clock_behind_records", seconds=round(behind, 3))
    elif behind > MAX_CLOCK_CATCH_UP:
        # more likely the records were written under a wrong clock: trust the wall
        log.error("clock_far_behind_records", seconds=round(behind, 3))


async def watch_clock(clock: ServiceClock, metrics: Metrics) -> None:
    """Notice wall-clock steps; timers are unaffected, but people should know."""
    while True:
        await asyncio.sleep(CLOCK_WATCH_EVERY)
        step = clock.observe()
        if step is not None:
            metrics.clock_steps.inc()
            log.warning("clock_step", seconds=round(step, 3), skew=round(clock.skew(), 3))


GC_EVERY = 30.0  # seconds between full collections (Python's own come every ~20-30 s
# at 500 events/s and 10,000 booths: no more garbage waits than it did)
GC_FIRST_GUESS = 0.05  # seconds a full collection takes, until one has been timed


@contextlib.contextmanager
def full_collections_timed() -> Iterator[None]:
    """Python's own full collections off while inside (`collect_garbage` runs them).

    Young collections stay automatic: they are short. What is frozen stays frozen.
    """
    thresholds = gc.get_threshold()
    gc.set_threshold(thresholds[0], thresholds[1], 2**30)  # gen1 collections, never reached
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


async def collect_garbage(clock: Callable[[], float], next_deadline: Callable[[], float | None],
                          every: float = GC_EVERY) -> None:
    """Every ``every`` seconds, a full collection where no deadline falls within twice the
    time the last one took; after waiting ``every`` more for such a gap, one anyway (the
    collector must run, or cyclic garbage would pile up).

    A collection stops the event loop: what it delays is a call (rare: one turn in
    thousands), never a stillness or escalation timer that was due.
    """
    took = GC_FIRST_GUESS
    while True:
        await asyncio.sleep(every)
        give_up = clock() + every
        while (deadline := next_deadline()) is not None and deadline - clock() < 2 * took:
            if clock() >= give_up:
                break
            # until just after it fired (the deadline loop runs first at its deadline)
            await asyncio.sleep(max(0.0, deadline - clock()) + 0.001)
        started = time.perf_counter()
        gc.collect()
        took = time.perf_counter() - started
