"""Full garbage collections are timed between deadlines, never on top of one.

At 10,000 booths a full collection stops the event loop for 15-90 ms
(bench/timers.py): Python's own come whenever allocations say so, so the runtime
turns them off and `collect_garbage` runs them where no deadline is near.
These run the real loop for a fraction of a second; what is asserted is when the
collection came relative to the deadlines, not how fast anything was.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from typing import Any

from monitor.timers import collect_garbage, full_collections_timed


@contextlib.contextmanager
def full_collections() -> Iterator[list[float]]:
    """The monotonic times at which full collections started while inside."""
    started: list[float] = []

    def watch(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and info["generation"] == 2:
            started.append(time.monotonic())

    gc.callbacks.append(watch)
    try:
        yield started
    finally:
        gc.callbacks.remove(watch)


def near_until(end: float, ahead: float = 0.002) -> Callable[[], float | None]:
    """A core whose next deadline is always ``ahead`` seconds away until ``end``, then none."""
    return lambda: time.monotonic() + ahead if time.monotonic() < end else None


async def run_for(coro: Any, seconds: float) -> None:
    task = asyncio.create_task(coro)
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_full_collection_waits_for_a_gap_between_deadlines() -> None:
    """Deadlines keep coming for 0.3 s: the collection due after 0.2 s comes after them."""
    busy_until = time.monotonic() + 0.3
    with full_collections_timed(), full_collections() as started:
        await run_for(collect_garbage(time.monotonic, near_until(busy_until), every=0.2),
                      0.6)
    assert started, "no full collection at all"
    assert started[0] >= busy_until


async def test_a_full_collection_comes_anyway_when_deadlines_leave_no_gap() -> None:
    """The collector must run: after waiting as long again for a gap, it collects."""
    with full_collections_timed(), full_collections() as started:
        await run_for(collect_garbage(time.monotonic, near_until(float("inf")), every=0.02),
                      0.5)
    assert started


def test_python_s_own_full_collections_are_off_inside_and_back_after() -> None:
    """Young collections stay automatic; the full ones come back as they were."""
    before = gc.get_threshold()
    with full_collections_timed():
        inside = gc.get_threshold()
    assert inside[:2] == before[:2]
    assert inside[2] > 1_000_000
    assert gc.get_threshold() == before
