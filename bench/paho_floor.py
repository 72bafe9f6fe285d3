"""The ingest floor: what paho alone costs per event, with nothing stored or decided.

`bench/ingest.py` measures the service. This runs the same publisher process, the same
events (10,000 booths, QoS 1) and the same deploy broker, with a bare paho subscriber in
the service's place: MQTT 5 like the service, manual acknowledgements, paho's own
network loop (`loop_forever`), and nothing else. Each message is acknowledged as soon as
paho hands it over. With ``--state`` the subscriber also publishes one QoS 0 retained
message per event (the service's retained booth state, 200 bytes), as the service does
when a booth changes.

It prints the rate at which the subscriber took every event, and the CPU per event of
the subscriber, the publisher and the broker. On a 2-core box the three share 200 µs of
CPU per event at 10,000 events/s: what paho alone takes of that is a floor that no work
of the service's own can go under.

    .venv/bin/python bench/paho_floor.py [--booths 10000] [--events 100000] [--state]
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import sys
import time
import uuid
from collections.abc import Sequence
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.harness import MQTT_PASSWORD, MQTT_USER, SITE, Broker, broker_line, cpu_seconds, workdir
from bench.ingest import publisher

STATE = b'{"occupied":true,"session_started_at":"2026-12-04T22:00:00.000Z","motion":"moving",' \
        b'"still_since":null,"incident":null,"devices_ok":true,"mode":"normal","unmonitored":false}'


def subscriber(port: int, auth: bool, total: int, state: bool, ready: MpEvent,
               results: multiprocessing.Queue[tuple[Any, ...]]) -> None:
    """Take ``total`` messages at QoS 1, acknowledge each at once, report when done."""
    got = 0
    last = 0.0

    def on_message(client: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        nonlocal got, last
        client.ack(msg.mid, msg.qos)
        if state:
            booth = msg.topic.split("/")[3]
            client.publish(f"boothwatch/{SITE}/booths/{booth}/state", STATE, qos=0, retain=True)
        got += 1
        if got >= total:
            last = time.time()
            client.disconnect()

    def on_subscribe(*_a: Any) -> None:
        ready.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"floor-{uuid.uuid4().hex[:8]}",
                         protocol=paho.MQTTv5, manual_ack=True)
    if auth:
        client.username_pw_set(MQTT_USER, MQTT_PASSWORD)
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.on_connect = lambda c, *_a: c.subscribe(f"boothwatch/{SITE}/booths/+/events", qos=1)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: untyped
    props.SessionExpiryInterval = 60
    props.ReceiveMaximum = 1000  # as the service
    client.connect("127.0.0.1", port, clean_start=True, properties=props)
    client.loop_forever()
    results.put(("subscriber", got, last))


def run(args: argparse.Namespace, tmp: Path) -> int:
    broker = Broker(tmp / "broker")
    procs: list[multiprocessing.process.BaseProcess] = []
    try:
        broker.start()
        print(broker_line(broker))
        ctx = multiprocessing.get_context("spawn")
        go, sub_ready = ctx.Event(), ctx.Event()
        results: multiprocessing.Queue[tuple[Any, ...]] = ctx.Queue()
        sub = ctx.Process(target=subscriber, daemon=True,
                          args=(broker.port, broker.auth, args.events, args.state, sub_ready,
                                results))
        sub.start()
        procs.append(sub)
        if not sub_ready.wait(30):
            print("FAILED: the subscriber did not subscribe")
            return 1
        nonce = uuid.uuid4().hex[:8]
        pub = ctx.Process(target=publisher, daemon=True,
                          args=(0, broker.port, broker.auth, list(range(1, args.booths + 1)),
                                args.booths, args.events, nonce, args.inflight, go, results))
        pub.start()
        procs.append(pub)
        msg = results.get(timeout=60)
        if msg[0] != "ready":
            print(f"FAILED: publisher: {msg}")
            return 1
        print(f"publishing {args.events} events to {args.booths} booths, QoS 1, "
              f"{args.inflight} in flight; a bare paho subscriber (MQTT 5, manual ack"
              f"{', a QoS 0 retained state per event' if args.state else ''})")
        broker_pid = broker.pid()
        pids = {"subscriber": sub.pid, "publisher": pub.pid, "broker": broker_pid}
        before = {k: cpu_seconds(p) if p else None for k, p in pids.items()}
        go.set()
        done: dict[str, tuple[Any, ...]] = {}
        deadline = time.monotonic() + args.timeout
        while len(done) < 2 and time.monotonic() < deadline:
            try:
                item = results.get(timeout=1)
            except queue.Empty:
                continue
            done[item[0]] = item
        after = {k: cpu_seconds(p) if p else None for k, p in pids.items()}
        if len(done) < 2:
            print(f"FAILED: timed out after {args.timeout:g} s")
            return 1
        first = done["done"][2]
        _, got, last = done["subscriber"]
        elapsed = last - first
        print(f"subscriber took all:      {got} of {args.events} in {elapsed:.2f} s "
              f"({got / elapsed:,.0f} events/s)")
        for name in ("subscriber", "publisher", "broker"):
            b, a = before[name], after[name]
            if a is None or b is None:
                print(f"{name} CPU:".ljust(26) + "(not readable)")
                continue
            print(f"{name} CPU:".ljust(26) + f"{a - b:.2f} s  ({(a - b) / got * 1e6:.0f} µs/event)")
        total = sum((after[k] or 0) - (before[k] or 0) for k in pids)
        print(f"all three:                {total / got * 1e6:.0f} µs/event "
              f"(2 cores give 200 µs/event at 10,000 events/s)")
        return 0 if got == args.events else 1
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join(5)
        broker.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--booths", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--inflight", type=int, default=1000)
    parser.add_argument("--state", action="store_true",
                        help="also publish a QoS 0 retained state per event, as the service")
    parser.add_argument("--timeout", type=float, default=150.0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    with workdir("paho-floor", args) as tmp:
        return run(args, tmp)


if __name__ == "__main__":
    raise SystemExit(main())
