"""Press-to-page latency of the real service, against the floor of its two hops.

A call press is published (QoS 1) to the broker; the service (``boothwatch run``,
a subprocess) raises an incident and POSTs a page to a webhook receiver in this
process. Latency = page received - press published, both ``time.time()`` on this
machine. The floor, measured in the same run on the same broker and receiver:
(a) MQTT one-way, publish to a plain subscriber's on_message; (b) HTTP one-way, a
page-sized POST over a keep-alive session to the receiver. floor = a + b.
Targets: p50 <= 2 x floor p50, p99 < 20 ms. Between the presses, other booths'
events (``--traffic`` a second) keep the service's link busy, as on a site.

``--broker-defaults`` runs the same measurement a second time against a broker
with Mosquitto's defaults (no ``set_tcp_nodelay``), and prints both side by side.

    .venv/bin/python bench/latency.py [--booths 200] [--interval 0.06] [--traffic 10]
                                      [--broker-defaults]
    .venv/bin/python bench/latency.py --backend postgresql   # the store on PostgreSQL
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import paho.mqtt.client as paho
from aiohttp import web
from paho.mqtt.enums import CallbackAPIVersion

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
    percentile,
    summarise,
    workdir,
)
from bench.ingest import CYCLE
from tests.harness.broker import free_port

CONNECT_TIMEOUT = 10.0

PAGE_SAMPLE: dict[str, Any] = {  # what the service POSTs (interface section 8), for the floor
    "incident": "01JDX5K3ZQ4T8W6V2N9M7B1C0D", "site": SITE, "booth": "b1",
    "booth_name": "Booth 1", "priority": "high", "triggers": ["call"], "level": 1,
    "responder": "ana", "message": "Booth 1: call button pressed",
    "raised_at": "2026-11-23T20:15:03.120Z",
    "ack_url": "http://127.0.0.1:8080/ack/" + "x" * 120,
}


class Receiver:
    """A webhook receiver: the arrival time (time.time()) of each POST, keyed by its booth,
    and every page with its arrival time in ``pages``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/page"
        self.arrivals: dict[str, list[float]] = {}
        self.pages: list[tuple[float, dict[str, Any]]] = []
        self._new = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/page", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        # a burst of pages opens as many connections at once (bench/burst.py): a short
        # accept queue would drop SYNs, and each would cost the sender a 1 s retransmit
        await web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=4096).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        now = time.time()
        body = json.loads(await request.read())
        self.arrivals.setdefault(str(body.get("booth")), []).append(now)
        self.pages.append((now, body))
        self._new.set()
        return web.Response(text="ok")

    async def wait_for(self, keys: Sequence[str], timeout: float) -> None:
        """Until a page has come for every key, or ``timeout`` seconds."""
        await self.wait_until(lambda: all(k in self.arrivals for k in keys), timeout)

    async def wait_until(self, done: Callable[[], bool], timeout: float) -> None:
        """Until ``done()`` (checked at each page), or ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not done():
                    self._new.clear()
                    await self._new.wait()


def connect(broker: Broker, name: str) -> paho.Client:
    """A started MQTT v5 client (network loop in its own thread), connected."""
    client = paho.Client(CallbackAPIVersion.VERSION2,
                         client_id=f"bench-{name}-{uuid.uuid4().hex[:8]}", protocol=paho.MQTTv5)
    if broker.auth:
        client.username_pw_set(MQTT_USER, MQTT_PASSWORD)
    client.max_inflight_messages_set(1000)
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    if not connected.wait(CONNECT_TIMEOUT):
        client.loop_stop()
        raise RuntimeError(f"{name}: no CONNACK from the broker")
    return client


def publish_spaced(
    client: paho.Client, messages: Sequence[tuple[str, bytes]], interval: float
) -> dict[str, float]:
    """Publish QoS 1 messages ``interval`` apart; time.time() just before each, by topic."""
    sent: dict[str, float] = {}
    start = time.monotonic()
    for i, (topic, payload) in enumerate(messages):
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent[topic] = time.time()
        client.publish(topic, payload, qos=1)
    return sent


def mqtt_floor(broker: Broker, count: int, interval: float) -> list[float]:
    """One-way publish -> on_message times of QoS 1 messages through the broker."""
    received: dict[str, float] = {}
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(_c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        received[msg.topic] = time.time()
        if len(received) >= count:
            done.set()

    sub = connect(broker, "floor-sub")
    pub = connect(broker, "floor-pub")
    try:
        sub.on_message = on_message
        sub.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        sub.subscribe("bench/floor/#", qos=1)
        if not subscribed.wait(CONNECT_TIMEOUT):
            raise RuntimeError("floor subscriber: no SUBACK")
        payload = json.dumps({"kind": "button", "press": "call", "id": "floor"}).encode()
        sent = publish_spaced(pub, [(f"bench/floor/{i}", payload) for i in range(count)],
                              interval)
        done.wait(10)
    finally:
        for client in (sub, pub):
            client.disconnect()
            client.loop_stop()
    return [received[t] - sent[t] for t in sent if t in received]


def http_floor(receiver: Receiver, count: int, interval: float) -> list[float]:
    """One-way POST -> receiver times of page-sized JSON over one keep-alive session.

    Runs its own event loop in this (worker) thread, so the client is not on the
    receiver's loop, as the service's client is not.
    """

    async def run() -> dict[str, float]:
        sent: dict[str, float] = {}
        headers = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession() as session:
            start = time.monotonic()
            for i in range(count):
                delay = start + i * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                booth = f"floor-{i}"
                body = json.dumps({**PAGE_SAMPLE, "booth": booth}).encode()
                sent[booth] = time.time()
                async with session.post(receiver.url, data=body, headers=headers) as resp:
                    await resp.read()
        return sent

    sent = asyncio.run(run())
    return [receiver.arrivals[b][0] - t for b, t in sent.items() if b in receiver.arrivals]


def press(broker: Broker, booths: Sequence[str], interval: float) -> dict[str, float]:
    """One call press per booth, ``interval`` apart; publish time by booth."""
    client = connect(broker, "presses")
    nonce = uuid.uuid4().hex[:8]
    try:
        messages = [
            (f"boothwatch/{SITE}/booths/{b}/events",
             json.dumps({"kind": "button", "press": "call", "id": f"call-{nonce}-{b}"}).encode())
            for b in booths
        ]
        sent = publish_spaced(client, messages, interval)
        time.sleep(0.2)  # let the last PUBACKs in before disconnecting
    finally:
        client.disconnect()
        client.loop_stop()
    return {topic.split("/")[3]: t for topic, t in sent.items()}


class Traffic:
    """Booth events at ``rate`` a second, from a client of its own, until stopped.

    Event i goes to booth i % len(booths) and is step i // len(booths) of that booth's
    ``cycle`` (by default bench/ingest.py's: occupancy, motion, heartbeat, stillness,
    vacated), each with a unique id, so every one is stored, acknowledged and may change
    a booth's retained state or note an open incident.
    """

    def __init__(self, broker: Broker, booths: Sequence[str], rate: float,
                 cycle: Sequence[dict[str, Any]] = CYCLE) -> None:
        self._broker = broker
        self._booths = booths
        self._rate = rate
        self._cycle = cycle
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.seconds = 0.0

    def __enter__(self) -> Traffic:
        if self._rate > 0:
            self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        client = connect(self._broker, "traffic")
        nonce = uuid.uuid4().hex[:8]
        start = time.monotonic()
        try:
            while not self._stop.is_set():
                i = self.sent
                delay = start + i / self._rate - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                    continue
                booth = self._booths[i % len(self._booths)]
                step = self._cycle[(i // len(self._booths)) % len(self._cycle)]
                body = {**step, "id": f"bg-{nonce}-{i}"}
                client.publish(f"boothwatch/{SITE}/booths/{booth}/events",
                               json.dumps(body, separators=(",", ":")).encode(), qos=1)
                self.sent += 1
            self.seconds = time.monotonic() - start
        finally:
            client.disconnect()
            client.loop_stop()


def stats(values: Sequence[float]) -> tuple[float, float]:
    """(p50, p99) in ms."""
    return percentile(values, 50) * 1000, percentile(values, 99) * 1000


@dataclass
class Case:
    """One run of the whole measurement against one broker."""

    name: str
    mqtt: list[float] = field(default_factory=list)
    http: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    missing: int = 0
    extra: int = 0
    traffic: float = 0.0  # events/s achieved
    rss: float | None = None  # MiB, the service's VmHWM
    exit_code: int | None = None

    @property
    def floor(self) -> tuple[float, float]:
        """(p50, p99) of a + b, ms."""
        (a50, a99), (b50, b99) = stats(self.mqtt), stats(self.http)
        return a50 + b50, a99 + b99

    @property
    def met(self) -> tuple[bool, bool]:
        """(p50 <= 2 x floor p50, p99 < 20 ms)."""
        p50, p99 = stats(self.latencies)
        return p50 <= 2 * self.floor[0], p99 < 20

    @property
    def failed(self) -> bool:
        return bool(self.missing or self.extra or self.exit_code != 0 or not self.latencies)


async def measure(args: argparse.Namespace, tmp: Path, case: Case, plain: bool) -> None:
    broker = Broker(tmp / "broker", plain=plain)
    receiver = Receiver()
    service: Service | None = None
    store: BenchStore | None = None
    try:
        broker.start()
        print(broker_line(broker))
        await receiver.start()
        http_port = free_port()
        store = BenchStore(args.backend, tmp)
        print(f"store: {store.describe()}")
        config = bench_site(
            mqtt_port=broker.port, http_port=http_port, **store.site(),
            booths=args.booths, auth=broker.auth,
            channel={"type": "webhook", "url": receiver.url, "timeout": "5s"},
        ).text()
        service = Service(tmp, config, http_port, src=args.src, profile=args.profile,
                          env=store.env)
        service.start()
        ready = await asyncio.to_thread(service.wait_ready)
        print(f"service: ready in {ready:.2f} s with {args.booths} booths (pid "
              f"{service.process.pid if service.process else '?'})")
        await asyncio.sleep(args.settle)

        n, gap = args.presses, args.interval
        case.mqtt = await asyncio.to_thread(mqtt_floor, broker, n, gap)
        case.http = await asyncio.to_thread(http_floor, receiver, n, gap)
        print(f"floor (a) MQTT one-way:   {summarise(case.mqtt)}")
        print(f"floor (b) HTTP one-way:   {summarise(case.http)}")

        booths = [f"b{i}" for i in range(1, n + 1)]
        with Traffic(broker, [f"b{i}" for i in range(1, args.booths + 1)],
                     args.traffic) as traffic:
            sent = await asyncio.to_thread(press, broker, booths, gap)
            await receiver.wait_for(booths, timeout=15)
        service.check_alive()
        case.traffic = traffic.sent / traffic.seconds if traffic.seconds else 0.0
        case.latencies = [receiver.arrivals[b][0] - t for b, t in sent.items()
                          if b in receiver.arrivals]
        case.missing = sum(b not in receiver.arrivals for b in booths)
        case.extra = sum(len(receiver.arrivals[b]) - 1 for b in booths if b in receiver.arrivals)
        print(f"press -> page (service):  {summarise(case.latencies)}")
        print(f"  presses {n} ({gap * 1000:g} ms apart), other traffic {case.traffic:.0f} "
              f"events/s, pages received {n - case.missing}, missing {case.missing}, "
              f"extra pages {case.extra}")
        if not case.latencies or len(case.mqtt) < n or len(case.http) < n:
            raise RuntimeError("not every press/floor message arrived")
        case.rss = service.peak_rss_mb()
    finally:
        if service is not None:
            case.exit_code = service.stop()
            clean = "clean" if case.exit_code == 0 else "NOT CLEAN, see " + str(service.stderr_path)
            print(f"service: exit code {case.exit_code} after SIGTERM ({clean})")
            if case.exit_code != 0:
                print(service.stderr_tail())
        await receiver.stop()
        broker.stop()
        if store is not None:
            store.close()


def report(cases: Sequence[Case]) -> None:
    """The figures of every case, side by side."""
    def row(label: str, cells: Sequence[str]) -> None:
        print(f"{label:<26}" + "".join(f"{c:>24}" for c in cells))

    print()
    row("", [c.name for c in cases])
    row("floor (a + b) p50 / p99", [f"{c.floor[0]:.2f} / {c.floor[1]:.2f} ms" for c in cases])
    row("press -> page p50 / p99",
        [f"{stats(c.latencies)[0]:.2f} / {stats(c.latencies)[1]:.2f} ms" for c in cases])
    row("press -> page max", [f"{max(c.latencies) * 1000:.2f} ms" for c in cases])
    row("ratio p50 / floor p50", [f"{stats(c.latencies)[0] / c.floor[0]:.2f}x" for c in cases])
    row("target p50 <= 2x floor", ["MET" if c.met[0] else "MISSED" for c in cases])
    row("target p99 < 20 ms", ["MET" if c.met[1] else "MISSED" for c in cases])
    row("other traffic", [f"{c.traffic:.0f} events/s" for c in cases])
    row("missing / extra pages", [f"{c.missing} / {c.extra}" for c in cases])
    row("service peak RSS", ["?" if c.rss is None else f"{c.rss:.1f} MiB" for c in cases])
    row("exit after SIGTERM", ["0 (clean)" if c.exit_code == 0 else f"{c.exit_code} (NOT CLEAN)"
                               for c in cases])


async def run(args: argparse.Namespace, tmp: Path) -> int:
    cases = [Case("deploy broker")]
    if args.broker_defaults:
        cases.append(Case("Mosquitto defaults"))
    for index, case in enumerate(cases):
        print(f"--- {case.name}")
        workdir = tmp / str(index)
        workdir.mkdir()
        try:
            await measure(args, workdir, case, plain=index == 1)
        except RuntimeError as exc:
            print(f"FAILED: {exc}")
            return 1
    report(cases)
    return 1 if any(c.failed for c in cases) else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--booths", type=int, default=200, help="booths in the config")
    parser.add_argument("--presses", type=int, default=None,
                        help="call presses, one per booth (default: every booth)")
    parser.add_argument("--interval", type=float, default=0.06,
                        help="seconds between presses (and floor messages)")
    parser.add_argument("--traffic", type=float, default=10.0,
                        help="other booths' events a second while the presses run (0: none)")
    parser.add_argument("--broker-defaults", action="store_true",
                        help="also measure against a broker with Mosquitto's defaults "
                             "(no set_tcp_nodelay) and print both side by side")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds to wait after /readyz before measuring")
    parser.add_argument("--profile", metavar="FILE",
                        help="run the service under cProfile and write FILE (skews latency)")
    add_src_option(parser)
    add_backend_option(parser)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    args.profile = Path(args.profile).resolve() if args.profile else None
    args.presses = args.booths if args.presses is None else args.presses
    if not 0 < args.presses <= args.booths:
        parser.error("--presses must be between 1 and --booths (one press per booth)")
    with workdir("latency", args) as tmp:
        return asyncio.run(run(args, tmp))


if __name__ == "__main__":
    raise SystemExit(main())
