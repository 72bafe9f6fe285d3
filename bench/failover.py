"""Failover: SIGKILL the owner of a site many times; how soon the standby pages, and
whether any page or event is lost or sent twice (issue 13).

One PostgreSQL cluster of the run's own (fsync and synchronous_commit on, as a site runs
it), one Mosquitto from the deploy config, a webhook receiver in this process, and
``--processes`` (2) ``boothwatch run`` processes on the same site config: the same store
URL, the same MQTT client id, each its own HTTP port (which its pages' ``ack_url``
names, so the receiver knows who sent each page). One owns the site; the others stand
by (``/readyz`` 503 ``standby``).

A round: a call is pressed at a fresh booth; its first page (level 1, Ana) comes from the
owner; the owner is killed (SIGKILL) a little before level 2 (Ana and Rui, ``--step2``
after the raise) falls due, so the step falls due while nobody owns the site; a second
call is pressed at another booth right after the kill (the broker keeps it for the
site's session). The bench measures from the kill to the first level-2 page of the new
owner, restarts the killed process, waits for it to stand by, and goes on with the new
owner (so the owners alternate). The kill-to-page time is split with the new owner's
log: detection (kill -> ``lease_taken``: the lease's ttl, ``--lease``) and takeover
(``lease_taken`` -> the page: restore, start, fire what is overdue); the MQTT session is
resumed (``mqtt_connected``) and the call pressed during the switch paged after that.

Afterwards every expected page (booth, level, responder) must have come exactly once,
every call pressed must be stored once with one incident, and every process must have
done what it should (no exit but the bench's kills; exit 0 on SIGTERM). Then, in the same
run, bench/ingest.py and bench/latency.py measure ingest and press-to-page latency with
the store on SQLite and on PostgreSQL, side by side (``--ingest-events``,
``--latency-presses``; ``--no-backends`` to skip). Target: the new owner pages within 5 s
of the kill. Exit 1 when anything was lost, duplicated or misbehaved.

    .venv/bin/python bench/failover.py [--failovers 50] [--lease 3] [--processes 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
import tomli_w

from bench.harness import (
    SITE,
    BackendFigures,
    BenchStore,
    Broker,
    Service,
    add_src_option,
    backend_figures,
    broker_line,
    percentile,
    workdir,
)
from bench.latency import Receiver, connect
from tests.harness.broker import free_port
from tests.harness.postgres import PASSWORD as PG_PASSWORD
from tests.harness.site import Site, booths, policy, responder, step

TARGET = 5.0  # s: kill -> first page of the new owner
CLIENT_ID = "boothwatch-failover"
LEVEL2 = ("ana", "rui")  # level 2 pages the nurse and the coordinator


def site_config(*, mqtt_port: int, http_port: int, url: str, hook: str, auth: bool,
                booth_count: int, lease: float, step2: float) -> str:
    """The site every process runs: ``booth_count`` booths; a call pages Ana at once and
    Ana and Rui ``step2`` later, then nothing for an hour; the store in PostgreSQL with
    its lease's ttl."""
    calls = policy(step("0s", "role:nurse"), step(f"{step2:g}s", "role:nurse",
                                                   "role:coordinator"),
                   repeat="1h", ack_timeout="1h")
    site = Site(id=SITE, name="Failover bench", mqtt_port=mqtt_port, client_id=CLIENT_ID,
                mqtt={"username": "boothwatch"} if auth else {},
                store_url=url, http_port=http_port,
                defaults={"long_session": "1h", "stillness": "1h", "device_timeout": "1h"},
                booths=booths(booth_count),
                channels={"pager": {"type": "webhook", "url": hook, "timeout": "5s"}},
                responders=[responder("ana", ["nurse"], ["pager"]),
                            responder("rui", ["coordinator"], ["pager"])],
                escalation={"high": calls, "medium": calls,
                            "low": policy(step("0s", "role:nurse"))})
    document = site.document()
    document["store"]["lease"] = f"{lease:g}s"
    return tomli_w.dumps(document)


def when(stamp: str) -> float:
    """An ISO time of the service (its logs, ``raised_at``) as time.time()."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@dataclass
class Round:
    number: int
    owner: str  # killed
    booth: str  # the call whose level 2 falls due during the switch
    switch_booth: str  # the call pressed right after the kill
    due: float = 0.0  # level 2, time.time()
    killed: float = 0.0
    new_owner: str | None = None
    kill_to_page: float | None = None  # first level-2 page of the new owner
    late: float | None = None  # that page - due
    detection: float | None = None  # kill -> lease_taken
    restore: float | None = None  # lease_taken -> started
    mqtt: float | None = None  # lease_taken -> mqtt_connected
    switch_page: float | None = None  # kill -> the switch call's page
    standby_again: float | None = None  # restart -> the killed process standing by again
    notes: list[str] = field(default_factory=list)


class Pair:
    """The processes of the site, by name (a, b, c), and who sent a page."""

    def __init__(self, tmp: Path, names: Sequence[str], config: Any, env: dict[str, str],
                 src: Path) -> None:
        self.services: dict[str, Service] = {}
        self.by_port: dict[int, str] = {}
        for name in names:
            port = free_port()
            workdir = tmp / name
            workdir.mkdir()
            self.services[name] = Service(workdir, config(port), port, src=src, env=env)
            self.by_port[port] = name

    def sender(self, page: dict[str, Any]) -> str | None:
        port = urlsplit(str(page.get("ack_url", ""))).port
        return None if port is None else self.by_port.get(port)

    def owner(self) -> str | None:
        owners = [n for n, s in self.services.items()
                  if s.process is not None and s.readyz()[0] == 200]
        return owners[0] if len(owners) == 1 else None


def log_after(service: Service, event: str, since: float) -> float | None:
    """time.time() of the first ``event`` line the service logged at or after ``since``."""
    for line in service.log_lines():
        if line.get("event") == event and "timestamp" in line:
            at = when(str(line["timestamp"]))
            if at >= since:
                return at
    return None


def spread(values: Sequence[float]) -> str:
    if not values:
        return "none"
    return (f"p50 {percentile(values, 50):6.3f}  p99 {percentile(values, 99):6.3f}  "
            f"max {max(values):6.3f} s")


async def failovers(args: argparse.Namespace, tmp: Path) -> tuple[list[Round], list[str]]:
    """Run the rounds; the rounds and what went wrong (lost, duplicated, misbehaved)."""
    problems: list[str] = []
    rounds: list[Round] = []
    broker = Broker(tmp / "broker")
    receiver = Receiver()
    store: BenchStore | None = None
    pair: Pair | None = None
    client = None
    rng = random.Random(args.seed)
    nonce = uuid.uuid4().hex[:8]
    pressed: list[str] = []  # event ids
    try:
        broker.start()
        print(broker_line(broker))
        await receiver.start()
        store = BenchStore("postgresql", tmp)
        assert store.url is not None
        print(f"store: {store.describe()}, [store] lease = {args.lease:g} s")
        url = store.url

        def config(port: int) -> str:
            return site_config(mqtt_port=broker.port, http_port=port, url=url,
                               hook=receiver.url, auth=broker.auth,
                               booth_count=2 * args.failovers, lease=args.lease,
                               step2=args.step2)

        names = "abcdefgh"[:args.processes]
        pair = Pair(tmp, names, config, store.env, args.src)
        first, *others = pair.services.values()
        first.start()
        ready = await asyncio.to_thread(first.wait_ready)
        for other in others:
            other.start()
            await asyncio.to_thread(other.wait_standby)
        print(f"processes: {', '.join(names)}; {names[0]} owns the site (ready in "
              f"{ready:.2f} s), {', '.join(names[1:])} standing by")
        if args.history:
            took = await asyncio.to_thread(fill_history, store, args.history,
                                           2 * args.failovers)
            print(f"history: {args.history:,} events of the last 24 h put in the store in "
                  f"{took:.1f} s (each takeover loads their ids to deduplicate)")
        client = await asyncio.to_thread(connect, broker, "presses")
        owner = names[0]
        lo, hi = 0.2, min(0.9, args.lease / 2)
        for n in range(1, args.failovers + 1):
            r = Round(n, owner, f"b{2 * n - 1}", f"b{2 * n}")
            rounds.append(r)
            try:
                await one_round(r, pair, receiver, client, nonce, pressed, args,
                                kill_before=rng.uniform(lo, hi))
            except RuntimeError as exc:
                r.notes.append(str(exc))
                problems.append(f"round {n}: {exc}")
                print(f"  round {n}: FAILED: {exc}", flush=True)
                break
            print(f"  round {n:3}: {r.owner} killed {r.due - r.killed:.2f} s before the step; "
                  f"{r.new_owner} paged it {r.kill_to_page:.3f} s after the kill "
                  f"(detection {fmt(r.detection)}, restore {fmt(r.restore)}, "
                  f"late {fmt(r.late)}); switch call paged at {fmt(r.switch_page)}; "
                  f"{r.owner} restarted, standing by in {fmt(r.standby_again)}"
                  + (f"  [{'; '.join(r.notes)}]" if r.notes else ""), flush=True)
            assert r.new_owner is not None
            owner = r.new_owner
        await asyncio.sleep(2.0)  # anything late or sent twice would have come by now
        problems += tally(rounds, receiver, pair, problems)
        problems += check_store(store, nonce, pressed, rounds)

        # a clean stop hands over at once: the lease is given back
        current = pair.owner()
        if current is not None and len(pair.services) > 1:
            svc = pair.services[current]
            assert svc.process is not None
            stopped = time.monotonic()
            code = await asyncio.to_thread(svc.stop)
            ready_at: float | None = None
            with contextlib.suppress(RuntimeError):
                ready_at = await asyncio.to_thread(wait_any_ready, pair, 30.0)
            print(f"graceful stop: {current} exit {code} after SIGTERM; a standby ready "
                  f"{'never' if ready_at is None else f'{ready_at - stopped:.2f} s'} after the "
                  "SIGTERM")
            if code != 0:
                problems.append(f"{current}: exit {code} after SIGTERM")
            if ready_at is None:
                problems.append("no standby took over after a clean stop")
    finally:
        if client is not None:
            client.disconnect()
            client.loop_stop()
        if pair is not None:
            for name, svc in pair.services.items():
                if svc.process is None:
                    continue
                alive = svc.process.poll() is None
                code = svc.stop()
                if not alive:
                    problems.append(f"{name} had exited by itself ({code}):\n"
                                    f"{svc.stderr_tail()}")
                elif code != 0:
                    problems.append(f"{name}: exit {code} after SIGTERM")
        await receiver.stop()
        broker.stop()
        if store is not None:
            store.close()
    return rounds, problems


def fill_history(store: BenchStore, count: int, booth_count: int) -> float:
    """``count`` heartbeats, with ids, over the booths and the last 24 hours, written
    straight into the store (its schema made by the first process): what a running site
    has, and what a new owner reads at its takeover (the ids of the deduplication window,
    `monitor.ingest.DEDUPE_WINDOW`). The seconds it took."""
    started = time.monotonic()
    with psycopg.connect(store.url or "", password=PG_PASSWORD, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO events (booth, kind, event_id, ts, received_at, payload)"
            " SELECT 'b' || (1 + g %% %(booths)s), 'heartbeat', 'history-' || g, t, t,"
            " '{\"kind\":\"heartbeat\",\"battery\":87}'"
            " FROM generate_series(1, %(count)s) AS g,"
            " LATERAL (SELECT extract(epoch FROM now()) - 86000.0 * g / %(count)s AS t) AS x",
            {"booths": booth_count, "count": count})
        conn.execute("ANALYZE events")
    return time.monotonic() - started


def wait_any_ready(pair: Pair, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for svc in pair.services.values():
            if svc.process is not None and svc.readyz(timeout=0.5)[0] == 200:
                return time.monotonic()
        time.sleep(0.02)
    raise RuntimeError("no process ready")


def fmt(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f} s"


def press(client: Any, booth: str, nonce: str, pressed: list[str]) -> None:
    event_id = f"fo-{nonce}-{booth}"
    pressed.append(event_id)
    body = {"kind": "button", "press": "call", "id": event_id}
    client.publish(f"boothwatch/{SITE}/booths/{booth}/events", json.dumps(body).encode(),
                   qos=1)


def pages_of(receiver: Receiver, booth: str) -> list[tuple[float, dict[str, Any]]]:
    return [(t, p) for t, p in receiver.pages if p.get("booth") == booth]


async def one_round(r: Round, pair: Pair, receiver: Receiver, client: Any, nonce: str,
                    pressed: list[str], args: argparse.Namespace, kill_before: float) -> None:
    owner = pair.services[r.owner]
    press(client, r.booth, nonce, pressed)
    await receiver.wait_until(lambda: bool(pages_of(receiver, r.booth)), timeout=10)
    got = pages_of(receiver, r.booth)
    if not got:
        raise RuntimeError(f"no level-1 page for {r.booth} from {r.owner}")
    _, page = got[0]
    if pair.sender(page) != r.owner:
        raise RuntimeError(f"{r.booth}'s first page came from {pair.sender(page)}, "
                           f"not the owner {r.owner}")
    r.due = when(str(page["raised_at"])) + args.step2
    await asyncio.sleep(max(0.0, r.due - kill_before - time.time()))
    r.killed = owner.kill()
    press(client, r.switch_booth, nonce, pressed)

    def done() -> bool:
        level2 = {p["responder"] for _, p in pages_of(receiver, r.booth) if p["level"] == 2}
        return level2 >= set(LEVEL2) and bool(pages_of(receiver, r.switch_booth))

    await receiver.wait_until(done, timeout=args.lease + 20)
    level2 = [(t, p) for t, p in pages_of(receiver, r.booth) if p["level"] == 2]
    if not level2:
        raise RuntimeError(f"no level-2 page for {r.booth} within {args.lease + 20:g} s "
                           "of the kill")
    t, page = min(level2, key=lambda tp: tp[0])
    r.new_owner = pair.sender(page)
    if r.new_owner == r.owner or r.new_owner is None:
        # the step went out before the kill: nothing of this round measures a takeover
        r.notes.append(f"level 2 sent by {r.new_owner} before the kill")
        r.new_owner = pair.owner()
        if r.new_owner is None:
            raise RuntimeError("no owner after the kill")
    else:
        r.kill_to_page = t - r.killed
        r.late = t - r.due
    switch = pages_of(receiver, r.switch_booth)
    if switch:
        r.switch_page = switch[0][0] - r.killed
    # the killed process comes back (as systemd would restart it) and stands by
    owner.start()
    r.standby_again = await asyncio.to_thread(owner.wait_standby)
    # and the switch call's own level 2 comes (from the new owner) before the next kill
    await receiver.wait_until(lambda: {p["responder"] for _, p in pages_of(
        receiver, r.switch_booth) if p["level"] == 2} >= set(LEVEL2), timeout=args.step2 + 10)
    # the new owner's log, now that it has written what it did at its start
    new = pair.services[r.new_owner]
    taken = log_after(new, "lease_taken", r.killed)
    if taken is not None:
        r.detection = taken - r.killed
        started = log_after(new, "started", taken)
        connected = log_after(new, "mqtt_connected", taken)
        r.restore = None if started is None else started - taken
        r.mqtt = None if connected is None else connected - taken
    for name, svc in pair.services.items():
        svc.check_alive()
        if name == r.new_owner and (await asyncio.to_thread(svc.readyz))[0] != 200:
            raise RuntimeError(f"the new owner {name} does not answer /readyz 200")


def tally(rounds: Sequence[Round], receiver: Receiver, pair: Pair,
          earlier: Sequence[str]) -> list[str]:
    """Pages lost, duplicated, or sent by a process that did not own the site."""
    expected: Counter[tuple[str, int, str]] = Counter()
    for r in rounds:
        if r.new_owner is None:
            continue  # the round failed (reported already)
        expected[(r.booth, 1, "ana")] = 1
        for who in LEVEL2:
            expected[(r.booth, 2, who)] = 1
        expected[(r.switch_booth, 1, "ana")] = 1
        for who in LEVEL2:
            expected[(r.switch_booth, 2, who)] = 1
    got: Counter[tuple[str, int, str]] = Counter(
        (str(p["booth"]), int(p["level"]), str(p["responder"])) for _, p in receiver.pages)
    lost = sorted(k for k in expected if got[k] == 0)
    duplicated = {k: n - 1 for k, n in got.items() if n > 1}
    unexpected = sorted(k for k in got if k not in expected)
    switch_lost = sorted(r.switch_booth for r in rounds if r.new_owner is not None
                         and got[(r.switch_booth, 1, "ana")] == 0)
    incidents: dict[str, set[str]] = {}
    for _, p in receiver.pages:
        incidents.setdefault(str(p["booth"]), set()).add(str(p["incident"]))
    ghosts = sorted(b for b, ids in incidents.items() if len(ids) > 1)
    senders = Counter(pair.sender(p) for _, p in receiver.pages)
    print(f"pages: expected {sum(expected.values())}, received {len(receiver.pages)} "
          f"(by process: {', '.join(f'{k}={v}' for k, v in sorted(senders.items(), key=str))}); "
          f"lost {len(lost)}, duplicated {sum(duplicated.values())}, unexpected "
          f"{len(unexpected)}")
    print(f"calls pressed during a switch: {len(rounds)}, not paged {len(switch_lost)}")
    problems = []
    if lost:
        problems.append(f"lost pages (booth, level, responder): {lost[:10]}")
    if duplicated:
        problems.append(f"duplicated pages: {dict(list(duplicated.items())[:10])}")
    if unexpected:
        problems.append(f"unexpected pages: {unexpected[:10]}")
    if switch_lost:
        problems.append(f"calls pressed during a switch never paged: {switch_lost[:10]}")
    if ghosts:
        problems.append(f"booths paged under more than one incident: {ghosts[:10]}")
    return problems


def check_store(store: BenchStore, nonce: str, pressed: Sequence[str],
                rounds: Sequence[Round]) -> list[str]:
    """Every call pressed stored once; one incident per booth that called."""
    reader = store.reader()
    try:
        with contextlib.closing(reader.execute(
                "SELECT event_id, count(*) FROM events WHERE event_id LIKE "
                f"'fo-{nonce}-%' GROUP BY event_id")) as cur:
            stored = {str(k): int(n) for k, n in cur.fetchall()}
        with contextlib.closing(reader.execute(
                "SELECT booth, count(*) FROM incidents GROUP BY booth")) as cur:
            incidents = {str(k): int(n) for k, n in cur.fetchall()}
    finally:
        reader.close()
    missing = [e for e in pressed if e not in stored]
    twice = [e for e, n in stored.items() if n > 1]
    booths_called = {b for r in rounds for b in (r.booth, r.switch_booth)}
    wrong = {b: incidents.get(b, 0) for b in booths_called if incidents.get(b, 0) != 1}
    print(f"store: {len(pressed)} calls pressed, {len(stored)} stored "
          f"(missing {len(missing)}, stored twice {len(twice)}); incidents per booth "
          f"other than 1: {len(wrong)}")
    problems = []
    if missing:
        problems.append(f"events never stored: {missing[:10]}")
    if twice:
        problems.append(f"events stored twice: {twice[:10]}")
    if wrong:
        problems.append(f"incidents per booth: {dict(list(wrong.items())[:10])}")
    return problems


def report(rounds: Sequence[Round], args: argparse.Namespace) -> bool:
    """The failover figures; whether the target was met."""
    measured = [r for r in rounds if r.kill_to_page is not None]
    kill_to_page = [r.kill_to_page for r in measured if r.kill_to_page is not None]
    detection = [r.detection for r in measured if r.detection is not None]
    takeover = [r.kill_to_page - r.detection for r in measured
                if r.kill_to_page is not None and r.detection is not None]
    restore = [r.restore for r in measured if r.restore is not None]
    mqtt = [r.mqtt for r in measured if r.mqtt is not None]
    late = [r.late for r in measured if r.late is not None]
    switch = [r.switch_page for r in rounds if r.switch_page is not None]
    again = [r.standby_again for r in rounds if r.standby_again is not None]
    print(f"\nfailovers: {len(rounds)} SIGKILLs of the owner, {len(measured)} measured "
          f"(level 2 due {args.step2:g} s after the raise, the kill 0.2-"
          f"{min(0.9, args.lease / 2):g} s before it), lease ttl {args.lease:g} s, "
          f"{args.processes} processes")
    print(f"  kill -> first page, new owner:  {spread(kill_to_page)}")
    print(f"    detection (-> lease_taken):   {spread(detection)}")
    print(f"    takeover (lease -> page):     {spread(takeover)}")
    print(f"      of which restore (-> started): {spread(restore)}")
    print(f"  lease -> MQTT session resumed:  {spread(mqtt)}")
    print(f"  step paged late by:             {spread(late)}   (page - due)")
    print(f"  kill -> switch call paged:      {spread(switch)}")
    print(f"  restart -> standing by again:   {spread(again)}   (the killed one, restarted "
          "as systemd would)")
    if not kill_to_page:
        return False
    p99, worst = percentile(kill_to_page, 99), max(kill_to_page)
    met = worst <= TARGET
    print(f"  target kill -> page <= {TARGET:g} s: p99 {'MET' if p99 <= TARGET else 'MISSED'}, "
          f"max {'MET' if met else 'MISSED'}")
    return met


def report_backends(figures: Sequence[BackendFigures], args: argparse.Namespace) -> None:
    print(f"\nstore backends (bench/ingest.py --events {args.ingest_events} --booths "
          f"{args.ingest_booths}; bench/latency.py --booths {args.latency_presses}), "
          "one run each:")
    print(f"  {'':<11} {'ingest':>14} {'press->page p50':>17} {'p99':>10}")
    for f in figures:
        rate = "?" if f.rate is None else f"{f.rate:,.0f} ev/s"
        p50 = "?" if f.p50 is None else f"{f.p50:.2f} ms"
        p99 = "?" if f.p99 is None else f"{f.p99:.2f} ms"
        print(f"  {f.backend:<11} {rate:>14} {p50:>17} {p99:>10}"
              + (f"  FAILED: {'; '.join(f.failures)}" if f.failures else ""))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--failovers", type=int, default=50, help="SIGKILLs of the owner")
    parser.add_argument("--lease", type=float, default=3.0,
                        help="[store] lease: the ttl of the site's lease, seconds (1-60)")
    parser.add_argument("--processes", type=int, default=2, choices=(2, 3),
                        help="boothwatch run processes on the site (one owner, the rest "
                             "standing by)")
    parser.add_argument("--step2", type=float, default=2.0,
                        help="seconds from the raise to level 2 (the step due in the switch)")
    parser.add_argument("--history", type=int, default=0, metavar="EVENTS",
                        help="events of the last 24 h put in the store before the first "
                             "kill, as a running site has (a new owner loads their ids)")
    parser.add_argument("--seed", type=int, default=None, help="of the kill moments")
    parser.add_argument("--ingest-events", type=int, default=20_000)
    parser.add_argument("--ingest-booths", type=int, default=1_000)
    parser.add_argument("--latency-presses", type=int, default=100)
    parser.add_argument("--no-backends", action="store_true",
                        help="only the failovers, not ingest and latency per backend")
    add_src_option(parser)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if not 1 <= args.lease <= 60:
        parser.error("--lease must be between 1 and 60 s, as [store] lease")
    args.seed = int(time.time()) % 100_000 if args.seed is None else args.seed
    with workdir("failover", args) as tmp:
        return run(args, tmp)


def run(args: argparse.Namespace, tmp: Path) -> int:
    """The failovers, then the backends; 1 when anything failed (the files kept)."""
    print(f"seed {args.seed}, files in {tmp}", flush=True)
    started = time.monotonic()
    failed = False
    rounds, problems = asyncio.run(failovers(args, tmp))
    met = report(rounds, args)
    print(f"failover part: {time.monotonic() - started:.0f} s")
    if problems:
        failed = True
        print("\nFAILED:")
        for problem in problems:
            print(f"  - {problem}")
    if not args.no_backends:
        log = tmp / "backends.log"
        figures = []
        for backend in ("sqlite", "postgresql"):
            print(f"running ingest and latency on {backend} ...", flush=True)
            figures.append(backend_figures(
                backend, events=args.ingest_events, booths=args.ingest_booths,
                presses=args.latency_presses, src=args.src, log=log))
        report_backends(figures, args)
        if any(f.failures for f in figures):
            failed = True
            args.keep = True
            print(f"  (their output: {log})")
    verdict = "FAILED" if failed else "nothing lost, duplicated or misbehaving"
    print(f"\ntotal {time.monotonic() - started:.0f} s; takeover target "
          f"{'MET' if met else 'MISSED'}; {verdict}")
    if failed:
        args.keep = True
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
