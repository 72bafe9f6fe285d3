"""A burst of incidents: 1,000 within a second, and the other booths' calls meanwhile.

The service (``boothwatch run``, a subprocess, the deploy broker) gets ``--booths``
booths and one responder on a webhook channel pointing at a receiver in this
process; every incident pages once. First, ``--probes`` call presses on other
booths, ``--interval`` apart, give the normal press-to-page latency. Then
``--burst`` booths raise an incident at once, while as many presses again on other
booths go on at the same pace. ``--burst-kind``:

- ``silent`` (default; a power cut): each burst booth has a Zigbee2MQTT occupancy
  sensor (mains-powered, so silent for its booth's ``device_timeout``, here
  ``--silence``, means offline). Each reports once (``online``) after the probes
  before; ``--silence`` later all fall silent within the time that took to read,
  and the service's own timers raise 1,000 ``device_offline`` incidents (``low``:
  the booths are empty). No MQTT message stands in front of the probes.
- ``offline`` (a bridge or broker restart): each sensor's availability says
  ``offline``, 1,000 messages published at once (one client, QoS 1).
- ``call``: 1,000 call presses published at once (``high``).

Printed: how long the incidents took to be raised (the pages' ``raised_at``), the
time from the first to the last first-level page at the receiver, the burst's
raised-to-page (press-to-page for calls) distribution, and the probes' latency
before and during the burst. Every page must arrive exactly once.

    .venv/bin/python bench/burst.py [--burst-kind silent|offline|call] [--booths 10000]
        [--burst 1000] [--probes 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    SITE,
    Broker,
    Service,
    add_src_option,
    bench_site,
    broker_line,
    summarise,
    workdir,
)
from bench.latency import Receiver, connect, publish_spaced
from tests.harness.broker import free_port
from tests.harness.site import Table, device

KINDS = ("silent", "offline", "call")


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


def sensor_topic(booth: str) -> str:
    return f"z2m/sensor-{booth}"


def sensors(booths: Sequence[str]) -> list[Table]:
    """A Zigbee2MQTT occupancy sensor (mains-powered: a chatty one) per burst booth."""
    return [device(f"sensor-{b}", "zigbee2mqtt", sensor_topic(b), b, "occupancy")
            for b in booths]


def availability(booths: Sequence[str], state: str) -> list[tuple[str, bytes]]:
    return [(f"{sensor_topic(b)}/availability", json.dumps({"state": state}).encode())
            for b in booths]


def press_at_once(broker: Broker, messages: Sequence[tuple[str, bytes]],
                  booths: Sequence[str]) -> dict[str, float]:
    """Every message as fast as the client and broker take them; publish time by booth."""
    client = connect(broker, "burst")
    sent: dict[str, float] = {}
    try:
        infos = []
        for booth, (topic, payload) in zip(booths, messages, strict=True):
            sent[booth] = time.time()
            infos.append(client.publish(topic, payload, qos=1))
        for info in infos:
            info.wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()
    return sent


def latencies(receiver: Receiver, sent: dict[str, float]) -> list[float]:
    return [receiver.arrivals[b][0] - t for b, t in sent.items() if b in receiver.arrivals]


def raised(receiver: Receiver, booths: Sequence[str]) -> dict[str, float]:
    """When each booth's incident was raised (the first page's ``raised_at``; the service
    and this bench read the same clock)."""
    wanted = set(booths)
    out: dict[str, float] = {}
    for _at, page in receiver.pages:
        booth = str(page.get("booth"))
        if booth in wanted and booth not in out:
            out[booth] = datetime.fromisoformat(page["raised_at"]).timestamp()
    return out


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
        ids = [f"b{i}" for i in range(1, args.booths + 1)]
        burst, ids = ids[:args.burst], ids[args.burst:]
        before, during = ids[:args.probes], ids[args.probes:2 * args.probes]
        site = bench_site(
            mqtt_port=broker.port, http_port=http_port, db=tmp / "boothwatch.db",
            booths=args.booths, auth=broker.auth,
            channel={"type": "webhook", "url": receiver.url, "timeout": "10s"},
        )
        if args.burst_kind != "call":
            site.devices = sensors(burst)
        if args.burst_kind == "silent":
            for booth in site.booths[:args.burst]:
                booth["device_timeout"] = f"{args.silence:g}s"
        service = Service(tmp, site.text(), http_port, src=args.src, profile=args.profile)
        service.start()
        ready = await asyncio.to_thread(service.wait_ready, 120)
        print(f"service: ready in {ready:.2f} s with {args.booths} booths")
        await asyncio.sleep(args.settle)

        nonce = uuid.uuid4().hex[:8]
        heard: dict[str, float] = {}
        if args.burst_kind == "silent":
            # every sensor heard from once: all fall silent `--silence` after it was read
            heard = await asyncio.to_thread(press_at_once, broker,
                                            availability(burst, "online"), burst)
        # the connection to the receiver is open before anything is measured
        sent_before = await asyncio.to_thread(press_spaced, broker, before, args.interval, nonce)
        await receiver.wait_for(before, timeout=30)
        if any(b in receiver.arrivals for b in burst):
            print(f"burst: pages came before it was due (--silence {args.silence:g} s too short "
                  "for the start and the probes before?)")
            return 1

        if args.burst_kind == "silent":
            wait = min(heard.values()) + args.silence - args.lead - time.time()
            if wait < 0:
                print(f"burst: --silence {args.silence:g} s too short for the probes before")
                return 1
            await asyncio.sleep(wait)
        cpu0, wall0 = service.cpu_seconds() or 0.0, time.monotonic()
        probes = asyncio.create_task(asyncio.to_thread(
            press_spaced, broker, during, args.interval, nonce))
        await asyncio.sleep(args.lead)  # the burst starts with the probes under way
        if args.burst_kind == "call":
            sent_burst = await asyncio.to_thread(press_at_once, broker, calls(burst, nonce),
                                                 burst)
        elif args.burst_kind == "offline":
            sent_burst = await asyncio.to_thread(
                press_at_once, broker, availability(burst, "offline"), burst)
        else:
            sent_burst = {}
        sent_during = await probes
        await receiver.wait_until(
            lambda: all(b in receiver.arrivals for b in (*burst, *during)), args.timeout)
        cpu = ((service.cpu_seconds() or 0.0) - cpu0) / (time.monotonic() - wall0)
        await asyncio.sleep(0.5)  # an extra page would show up now
        service.check_alive()

        paged = [receiver.arrivals[b][0] for b in burst if b in receiver.arrivals]
        everyone = [*burst, *before, *during]
        missing = [b for b in everyone if b not in receiver.arrivals]
        extra = sum(len(receiver.arrivals[b]) - 1 for b in everyone if b in receiver.arrivals)
        what = {"call": "call presses", "offline": "availability offline messages"}
        if sent_burst:
            first, last_press = min(sent_burst.values()), max(sent_burst.values())
            print(f"burst: {len(burst)} {what[args.burst_kind]} published in "
                  f"{(last_press - first) * 1000:.0f} ms (first to last publish, QoS 1)")
        else:
            print(f"burst: {len(burst)} sensors silent for {args.silence:g} s (the service's "
                  "timers raise the incidents)")
        incidents = raised(receiver, burst)
        if incidents:
            first_raised = min(incidents.values())
            print(f"  {len(incidents)} incidents raised within "
                  f"{(max(incidents.values()) - first_raised) * 1000:.0f} ms "
                  f"(first to last raised_at)")
        if paged and sent_burst:
            print(f"  first press -> last page at the webhook:  {max(paged) - first:.3f} s"
                  f"  (all {len(paged)} pages)")
        # a sensor is due (offline) `--silence` after it was read: no earlier than published
        due = {b: t + args.silence for b, t in heard.items()}
        if paged and due:
            print(f"  first sensor due -> last page at the webhook: "
                  f"{max(paged) - min(due.values()):.3f} s  (all {len(paged)} pages)")
        if paged and incidents:
            print(f"  first raised -> last page at the webhook: "
                  f"{max(paged) - first_raised:.3f} s  (all {len(paged)} pages)")
        if sent_burst:
            print(f"  press -> page, burst:        {summarise(latencies(receiver, sent_burst))}")
        if due:
            print(f"  due -> page, burst:          {summarise(latencies(receiver, due))}")
        print(f"  raised -> page, burst:       {summarise(latencies(receiver, incidents))}")
        print(f"other booths' calls, {args.interval * 1000:g} ms apart:")
        print(f"  before the burst:            {summarise(latencies(receiver, sent_before))}")
        print(f"  during the burst:            {summarise(latencies(receiver, sent_during))}")
        # where they waited: to be read and raised, or for their page once raised
        raised_during = raised(receiver, during)
        waited = [raised_during[b] - t for b, t in sent_during.items() if b in raised_during]
        print(f"    publish -> raised:         {summarise(waited)}")
        print(f"    raised -> page:            {summarise(latencies(receiver, raised_during))}")
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
    parser.add_argument("--burst-kind", choices=KINDS, default="silent",
                        help="what the burst booths do: their sensors fall silent, report "
                             "offline, or they call (default: silent)")
    parser.add_argument("--burst", type=int, default=1000,
                        help="booths that raise an incident at once")
    parser.add_argument("--silence", type=float, default=15.0,
                        help="--burst-kind silent: the burst booths' device_timeout, seconds")
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
    with workdir("burst", args) as tmp:
        return asyncio.run(run(args, tmp))


if __name__ == "__main__":
    raise SystemExit(main())
