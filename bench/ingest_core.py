"""Our own CPU per event: ingest.py's events through the service's code in one process.

The same canonical events as ``bench/ingest.py`` (10,000 booths, 100,000 events, the
same cycle, each with a unique id) go through `Ingest.on_message`, the driver, the
core, the publisher and the store (SQLite, its writer thread, as the service runs
them), with a stand-in MQTT link that counts publishes and acknowledgements. No paho
network loop, no broker, no other process: what is left is our code (and paho's
`MQTTMessage`, made per event as paho makes it, and the link's `Message` of it), so
the figure moves far less from run to run than ingest.py's. Reading pauses past
UNACKED_HIGH as the service's does.

    .venv/bin/python bench/ingest_core.py [--events 100000] [--booths 10000] [--src DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if "BENCH_SRC" not in os.environ:  # else PYTHONPATH has the --src copy first (`_again_from`)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho

from bench.harness import REPO, bench_site
from bench.ingest import CYCLE


def _again_from(src: Path) -> None:
    """Run this script again with the service's packages from `src` (an unpacked
    `git archive`): they are imported at start, so the choice is made before."""
    if src.resolve() != REPO and os.environ.get("BENCH_SRC") != str(src):
        env = {**os.environ, "BENCH_SRC": str(src),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(src), str(REPO),
                                                          os.environ.get("PYTHONPATH")]))}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


class Link:
    """The MQTT link as ingest, the flood gate and the publisher use it."""

    def __init__(self) -> None:
        self.acks = 0
        self.published = 0

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.published += 1

    def ack(self, mid: int, generation: int) -> bool:
        self.acks += 1
        return True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Pages:
    """Nothing pages in this site (hour-long thresholds)."""

    def page(self, cmd: Any, now: float) -> None:
        return None

    def notice(self, cmd: Any, now: float) -> None:
        return None

    def stop(self, incident: str) -> None:
        pass


async def run(args: argparse.Namespace, tmp: Path) -> None:
    from monitor.board.feed import BoardFeed
    from monitor.config import load_config
    from monitor.core.site import SiteCore
    from monitor.driver import Driver
    from monitor.ingest import UNACKED_HIGH, Ingest
    from monitor.metrics import Metrics, Observer
    from monitor.runtime import Publisher
    from monitor.store import Store
    from monitor.topics import Topics
    convert: Any = None  # an older --src hands paho's own object to the ingest
    with contextlib.suppress(ImportError):
        from devices.mqtt import message_of as convert

    config_path = tmp / "boothwatch.toml"
    config_path.write_text(bench_site(
        mqtt_port=1883, http_port=8080, db=tmp / "boothwatch.db", booths=args.booths,
        auth=False, channel={"type": "console", "watched": True}).text(), encoding="utf-8")
    config = load_config(config_path, env={})
    now = time.time()
    core = SiteCore(config, new_id=lambda: str(uuid.uuid4()), restoring=True)
    core.restore(booths=[], incidents=[], devices=[], duty=[], now=now)
    core.start(now)
    store = await Store.open(str(tmp / "boothwatch.db"))
    link = Link()
    metrics = Metrics()
    publisher = Publisher(link, Topics(config.site.id), config,  # type: ignore[arg-type]
                          BoardFeed(lambda: []))
    driver = Driver(core, store=store, publish=publisher, pages=Pages(),
                    observe=Observer(metrics))
    ingest = Ingest(config, driver, store, link, metrics, time.time)  # type: ignore[arg-type]
    messages = [
        (i % 65535 + 1,
         f"boothwatch/{config.site.id}/booths/b{i % args.booths + 1}/events".encode(),
         json.dumps({**CYCLE[(i // args.booths) % len(CYCLE)], "id": f"core-{i}",
                     "device": "bench"}, separators=(",", ":")).encode())
        for i in range(args.events)]
    writer = asyncio.create_task(store.run_writer(), name="store-writer")
    gc.collect()
    gc.freeze()  # as the service does once started
    cpu, started = time.process_time(), time.perf_counter()
    for first in range(0, len(messages), args.turn):
        for mid, topic, payload in messages[first:first + args.turn]:
            msg: Any = paho.MQTTMessage(mid=mid, topic=topic)
            msg.payload, msg.qos = payload, 1
            ingest.on_message(msg if convert is None else convert(msg), 1)
        await asyncio.sleep(0)  # a turn of the loop, as between reads
        if ingest.unacked > UNACKED_HIGH:
            await store.flush()  # the read pause, until the store has caught up
    await store.flush()
    for _ in range(3):
        await asyncio.sleep(0)  # the acknowledgements of the last commit
    assert link.acks == args.events, f"{link.acks} of {args.events} acknowledged"
    cpu, wall = time.process_time() - cpu, time.perf_counter() - started
    writer.cancel()
    await store.close()
    gc.unfreeze()
    import monitor

    print(f"service code from {os.path.dirname(os.path.dirname(monitor.__file__))}")
    print(f"{args.events} events to {args.booths} booths in {wall:.2f} s: "
          f"{cpu / args.events * 1e6:.1f} µs of CPU per event (all threads), "
          f"{store.commits} commits, {link.published} retained states")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--booths", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--turn", type=int, default=200, help="messages per turn of the loop")
    parser.add_argument("--src", type=Path, default=REPO, metavar="DIR",
                        help="import monitor/, devices/, alerts/ from DIR")
    args = parser.parse_args(argv)
    _again_from(args.src)
    with tempfile.TemporaryDirectory(prefix="boothwatch-ingest-core-") as tmp:
        asyncio.run(run(args, Path(tmp)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
