"""Sustained ingest: events per second that the real service stores and acknowledges.

The deploy-config broker, the service (``boothwatch run``, a subprocess) with
10,000 booths and hour-long thresholds (so nothing pages), and 1-2 publisher
processes that publish canonical events (occupancy, motion, heartbeat; each with
a unique id) at QoS 1 as fast as the broker takes them. The clock runs from the
first publish until ``SELECT count(*) FROM events`` in the service's store (SQLite,
or PostgreSQL with ``--backend postgresql``) reaches the total. Then: /metrics must
show every event accepted and none rejected, the broker must have dropped nothing,
and the service's persistent session must hold nothing unacknowledged. Target: >= 10,000 events/s.

    .venv/bin/python bench/ingest.py [--booths 10000] [--events 100000] [--publishers 1]
    .venv/bin/python bench/ingest.py --profile ingest.prof   # service under cProfile
    .venv/bin/python bench/ingest.py --backend postgresql    # the store on PostgreSQL
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pstats
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.harness import (
    MQTT_PASSWORD,
    MQTT_USER,
    SITE,
    BenchStore,
    Broker,
    Service,
    add_backend_option,
    add_src_option,
    bench_site,
    broker_line,
    cpu_seconds,
    stored,
    workdir,
)
from monitor.store_base import Reader
from tests.harness.broker import free_port

TARGET = 10_000.0  # events/s
CLIENT_ID = "boothwatch-bench"
# One booth's events cycle through these: a session with movement, a heartbeat, stillness.
CYCLE: tuple[dict[str, Any], ...] = (
    {"kind": "occupancy", "occupied": True},
    {"kind": "motion", "state": "moving"},
    {"kind": "heartbeat", "battery": 87},
    {"kind": "motion", "state": "still"},
    {"kind": "occupancy", "occupied": False},
)


def events_for(booth_numbers: Sequence[int], booths: int, total: int, nonce: str,
               ) -> list[tuple[str, bytes]]:
    """Event i goes to booth (i % booths) + 1 and is step i // booths of that booth's cycle.

    A publisher owns whole booths, so each booth's events keep their order.
    """
    own = set(booth_numbers)
    out = []
    for i in range(total):
        booth = i % booths + 1
        if booth in own:
            body = {**CYCLE[(i // booths) % len(CYCLE)], "id": f"{nonce}-{i}", "device": "bench"}
            out.append((f"boothwatch/{SITE}/booths/b{booth}/events",
                        json.dumps(body, separators=(",", ":")).encode()))
    return out


def publisher(index: int, port: int, auth: bool, booth_numbers: list[int], booths: int,
              total: int, nonce: str, inflight: int, go: MpEvent,
              results: Queue[tuple[Any, ...]]) -> None:
    """A publisher process: connect, report ready, wait for ``go``, publish all, wait for acks.

    One thread drives paho's network loop itself and never hands paho more than
    ``inflight`` unacknowledged messages: paho keys its outgoing queue by the
    16-bit packet id, so more than 65535 queued messages overwrite each other
    and are silently lost (and a second thread halves the rate).
    """
    messages = events_for(booth_numbers, booths, total, nonce)
    acked = 0

    def on_publish(_c: paho.Client, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        nonlocal acked
        acked += 1

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{index}-{nonce}",
                         protocol=paho.MQTTv5)
    if auth:
        client.username_pw_set(MQTT_USER, MQTT_PASSWORD)
    client.max_inflight_messages_set(inflight)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    deadline = time.monotonic() + 10
    while not client.is_connected() and time.monotonic() < deadline:
        client.loop(0.05)
    if not client.is_connected():
        results.put(("error", index, "no CONNACK"))
        return
    try:
        results.put(("ready", index, len(messages)))
        while not go.wait(0.05):
            client.loop(0)  # keep-alive while the others get ready
        first = time.time()
        cpu = time.process_time()  # this process's CPU (all its threads) while it publishes
        sent = 0
        queued = 0.0
        give_up = time.monotonic() + 300
        while acked < len(messages) and time.monotonic() < give_up:
            while sent < len(messages) and sent - acked < inflight:
                topic, payload = messages[sent]
                client.publish(topic, payload, qos=1)
                sent += 1
                if sent == len(messages):
                    queued = time.time()
            client.loop(0.01)
        results.put(("done", index, first, queued or time.time(), time.time(), acked,
                     time.process_time() - cpu))
    finally:
        client.disconnect()


def unacknowledged(broker: Broker, wait: float = 2.0) -> int:
    """Resume the service's persistent session; count what the broker still had for it."""
    received = 0
    connected = threading.Event()

    def on_message(_c: paho.Client, _u: Any, _m: paho.MQTTMessage) -> None:
        nonlocal received
        received += 1

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=CLIENT_ID, protocol=paho.MQTTv5)
    if broker.auth:
        client.username_pw_set(MQTT_USER, MQTT_PASSWORD)
    client.on_message = on_message
    client.on_connect = lambda c, u, f, rc, p: connected.set()
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: untyped
    props.SessionExpiryInterval = 0  # the session ends when we disconnect
    client.connect(broker.host, broker.port, clean_start=False, properties=props)
    client.loop_start()
    try:
        connected.wait(10)
        time.sleep(wait)
    finally:
        client.disconnect()
        client.loop_stop()
    return received


def report_progress(service: Service, store: BenchStore, before: int,
                    finished: threading.Event) -> None:
    """Every 5 s: stored rows and what /metrics says (in its own thread, since /metrics
    can take seconds to answer under load, which must not delay the measurement)."""
    db = store.reader()
    try:
        while not finished.wait(5):
            print(f"  ... {stored(db) - before} stored  {progress(service)}", flush=True)
    finally:
        db.close()


def progress(service: Service) -> str:
    """What /metrics says now (it may be slow to answer under load: that is a finding too)."""
    started = time.monotonic()
    try:
        m = service.metrics()
    except OSError as exc:
        return f"(/metrics did not answer: {exc})"
    accepted = metric_sum(m, "boothwatch_events_total", 'result="accepted"')
    pending = m.get("boothwatch_store_pending_writes", float("nan"))
    commit = m.get("boothwatch_store_last_commit_seconds", float("nan"))
    unacked = m.get("boothwatch_mqtt_unacked_messages", float("nan"))
    return (f"accepted {accepted:.0f}  rows waiting for commit {pending:.0f}  "
            f"last commit {commit * 1000:.0f} ms  unacknowledged {unacked:.0f}  "
            f"(/metrics answered in {time.monotonic() - started:.2f} s)")


def metric_sum(samples: dict[str, float], name: str, *labels: str) -> float:
    return sum(v for k, v in samples.items()
               if k.startswith(name + "{") and all(label in k for label in labels))


def show_profile(path: Path, top: int) -> None:
    stats = pstats.Stats(str(path))
    stats.strip_dirs()
    for order in ("tottime", "cumulative"):
        print(f"\n--- service profile: top {top} by {order} (main thread only) ---")
        stats.sort_stats(order).print_stats(top)


def run(args: argparse.Namespace, tmp: Path) -> int:
    overrides = dict(item.split("=", 1) for item in args.broker_set)
    broker = Broker(tmp / "broker", overrides)
    service: Service | None = None
    procs: list[multiprocessing.process.BaseProcess] = []
    failed = False
    code: int | None = None
    db: Reader | None = None
    store: BenchStore | None = None
    checked = False  # the run got as far as its figures
    profile = Path(args.profile).resolve() if args.profile else None
    try:
        broker.start()
        print(broker_line(broker))
        http_port = free_port()
        store = BenchStore(args.backend, tmp)
        print(f"store: {store.describe()}")
        config = bench_site(
            mqtt_port=broker.port, http_port=http_port, **store.site(), booths=args.booths,
            # nothing pages; a responder needs a channel that reaches a person
            auth=broker.auth, channel={"type": "console", "watched": True},
            client_id=CLIENT_ID, protocol=args.protocol,
        ).text()
        service = Service(tmp, config, http_port, profile=profile, src=args.src,
                          env=store.env)
        service.start()
        ready = service.wait_ready(timeout=120)
        pid = service.process.pid if service.process else "?"
        print(f"service: ready in {ready:.2f} s with {args.booths} booths, MQTT {args.protocol} "
              f"(pid {pid}"
              f"{', under cProfile' if profile else ''})")
        db = store.reader()
        before = stored(db)

        ctx = multiprocessing.get_context("spawn")
        go = ctx.Event()
        results: Queue[tuple[Any, ...]] = ctx.Queue()
        nonce = uuid.uuid4().hex[:8]
        for k in range(args.publishers):
            numbers = list(range(k + 1, args.booths + 1, args.publishers))
            proc = ctx.Process(
                target=publisher, daemon=True,
                args=(k, broker.port, broker.auth, numbers, args.booths, args.events, nonce,
                      args.inflight, go, results),
            )
            proc.start()
            procs.append(proc)
        for _ in procs:
            msg = results.get(timeout=60)
            if msg[0] != "ready":
                raise RuntimeError(f"publisher failed: {msg}")
        print(f"publishing {args.events} events to {args.booths} booths from "
              f"{args.publishers} publisher process(es), QoS 1, {args.inflight} in flight each")

        broker_pid = broker.pid()
        cpu_before = service.cpu_seconds()
        broker_cpu_before = cpu_seconds(broker_pid) if broker_pid else None
        go.set()
        target = before + args.events
        deadline = time.monotonic() + args.timeout
        count = before
        finished = threading.Event()
        reporter = threading.Thread(
            target=report_progress, args=(service, store, before, finished), daemon=True
        )
        reporter.start()
        try:
            while count < target and time.monotonic() < deadline:
                time.sleep(0.01)
                service.check_alive()
                count = stored(db)
            done_at = time.time()
            cpu_after = service.cpu_seconds()
            broker_cpu_after = cpu_seconds(broker_pid) if broker_pid else None
        finally:
            finished.set()
            reporter.join(15)
        if count < target:
            print(f"TIMED OUT after {args.timeout:g} s: {count - before} of {args.events} stored;"
                  f" broker drop warnings {broker.dropped_warnings()}")
            failed = True
            return 1
        done = [results.get(timeout=30) for _ in procs]
        first = min(d[2] for d in done)
        queued = max(d[3] for d in done)
        broker_acked = max(d[4] for d in done)
        pub_acks = sum(d[5] for d in done)
        publishers_cpu = sum(d[6] for d in done)
        total_stored = count - before
        elapsed = done_at - first

        samples = service.metrics()
        accepted = metric_sum(samples, "boothwatch_events_total", 'result="accepted"')
        duplicates = metric_sum(samples, "boothwatch_events_total", 'result="duplicate"')
        errors = metric_sum(samples, "boothwatch_events_total", 'result="error"')
        rejected = metric_sum(samples, "boothwatch_events_rejected_total")
        rss = service.peak_rss_mb()
        rate = total_stored / elapsed if elapsed > 0 else 0.0
        (last_received,) = db.execute("SELECT max(received_at) FROM events").fetchall()[0]
        received_in = float(last_received) - first

        print(f"stored {total_stored} of {args.events} events in {elapsed:.2f} s "
              f"(first publish -> last stored)")
        print(f"ingest rate:              {rate:,.0f} events/s   "
              f"(target {TARGET:,.0f}: {'MET' if rate >= TARGET else 'MISSED'})")
        print(f"broker intake:            {pub_acks} PUBACKs to publishers in "
              f"{broker_acked - first:.2f} s ({pub_acks / max(broker_acked - first, 1e-9):,.0f}/s);"
              f" last publish() at {queued - first:.2f} s")
        print(f"service received all:     {received_in:.2f} s after the first publish "
              f"({total_stored / max(received_in, 1e-9):,.0f}/s); the last commit came "
              f"{done_at - float(last_received):.2f} s after that")
        per_event = 1e6 / max(total_stored, 1)
        shares: dict[str, float] = {}
        if cpu_before is not None and cpu_after is not None:
            cpu = shares["service"] = cpu_after - cpu_before
            print(f"service CPU:              {cpu:.2f} s for {total_stored} events "
                  f"({cpu * per_event:.0f} µs/event, all threads; "
                  f"{cpu / max(elapsed, 1e-9):.0%} of one core)")
        if broker_cpu_before is not None and broker_cpu_after is not None:
            cpu = shares["broker"] = broker_cpu_after - broker_cpu_before
            print(f"broker CPU:               {cpu:.2f} s ({cpu * per_event:.0f} µs/event)")
        shares["publishers"] = publishers_cpu
        print(f"publishers' CPU:          {publishers_cpu:.2f} s ({publishers_cpu * per_event:.0f}"
              f" µs/event, {args.publishers} Python process(es) with paho)")
        if len(shares) == 3:
            # the three share the box: its cores are all the CPU they have between them
            cores = os.cpu_count() or 1
            budget = cores / TARGET * 1e6
            together = sum(shares.values()) * per_event
            print(f"CPU per event, all three: {together:.0f} µs (service "
                  f"{shares['service'] / sum(shares.values()):.0%}); {cores} cores give the "
                  f"three {budget:.0f} µs per event at {TARGET:,.0f} events/s")
        print(f"metrics:                  accepted {accepted:.0f}  duplicate {duplicates:.0f}  "
              f"error {errors:.0f}  rejected {rejected:.0f}")
        print(f"broker drop warnings:     {broker.dropped_warnings()}")
        print(f"service peak RSS (VmHWM): {rss:.1f} MiB" if rss is not None
              else "service peak RSS: unknown")
        checked = True
        if args.linger > 0:
            time.sleep(args.linger)  # let the last acks out before SIGTERM
        if (total_stored != args.events or accepted < args.events or rejected or errors
                or broker.dropped_warnings()):
            print("FAILED: not every event was stored exactly once")
            failed = True
    finally:
        if db is not None:
            db.close()
        for started in procs:
            if started.is_alive():
                started.terminate()
            started.join(5)
        if service is not None:
            code = service.stop(timeout=60)
            print(f"service: exit code {code} after SIGTERM "
                  f"({'clean' if code == 0 else 'NOT CLEAN'})")
            if code != 0:
                print(service.stderr_tail())
                failed = True
            if checked and not failed:
                left = unacknowledged(broker)
                print(f"unacknowledged in the service's session after stop: {left}")
                failed = failed or left > 0
        broker.stop()
        if store is not None:
            store.close()
    if profile is not None and code == 0 and profile.exists():
        show_profile(profile, args.top)
        print(f"\nprofile written to {profile}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--booths", type=int, default=10_000, help="booths in the config")
    parser.add_argument("--events", type=int, default=100_000, help="events to publish")
    parser.add_argument("--publishers", type=int, default=1, choices=(1, 2),
                        help="publisher processes")
    parser.add_argument("--inflight", type=int, default=1000,
                        help="paho max_inflight_messages of each publisher")
    parser.add_argument("--timeout", type=float, default=150.0,
                        help="give up if not everything is stored by then (seconds)")
    parser.add_argument("--protocol", choices=("5", "3.1.1"), default="5",
                        help="the service's MQTT protocol ([mqtt] protocol); with 3.1.1 the "
                             "broker's max_inflight_messages limits what it sends the service")
    parser.add_argument("--broker-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a deploy broker setting, e.g. max_queued_messages=1000")
    parser.add_argument("--profile", metavar="FILE",
                        help="run the service under cProfile, write FILE, print the top")
    parser.add_argument("--top", type=int, default=25, help="profile rows to print")
    parser.add_argument("--linger", type=float, default=2.0,
                        help="seconds to wait after the last event is stored before SIGTERM")
    add_src_option(parser)
    add_backend_option(parser)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    with workdir("ingest", args) as tmp:
        return run(args, tmp)


if __name__ == "__main__":
    raise SystemExit(main())
