"""A burst of incidents: 1,000 calls within a second, and the other booths' calls meanwhile.

The service (``boothwatch run``, a subprocess, the deploy broker) gets ``--booths``
booths and one responder on a webhook channel pointing at a receiver in this
process; a call pages once. First, ``--probes`` call presses on other booths,
``--interval`` apart, give the normal press-to-page latency. Then ``--burst``
booths press at once (one client, QoS 1, as fast as the broker takes them), while
as many presses again on other booths go on at the same pace. Printed: how long
the burst took to publish, the time from its first press to its last page at the
receiver, the burst's press-to-page distribution, and the probes' latency before
and during the burst. Every page must arrive exactly once.

    .venv/bin/python bench/burst.py [--booths 10000] [--burst 1000] [--probes 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import SITE, Broker, Service, add_src_option, bench_site, broker_line, summarise
from bench.latency import Receiver, connect, publish_spaced
from tests.harness.broker import free_port


def calls(booths: Sequence[str], nonce: str) -> list[tuple[str, bytes]]:
    return [(f"boothwatch/{SITE}/booths/{b}/events",
             json.dumps({"kind": "button", "press": "call", "id": f"call-{nonce}-{b}"}).encode())
            for b in booths]


def press_spaced(broker: Broker, booths: Sequence[str], interval: float,
                 nonce: str) -> dict[str, float]:
    """One call per booth, ``interval`` apart, from a client of its own; publish time by booth."""
    client = connect(broker, "probes")
    try:
        sent = publish_spaced(client, calls(booths, nonce), interval)
        time.sleep(0.2)  # let the last PUBACKs in before disconnecting
    finally:
        client.disconnect()
        client.loop_stop()
    return {topic.split("/")[3]: t for topic, t in sent.items()}


def press_at_once(broker: Broker, booths: Sequence[str], nonce: str) -> dict[str, float]:
    """Every call as fast as the client and broker take them; publish time by booth."""
    client = connect(broker, "burst")
    sent: dict[str, float] = {}
    try:
        infos = []
        for topic, payload in calls(booths, nonce):
            sent[topic.split("/")[3]] = time.time()
            infos.append(client.publish(topic, payload, qos=1))
        for info in infos:
            info.wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()
    return sent


def latencies(receiver: Receiver, sent: dict[str, float]) -> list[float]:
    return [receiver.arrivals[b][0] - t for b, t in sent.items() if b in receiver.arrivals]


async def run(args: argparse.Namespace, tmp: Path) -> int:
    broker = Broker(tmp / "broker")
    receiver = Receiver()
    service: Service | None = None
    failed = False
    try:
        broker.start()
        print(broker_line(broker))
        await receiver.start()
        http_port = free_port()
        config = bench_site(
            mqtt_port=broker.port, http_port=http_port, db=tmp / "boothwatch.db",
            booths=args.booths, auth=broker.auth,
            channel={"type": "webhook", "url": receiver.url, "timeout": "10s"},
        ).text()
        service = Service(tmp, config, http_port, src=args.src, profile=args.profile)
        service.start()
        ready = await asyncio.to_thread(service.wait_ready, 120)
        print(f"service: ready in {ready:.2f} s with {args.booths} booths")
        await asyncio.sleep(args.settle)

        ids = [f"b{i}" for i in range(1, args.booths + 1)]
        burst, ids = ids[:args.burst], ids[args.burst:]
        before, during = ids[:args.probes], ids[args.probes:2 * args.probes]
        nonce = uuid.uuid4().hex[:8]
        # the connection to the receiver is open before anything is measured
        sent_before = await asyncio.to_thread(press_spaced, broker, before, args.interval, nonce)
        await receiver.wait_for(before, timeout=30)

        cpu0, wall0 = service.cpu_seconds() or 0.0, time.monotonic()
        probes = asyncio.create_task(asyncio.to_thread(
            press_spaced, broker, during, args.interval, nonce))
        await asyncio.sleep(args.lead)  # the burst starts with the probes under way
        sent_burst = await asyncio.to_thread(press_at_once, broker, burst, nonce)
        sent_during = await probes
        await receiver.wait_until(
            lambda: all(b in receiver.arrivals for b in (*burst, *during)), args.timeout)
        cpu = ((service.cpu_seconds() or 0.0) - cpu0) / (time.monotonic() - wall0)
        await asyncio.sleep(0.5)  # an extra page would show up now
        service.check_alive()

        first, last_press = min(sent_burst.values()), max(sent_burst.values())
        paged = [receiver.arrivals[b][0] for b in burst if b in receiver.arrivals]
        everyone = [*burst, *before, *during]
        missing = [b for b in everyone if b not in receiver.arrivals]
        extra = sum(len(receiver.arrivals[b]) - 1 for b in everyone if b in receiver.arrivals)
        print(f"burst: {len(burst)} calls published in {(last_press - first) * 1000:.0f} ms "
              f"(first to last publish, QoS 1)")
        if paged:
            print(f"  first press -> last page at the webhook: {max(paged) - first:.3f} s"
                  f"  (all {len(paged)} pages)")
        print(f"  press -> page, burst:        {summarise(latencies(receiver, sent_burst))}")
        print(f"other booths' calls, {args.interval * 1000:g} ms apart:")
        print(f"  before the burst:            {summarise(latencies(receiver, sent_before))}")
        print(f"  during the burst:            {summarise(latencies(receiver, sent_during))}")
        print(f"pages: expected {len(everyone)}, missing {len(missing)}, extra {extra}; "
              f"service CPU during the burst {cpu * 100:.0f}%")
        print(f"service RSS now {service.memory_mb('VmRSS') or 0:.1f} MiB, peak (VmHWM) "
              f"{service.peak_rss_mb() or 0:.1f} MiB   (target < 150 MiB)")
        failed = bool(missing or extra)
    finally:
        if service is not None:
            code = service.stop()
            print(f"service: exit code {code} after SIGTERM "
                  f"({'clean' if code == 0 else 'NOT CLEAN, see ' + str(service.stderr_path)})")
            if code != 0:
                print(service.stderr_tail())
                failed = True
        await receiver.stop()
        broker.stop()
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--booths", type=int, default=10_000, help="booths in the config")
    parser.add_argument("--burst", type=int, default=1000, help="booths that call at once")
    parser.add_argument("--probes", type=int, default=100,
                        help="calls on other booths before the burst, and as many during it")
    parser.add_argument("--interval", type=float, default=0.02,
                        help="seconds between the other booths' calls")
    parser.add_argument("--lead", type=float, default=0.2,
                        help="seconds of other booths' calls before the burst starts")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds to wait after /readyz before measuring")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for every page")
    parser.add_argument("--profile", metavar="FILE",
                        help="run the service under cProfile and write FILE (skews timing)")
    add_src_option(parser)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    args.profile = Path(args.profile).resolve() if args.profile else None
    if args.burst + 2 * args.probes > args.booths:
        parser.error("--booths must hold --burst booths and twice --probes others")
    tmp = Path(tempfile.mkdtemp(prefix="boothwatch-burst-"))
    try:
        return asyncio.run(run(args, tmp))
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
