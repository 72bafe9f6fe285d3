"""Press-to-page latency on other booths while one device floods (issue 6).

The deploy-config broker, the real service (``boothwatch run``, a subprocess,
default ``[rate_limit]``: 10 messages a second per sender, burst 50) and a
webhook receiver in this process, as in ``bench/latency.py``. For each flood
rate (0 = no flood, then e.g. 1,000 / 3,000 / 5,000 messages a second), a
flooder process publishes canonical motion reports from one device of booth b1
at QoS 1, paced to that rate; after a warm-up second, one call press per booth
goes to other booths, ``--interval`` apart, and the latency is page received -
press published (both ``time.time()`` on this machine). Each phase uses fresh
booths, so every press is a first call and pages exactly once.

Per phase it prints the flood messages sent (and the rate achieved), dropped by
the service (``boothwatch_messages_dropped_total``), stored (accepted motion
events), how long after the flood ended the service had handled all of them,
and the latency p50/p90/p99/max. Exit 1 if a page was missing or duplicated, a
flood message was neither dropped nor stored, or the service did not exit 0.

    .venv/bin/python bench/flood.py [--rates 0,1000,3000,5000] [--presses 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.harness import (
    MQTT_PASSWORD,
    MQTT_USER,
    SITE,
    Broker,
    Service,
    add_src_option,
    bench_site,
    broker_line,
    percentile,
    summarise,
    workdir,
)
from bench.latency import Receiver, press
from tests.harness.broker import free_port
from tests.harness.site import booth

FLOOD_TOPIC = f"boothwatch/{SITE}/booths/b1/events"
DROPPED = 'boothwatch_messages_dropped_total{booth="b1",reason="rate_limited",source="canonical"}'
STORED = 'boothwatch_events_total{kind="motion",result="accepted"}'
INFLIGHT = 1000  # unacknowledged QoS 1 messages the flooder keeps (paho: at most 65535)


def flooder(port: int, auth: bool, rate: float, seconds: float, started: MpEvent,
            results: Queue[tuple[Any, ...]]) -> None:
    """A stuck device: motion reports at ``rate`` a second for ``seconds`` (QoS 1).

    One thread drives paho's loop itself (waiting at most 1 ms in select, so it does
    not spin a core the service and broker need) and publishes what is due.
    """
    acked = 0

    def on_publish(_c: paho.Client, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        nonlocal acked
        acked += 1

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-flood-{rate:g}",
                         protocol=paho.MQTTv5)
    if auth:
        client.username_pw_set(MQTT_USER, MQTT_PASSWORD)
    client.max_inflight_messages_set(INFLIGHT)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    deadline = time.monotonic() + 10
    while not client.is_connected() and time.monotonic() < deadline:
        client.loop(0.05)
    if not client.is_connected():
        results.put(("error", "flooder: no CONNACK"))
        started.set()
        return
    payloads = [json.dumps({"kind": "motion", "state": state, "device": "stuck-radar"},
                           separators=(",", ":")).encode() for state in ("moving", "still")]
    sent = 0
    try:
        start = time.monotonic()
        started.set()
        end = start + seconds
        while (now := time.monotonic()) < end:
            due = int((now - start) * rate)
            while sent < due and sent - acked < INFLIGHT:
                client.publish(FLOOD_TOPIC, payloads[sent % 2], qos=1)
                sent += 1
            client.loop(0.001)
        elapsed = time.monotonic() - start
        give_up = time.monotonic() + 30
        while acked < sent and time.monotonic() < give_up:
            client.loop(0.01)
        results.put(("done", sent, elapsed, acked, time.time()))
    finally:
        client.disconnect()


def cpu_seconds(service: Service) -> float:
    """User + system CPU time the service process has used (from /proc), NaN if unknown."""
    if service.process is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{service.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def stats(values: Sequence[float]) -> tuple[float, float]:
    return percentile(values, 50) * 1000, percentile(values, 99) * 1000


async def phase(args: argparse.Namespace, broker: Broker, service: Service,
                receiver: Receiver, rate: float, booths: list[str]) -> tuple[bool, str]:
    """One flood rate; returns (ok, the summary row)."""
    before = await asyncio.to_thread(service.metrics)
    cpu_before, wall_before = cpu_seconds(service), time.monotonic()
    window = args.warmup + len(booths) * args.interval + 0.5
    ctx = multiprocessing.get_context("spawn")
    results: Queue[tuple[Any, ...]] = ctx.Queue()
    started = ctx.Event()
    process = None
    if rate > 0:
        process = ctx.Process(target=flooder, args=(broker.port, broker.auth, rate, window,
                                                    started, results), daemon=True)
        process.start()
        await asyncio.to_thread(started.wait, 30)
    await asyncio.sleep(args.warmup)
    sent_at = await asyncio.to_thread(press, broker, booths, args.interval)
    await receiver.wait_for(booths, timeout=30)
    latencies = [receiver.arrivals[b][0] - t for b, t in sent_at.items() if b in receiver.arrivals]
    missing = [b for b in booths if b not in receiver.arrivals]
    extra = sum(len(receiver.arrivals[b]) - 1 for b in booths if b in receiver.arrivals)
    ok = not missing and not extra
    flood_line = "no flood"
    row_flood = "-"
    if process is not None:
        result = await asyncio.to_thread(results.get, True, window + 60)
        await asyncio.to_thread(process.join, 10)
        if result[0] != "done":
            return False, f"flooder failed: {result[1]}"
        _tag, sent, elapsed, acked, ended = result
        # the service is done with the flood when every message is dropped or stored
        drained_at = None
        give_up = time.monotonic() + 60
        while time.monotonic() < give_up:
            now = await asyncio.to_thread(service.metrics)
            dropped = now.get(DROPPED, 0.0) - before.get(DROPPED, 0.0)
            stored = now.get(STORED, 0.0) - before.get(STORED, 0.0)
            if dropped + stored >= sent:
                drained_at = time.time()
                break
            await asyncio.sleep(0.1)
        if drained_at is None or dropped + stored != sent:
            ok = False
        cpu = (cpu_seconds(service) - cpu_before) / (time.monotonic() - wall_before)
        lag = "not within 60 s" if drained_at is None else f"{max(0.0, drained_at - ended):.2f} s"
        flood_line = (f"flood: sent {sent} in {elapsed:.1f} s ({sent / elapsed:,.0f}/s, "
                      f"broker acked {acked}), dropped {dropped:.0f}, stored {stored:.0f}, "
                      f"all handled {lag} after the last was acknowledged; service CPU "
                      f"{cpu:.0%} of a core")
        row_flood = (f"{sent / elapsed:>7,.0f}/s {sent:>7} {dropped:>7.0f} {stored:>6.0f} "
                     f"{cpu:>5.0%}")
    if process is None:
        cpu = (cpu_seconds(service) - cpu_before) / (time.monotonic() - wall_before)
        flood_line += f"; service CPU {cpu:.0%} of a core"
        row_flood = f"{'-':>30} {cpu:>5.0%}"
    print(f"[flood {rate:g}/s] {flood_line}")
    print(f"  press -> page: {summarise(latencies)}; missing {len(missing)}, extra {extra}")
    p50, p99 = stats(latencies) if latencies else (float("nan"), float("nan"))
    mx = max(latencies) * 1000 if latencies else float("nan")
    row = f"{rate:>7g}/s  {row_flood:>44}  {p50:8.2f} {p99:8.2f} {mx:8.2f}  {len(missing)}"
    return ok, row


async def run(args: argparse.Namespace, tmp: Path) -> int:
    broker = Broker(tmp / "broker")
    receiver = Receiver()
    service: Service | None = None
    failed = False
    rows: list[str] = []
    try:
        broker.start()
        print(broker_line(broker))
        await receiver.start()
        http_port = free_port()
        warm = [f"w{i}" for i in range(1, 11)]  # first pages open the webhook connection
        total_booths = 1 + len(args.rates) * args.presses
        config = bench_site(
            mqtt_port=broker.port, http_port=http_port, db=tmp / "boothwatch.db",
            booths=total_booths, auth=broker.auth,
            channel={"type": "webhook", "url": receiver.url, "timeout": "5s"},
            extra_booths=[booth(w, f"Warm-up {w}") for w in warm],
        ).text()
        service = Service(tmp, config, http_port, src=args.src, profile=args.profile)
        service.start()
        ready = await asyncio.to_thread(service.wait_ready)
        print(f"service: ready in {ready:.2f} s with {total_booths} booths; b1 floods, "
              f"{args.presses} presses per phase on other booths, {args.interval * 1000:g} ms "
              f"apart")
        await asyncio.sleep(args.settle)
        await asyncio.to_thread(press, broker, warm, args.interval)
        await receiver.wait_for(warm, timeout=30)
        for n, rate in enumerate(args.rates):
            booths = [f"b{2 + n * args.presses + i}" for i in range(args.presses)]
            ok, row = await phase(args, broker, service, receiver, rate, booths)
            service.check_alive()
            failed |= not ok
            rows.append(row)
            await asyncio.sleep(args.pause)
        print()
        print(f"{'flood':>9}  {'achieved    sent dropped stored   CPU':>44}  "
              f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  missing")
        for row in rows:
            print(row)
        print(f"broker drop warnings: {broker.dropped_warnings()}")
        failed |= broker.dropped_warnings() > 0
        print(f"service log lines about drops: {service.log_count('messages_dropped')}")
    finally:
        if service is not None:
            code = service.stop()
            print(f"service: exit code {code} after SIGTERM "
                  f"({'clean' if code == 0 else 'NOT CLEAN, see ' + str(service.stderr_path)})")
            failed |= code != 0
        await receiver.stop()
        broker.stop()
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rates", default="0,1000,3000,5000",
                        help="flood rates in messages a second, comma-separated (0: no flood)")
    parser.add_argument("--presses", type=int, default=100, help="call presses per phase")
    parser.add_argument("--interval", type=float, default=0.05,
                        help="seconds between presses")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds of flood before the first press")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds to wait after /readyz before the first phase")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between phases")
    parser.add_argument("--profile", metavar="FILE",
                        help="run the service under cProfile and write FILE (skews latency)")
    add_src_option(parser)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    args.profile = Path(args.profile).resolve() if args.profile else None
    try:
        args.rates = [float(r) for r in args.rates.split(",")]
    except ValueError:
        parser.error("--rates: comma-separated numbers, e.g. 0,1000,3000,5000")
    if any(r < 0 for r in args.rates) or args.presses < 1:
        parser.error("--rates must be >= 0 and --presses >= 1")
    with workdir("flood", args) as tmp:
        return asyncio.run(run(args, tmp))


if __name__ == "__main__":
    raise SystemExit(main())
