"""Timers: sleep until the core's next deadline, then fire; and watch the service clock.

Times are epoch seconds from the service clock (`monitor.clock`): read from the
wall clock at start, then advanced by the monotonic clock, so an NTP step neither
fires a timer early nor holds one back, and a restart resumes every plan against
its original deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

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
