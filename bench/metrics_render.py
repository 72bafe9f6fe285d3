"""/metrics at its largest, and how long the event loop stalls while it renders.

200 booths x 3 triggers x 2 levels x 3 response-time histograms (3,600 series of
buckets, the bound the soak approaches after days): the text's size, the render
time, and the longest a 1 ms ticker on the loop was held back, rendered on the
loop (``Metrics.render``) and as the HTTP handler does (``Metrics.render_async``:
counters and histograms in a worker thread, live gauges on the loop).

    .venv/bin/python bench/metrics_render.py [--booths 200]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.metrics import Metrics


def filled(booths: int) -> Metrics:
    m = Metrics()
    for b in range(booths):
        for trigger in ("call", "unresponsive", "long_session"):
            for level in ("1", "2"):
                for hist in (m.to_ack, m.to_presence, m.to_resolve):
                    hist.labels(trigger, "high", f"b{b}", level).observe(5)
    m.watch(lambda: [])
    return m


async def stall(render: Callable[[], Awaitable[bytes]]) -> tuple[int, float, float]:
    """Bytes, seconds to render, and the worst stall of a 1 ms ticker meanwhile."""
    worst = 0.0
    running = True

    async def ticker() -> None:
        nonlocal worst
        while running:
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - start - 0.001)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    start = time.perf_counter()
    body = await render()
    took = time.perf_counter() - start
    running = False
    await task
    return len(body), took, worst


async def main(booths: int) -> None:
    m = filled(booths)

    async def on_loop() -> bytes:
        return m.render()

    for name, render in (("on the loop", on_loop), ("render_async", m.render_async)):
        size, took, worst = await stall(render)
        print(f"{name:13}  {size:,} bytes  render {took * 1000:.0f} ms  "
              f"worst loop stall {worst * 1000:.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--booths", type=int, default=200)
    asyncio.run(main(parser.parse_args().booths))
