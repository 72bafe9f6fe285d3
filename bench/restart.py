"""Restart: from the exec of ``boothwatch run`` to ``/readyz`` 200 with a full store, and
every timer re-armed on its original deadline.

The service (a subprocess, the deploy broker, the store SQLite or PostgreSQL) gets
``--booths`` booths. A first run fills the store as a busy site's would be:

* every booth in session (``occupied``); ``--still`` of them still (their stillness
  deadline an hour ahead), the others moving;
* ``--incidents`` open incidents at several levels: calls (high: steps 0 s, 3 s, 6 s),
  booths gone still (high, a 4 s stillness), sessions run long (medium: steps 0 s, 3 s;
  a 4 s long session), a tenth of the calls acknowledged; every one past its last
  step, so its next deadline (the repeat, the ack timeout) is two hours away;
* ``--history`` more events (heartbeats, each with an id: the service reloads the
  ids of the last day to drop duplicates).

Then ``--runs`` restarts, each measured from just before the exec to the first
``/readyz`` 200 (polled every ``--poll`` seconds). Before each stop, probes set
timers that the restart must keep: ``--probes`` calls on fresh booths (level 2 falls
due 3 s after the call, while the service is down: it must page at once on start;
level 3 at 6 s, after the start: it must page at that deadline, not later) and as
many stillness probes (booths that go still with an 8 s stillness: due after the
start). The deadlines are the incidents' ``raised_at`` from the store plus the
step, and the stillness probe's publish plus 8 s. Any other page during a run is
extra (an incident re-paged by the restart).

The service logs a ``startup`` line with its phases (imports, config, store,
loads, restore...); they are printed per run, with the times of the logged
``http_listening`` and ``mqtt_connected`` from the exec. Peak RSS is the
service's VmHWM once ready. Target: ready within 1 s, RSS under 150 MiB.
Exit 1 only if something went wrong (a probe's page missing or extra pages, a
service that did not exit 0).

    .venv/bin/python bench/restart.py [--booths 10000] [--incidents 1000] [--runs 5]
                                      [--backend postgresql] [--src DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    SITE,
    BenchStore,
    Broker,
    Service,
    add_backend_option,
    add_src_option,
    bench_site,
    broker_line,
    stored,
    workdir,
)
from bench.latency import Receiver, connect
from tests.harness.broker import free_port
from tests.harness.site import booth, policy, step

TARGET_READY = 1.0  # seconds, exec to /readyz 200
TARGET_RSS = 150.0  # MiB
STEP2, STEP3 = 3.0, 6.0  # the high policy's steps after the first
PROBE_STILLNESS = 8.0  # the stillness probes' threshold
FAST = "4s"  # the thresholds of the booths that raise the store's incidents
# a timer's page within this of its deadline (of /readyz, when due while down) counts as
# re-armed on time: one re-armed from the restart instead would be seconds late; how late
# timers fire under load is bench/timers.py's to measure
ON_TIME = 0.25


def topic(booth_id: str) -> str:
    return f"boothwatch/{SITE}/booths/{booth_id}/events"


def body(nonce: str, n: int, **event: Any) -> bytes:
    return json.dumps({**event, "id": f"{nonce}-{n}"}, separators=(",", ":")).encode()


@dataclass
class Plan:
    """Who is who among b1..bN."""

    booths: int
    incidents: int
    still: int
    probes: int
    runs: int
    calls: list[str] = field(default_factory=list)  # raise a call in the fill
    unresponsive: list[str] = field(default_factory=list)  # go still, 4 s stillness
    long: list[str] = field(default_factory=list)  # 4 s long session
    quiet_still: list[str] = field(default_factory=list)  # still, deadline 1 h ahead
    probe_calls: list[list[str]] = field(default_factory=list)  # per run
    probe_still: list[list[str]] = field(default_factory=list)  # per run, 8 s stillness

    def __post_init__(self) -> None:
        ids = iter(f"b{i}" for i in range(1, self.booths + 1))

        def take(n: int) -> list[str]:
            return [next(ids) for _ in range(n)]

        for _ in range(self.runs):
            self.probe_calls.append(take(self.probes))
            self.probe_still.append(take(self.probes))
        n_long = self.incidents // 2
        n_unresponsive = self.incidents * 3 // 10
        self.long = take(n_long)
        self.unresponsive = take(n_unresponsive)
        self.calls = take(self.incidents - n_long - n_unresponsive)
        self.quiet_still = take(self.still)

    def overrides(self) -> list[dict[str, Any]]:
        """The [[booths]] tables with thresholds of their own (the rest take [defaults])."""
        own: dict[str, dict[str, Any]] = {}
        for b in self.long:
            own[b] = {"long_session": FAST}
        for b in self.unresponsive:
            own[b] = {"stillness": FAST}
        for group in self.probe_still:
            for b in group:
                own[b] = {"stillness": f"{PROBE_STILLNESS:g}s"}
        return [booth(f"b{i}", **own.get(f"b{i}", {})) for i in range(1, self.booths + 1)]


def publish_all(broker: Broker, messages: Sequence[tuple[str, bytes]], name: str) -> None:
    """QoS 1, as fast as the broker takes them; returns once all are acknowledged."""
    client = connect(broker, name)
    try:
        infos = [client.publish(t, p, qos=1) for t, p in messages]
        for info in infos:
            info.wait_for_publish(60)
    finally:
        client.disconnect()
        client.loop_stop()


def wait_for(what: str, done: Any, service: Service, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        service.check_alive()
        if done():
            return time.monotonic() - started
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not within {timeout:g} s")


def query(store: BenchStore, sql: str) -> list[Any]:
    reader = store.reader()
    try:
        with contextlib.closing(reader.execute(sql)) as cur:
            return list(cur.fetchall())
    finally:
        reader.close()


def count(store: BenchStore, sql: str) -> int:
    return int(query(store, sql)[0][0])


def raised_at(store: BenchStore, booths: Sequence[str], service: Service
              ) -> list[tuple[str, float]]:
    """The booths' open incidents' raised_at (full precision), once all are stored (a page
    goes out before the commit of its incident)."""
    sql = ("SELECT booth, raised_at FROM incidents WHERE state != 'resolved' AND booth IN ("
           + ",".join(f"'{b}'" for b in booths) + ")")
    wait_for("the probes' incidents stored", lambda: len(query(store, sql)) >= len(booths),
             service, 30)
    return [(b, float(at)) for b, at in query(store, sql)]


class Events:
    """Numbered event bodies with one nonce, so every id is new."""

    def __init__(self) -> None:
        self.nonce = uuid.uuid4().hex[:8]
        self.n = 0

    def __call__(self, booth_id: str, **event: Any) -> tuple[str, bytes]:
        self.n += 1
        return topic(booth_id), body(self.nonce, self.n, **event)


def fill(args: argparse.Namespace, plan: Plan, broker: Broker, service: Service,
         store: BenchStore, events: Events) -> None:
    """Everything in session, the open incidents at their levels, the history."""
    t = time.monotonic()
    reader = store.reader()
    every = [f"b{i}" for i in range(1, plan.booths + 1)]
    first = [events(b, kind="occupancy", occupied=True) for b in every]
    first += [events(b, kind="motion", state="moving") for b in every
              if b not in set(plan.unresponsive) | set(plan.quiet_still)]
    first += [events(b, kind="motion", state="still")
              for b in plan.unresponsive + plan.quiet_still]
    first += [events(b, kind="button", press="call") for b in plan.calls]
    publish_all(broker, first, "fill")
    wait_for("the fill's events stored", lambda: stored(reader) >= events.n, service, 300)
    print(f"fill: {len(first)} events (sessions, motion, calls) stored in "
          f"{time.monotonic() - t:.1f} s", flush=True)
    want = len(plan.calls) + len(plan.unresponsive) + len(plan.long)
    wait_for("the fill's incidents raised",
             lambda: count(store, "SELECT count(*) FROM incidents") >= want, service, 120)
    acked = plan.calls[: max(1, len(plan.calls) // 10)]
    ids = dict(query(store, "SELECT booth, id FROM incidents"))
    client = connect(broker, "acks")
    try:
        for info in [client.publish(f"boothwatch/{SITE}/ack",
                                    json.dumps({"incident": ids[b], "responder": "ana"}), qos=1)
                     for b in acked]:
            info.wait_for_publish(60)
    finally:
        client.disconnect()
        client.loop_stop()
    if args.history:
        t = time.monotonic()
        history = [events(every[i % len(every)], kind="heartbeat", battery=90)
                   for i in range(args.history)]
        publish_all(broker, history, "history")
        wait_for("the history stored", lambda: stored(reader) >= events.n, service, 600)
        print(f"history: {len(history)} heartbeats stored in {time.monotonic() - t:.1f} s",
              flush=True)
    # every incident past its last step: the next deadline of each is two hours away
    time.sleep(STEP3 + 1)
    reader.close()
    rows = query(store, "SELECT priority, level, state, count(*) FROM incidents"
                        " GROUP BY priority, level, state ORDER BY priority, level, state")
    print("store: incidents " + ", ".join(f"{n} {p} level {lv} {st}" for p, lv, st, n in rows),
          flush=True)


@dataclass
class Probes:
    """One run's probes: what they published and when."""

    calls: list[str]
    still: list[str]
    still_sent: float = 0.0  # time.time() just before the stillness probes' publish


def arm(broker: Broker, probes: Probes, events: Events) -> None:
    """The probes' timers: calls (level 1 pages at once) and stillness."""
    messages = ([events(b, kind="button", press="call") for b in probes.calls]
                + [events(b, kind="motion", state="still") for b in probes.still])
    probes.still_sent = time.time()
    publish_all(broker, messages, "probes")


def wait_ready(service: Service, started: float, poll: float, timeout: float) -> float:
    """time.time() of the first /readyz 200, polled every `poll` seconds."""
    while time.time() - started < timeout:
        service.check_alive()
        try:
            with urllib.request.urlopen(service.base + "/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return time.time()
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(poll)
    raise RuntimeError(f"service not ready within {timeout:g} s:\n{service.stderr_tail()}")


def log_lines(service: Service, since: int) -> tuple[list[dict[str, Any]], int]:
    """The service's JSON log lines after byte `since`; and the new end."""
    data = service.stderr_path.read_bytes()
    out = []
    for line in data[since:].splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out, len(data)


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@dataclass
class RunResult:
    ready: float  # seconds from exec
    cpu: float  # the service's CPU seconds (user + system) by then
    rss: float
    hwm: float
    phases: dict[str, float]  # ms, the service's own breakdown (empty before it logged one)
    logged: dict[str, float]  # event -> seconds from exec
    down_late: list[float]  # due while down: page arrival - ready (s)
    up_late: list[float]  # due after start: page arrival - deadline (s)
    missing: int
    extra: int


def measure(service: Service, probes: Probes, store: BenchStore, receiver: Receiver,
            args: argparse.Namespace) -> RunResult:
    """Start the stopped service, time it to ready, and check the probes' timers."""
    offset = service.stderr_path.stat().st_size if service.stderr_path.exists() else 0
    pages_before = len(receiver.pages)
    started = time.time()
    service.start()
    ready_at = wait_ready(service, started, args.poll, 120)
    cpu = service.cpu_seconds() or 0.0
    rss, hwm = service.memory_mb("VmRSS") or 0.0, service.peak_rss_mb() or 0.0
    # (booth, level) -> deadline; steps due at the same moment fold into one page at the
    # higher level (monitor/core/escalation.py), so a step counts as paged by the booth's
    # first page at its level or above
    due = {(b, 1): probes.still_sent + PROBE_STILLNESS for b in probes.still}
    for b, at in raised_at(store, probes.calls, service):
        due |= {(b, 2): at + STEP2, (b, 3): at + STEP3}

    def pages() -> dict[str, list[tuple[float, int]]]:
        got: dict[str, list[tuple[float, int]]] = {}
        for at, page in receiver.pages[pages_before:]:
            got.setdefault(str(page.get("booth")), []).append((at, int(page.get("level", 0))))
        return got

    def paged(key: tuple[str, int], got: dict[str, list[tuple[float, int]]]) -> float | None:
        return next((at for at, level in got.get(key[0], ()) if level >= key[1]), None)

    def wait() -> None:
        until = time.monotonic() + max(0.0, max(due.values()) - time.time()) + 10
        while time.monotonic() < until and any(paged(k, pages()) is None for k in due):
            time.sleep(0.05)

    wait()
    # the stillness probes raised incidents meanwhile: their levels 2 and 3 are timers too,
    # waited for here so that none falls due in the next run's downtime
    for b, at in raised_at(store, probes.still, service):
        due |= {(b, 2): at + STEP2, (b, 3): at + STEP3}
    wait()
    time.sleep(0.5)  # an extra page would show up now
    got = pages()
    down: list[float] = []
    up: list[float] = []
    for key, at in due.items():
        arrival = paged(key, got)
        if arrival is not None:
            (down if at < ready_at else up).append(arrival - max(at, ready_at))
    lost = sorted((k, at) for k, at in due.items() if paged(k, got) is None)
    if lost:
        print("  missing pages (booth, level, due seconds after ready): " + ", ".join(
            f"{b} {lv} {at - ready_at:+.1f}" for (b, lv), at in lost))
    # more pages for a booth than the levels it has due, or pages of other booths
    levels: dict[str, set[int]] = {}
    for b, lv in due:
        levels.setdefault(b, set()).add(lv)
    extras = {b: len(v) - len(levels.get(b, ())) for b, v in got.items()}
    extras = {b: n for b, n in extras.items() if n > 0}
    if extras:
        print("  extra pages (booth: pages): " + ", ".join(
            f"{b}: {sorted(lv for _, lv in got[b])}" for b in sorted(extras)))
    missing, extra = len(lost), sum(extras.values())
    lines, _ = log_lines(service, offset)
    phases: dict[str, float] = {}
    logged: dict[str, float] = {}
    for line in lines:
        name = line.get("event")
        if name == "startup":
            phases = dict(line.get("phases_ms", {}))
        if name in ("http_listening", "mqtt_connected", "mqtt_subscribed", "started") \
                and name not in logged and "timestamp" in line:
            logged[name] = epoch(line["timestamp"]) - started
    return RunResult(ready_at - started, cpu, rss, hwm, phases, logged, down, up, missing, extra)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def show_run(i: int, r: RunResult) -> None:
    print(f"run {i}: exec -> /readyz 200 {r.ready * 1000:6.0f} ms (service CPU "
          f"{r.cpu * 1000:.0f} ms)   RSS {r.rss:.1f} MiB (peak {r.hwm:.1f})")
    if r.phases:
        print("  service phases (ms): " + "  ".join(f"{k} {v:.0f}" for k, v in r.phases.items()))
    if r.logged:
        print("  logged, from exec (ms): " + "  ".join(
            f"{k} {ms(v)}" for k, v in sorted(r.logged.items(), key=lambda kv: kv[1])))
    if r.down_late:
        print(f"  due while down ({len(r.down_late)}): paged {ms(min(r.down_late))} to "
              f"{ms(max(r.down_late))} ms after ready (negative: before /readyz said so)")
    if r.up_late:
        print(f"  due after start ({len(r.up_late)}): paged {ms(min(r.up_late))} to "
              f"{ms(max(r.up_late))} ms after the deadline")
    print(f"  missing {r.missing}, extra {r.extra}", flush=True)


def span(values: Sequence[float], unit: str = "", scale: float = 1.0, fmt: str = ".0f") -> str:
    lo, hi = min(values) * scale, max(values) * scale
    return f"{lo:{fmt}}-{hi:{fmt}}{unit}" if f"{lo:{fmt}}" != f"{hi:{fmt}}" else f"{lo:{fmt}}{unit}"


def compile_sources(src: Path) -> None:
    """The service's bytecode cached beside its sources, as pip leaves an installed package:
    with PYTHONDONTWRITEBYTECODE set (or a read-only tree) every start would compile each
    module of monitor/, devices/ and alerts/ again (~0.1 s, which a site does not pay)."""
    for package in ("monitor", "devices", "alerts"):
        if not compileall.compile_dir(src / package, quiet=1):
            raise RuntimeError(f"{src / package}: does not compile")


def run(args: argparse.Namespace, tmp: Path) -> int:
    compile_sources(args.src)
    plan = Plan(args.booths, args.incidents, args.still, args.probes, args.runs)
    broker = Broker(tmp / "broker")
    store = BenchStore(args.backend, tmp)
    receiver = Receiver()
    loop = asyncio.new_event_loop()
    thread = None
    service: Service | None = None
    failed = False
    try:
        import threading

        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        asyncio.run_coroutine_threadsafe(receiver.start(), loop).result(10)
        broker.start()
        print(broker_line(broker))
        print(f"store: {store.describe()}")
        http_port = free_port()
        site = bench_site(mqtt_port=broker.port, http_port=http_port, booths=0, auth=broker.auth,
                          channel={"type": "webhook", "url": receiver.url, "timeout": "5s"},
                          extra_booths=plan.overrides(), **store.site())
        site.escalation = {
            "high": policy(step("0s", "role:nurse"), step(f"{STEP2:g}s", "role:nurse"),
                           step(f"{STEP3:g}s", "role:nurse"), repeat="2h", ack_timeout="2h"),
            "medium": policy(step("0s", "role:nurse"), step(f"{STEP2:g}s", "role:nurse"),
                             repeat="2h", ack_timeout="2h"),
            "low": policy(step("0s", "role:nurse")),
        }
        service = Service(tmp, site.text(), http_port, src=args.src, env=store.env)
        service.start()
        service.wait_ready(120)
        events = Events()
        fill(args, plan, broker, service, store, events)
        results: list[RunResult] = []
        for i in range(args.runs):
            probes = Probes(plan.probe_calls[i], plan.probe_still[i])
            arm(broker, probes, events)
            # every probe event handled (stored) before the stop, so its timer runs from now
            reader = store.reader()
            try:
                wait_for("the probes stored", lambda r=reader: stored(r) >= events.n,
                         service, 30)
            finally:
                reader.close()
            code = service.stop()
            if code != 0:
                print(f"service: exit code {code} after SIGTERM:\n{service.stderr_tail()}")
                failed = True
            # restart once level 2 of every probe call has fallen due
            raised = max(float(r[0]) for r in query(
                store, "SELECT max(raised_at) FROM incidents"))
            time.sleep(max(0.0, raised + STEP2 + 0.2 - time.time()))
            if args.profile:
                service.profile = Path(f"{args.profile}.{i + 1}").resolve()
            result = measure(service, probes, store, receiver, args)
            show_run(i + 1, result)
            results.append(result)
            if result.missing or result.extra:
                failed = True
        open_incidents = count(store, "SELECT count(*) FROM incidents WHERE state != 'resolved'")
        sessions = count(store, "SELECT count(*) FROM sessions WHERE ended_at IS NULL")
        events_stored = count(store, "SELECT count(*) FROM events")
        ready = [r.ready for r in results]
        print(f"{args.booths} booths, {sessions} open sessions, {open_incidents} open incidents, "
              f"{events_stored} events in the store ({args.backend})")
        print(f"exec -> /readyz 200 over {len(ready)} runs: {span(ready, ' ms', 1000)}, median "
              f"{sorted(ready)[len(ready) // 2] * 1000:.0f} ms   (target <= "
              f"{TARGET_READY * 1000:.0f} ms: "
              f"{'MET' if max(ready) <= TARGET_READY else 'MISSED'})")
        print(f"service CPU to ready: {span([r.cpu for r in results], ' ms', 1000)} (what the "
              "start costs, whatever else the machine runs)")
        hwm = [r.hwm for r in results]
        print(f"service peak RSS: {span(hwm, ' MiB', fmt='.1f')}   (target < {TARGET_RSS:g} MiB: "
              f"{'MET' if max(hwm) < TARGET_RSS else 'MISSED'})")
        down = [v for r in results for v in r.down_late]
        up = [v for r in results for v in r.up_late]
        if down:
            print(f"timers due while down: {len(down)} paged {ms(min(down))} to {ms(max(down))} "
                  f"ms after ready   (at once, within {ms(ON_TIME)} ms: "
                  f"{'MET' if max(down) <= ON_TIME else 'MISSED'})")
        if up:
            print(f"timers due after start: {len(up)} paged {ms(min(up))} to {ms(max(up))} ms "
                  f"after their deadline   (on time, within {ms(ON_TIME)} ms: "
                  f"{'MET' if max(up) <= ON_TIME and min(up) >= 0 else 'MISSED'})")
        print(f"pages: missing {sum(r.missing for r in results)}, "
              f"extra {sum(r.extra for r in results)}")
    finally:
        if service is not None:
            code = service.stop()
            print(f"service: exit code {code} after SIGTERM "
                  f"({'clean' if code in (0, None) else 'NOT CLEAN'})")
            if code not in (0, None):
                failed = True
        asyncio.run_coroutine_threadsafe(receiver.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(5)
        broker.stop()
        store.close()
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--booths", type=int, default=10_000, help="booths, all in session")
    parser.add_argument("--incidents", type=int, default=1_000,
                        help="open incidents in the store (calls, stillness, long sessions)")
    parser.add_argument("--still", type=int, default=2_000,
                        help="booths still, their stillness deadline an hour ahead")
    parser.add_argument("--history", type=int, default=20_000,
                        help="more events (heartbeats) in the store, whose ids are reloaded")
    parser.add_argument("--runs", type=int, default=5, help="restarts measured")
    parser.add_argument("--probes", type=int, default=10,
                        help="probe calls and stillness probes per restart")
    parser.add_argument("--poll", type=float, default=0.005,
                        help="seconds between /readyz requests")
    parser.add_argument("--profile", metavar="FILE",
                        help="run each restart under cProfile, writing FILE.<run> (skews timing)")
    add_backend_option(parser)
    add_src_option(parser)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.booths < args.incidents + args.still + 2 * args.probes * args.runs:
        parser.error("--booths must hold the incidents, the still booths and the probes")
    with workdir("restart", args) as tmp:
        return run(args, tmp)


if __name__ == "__main__":
    raise SystemExit(main())
