"""How late the service's timers fire at scale, measured from outside.

The service (``boothwatch run``, a subprocess, the deploy broker) gets ``--booths``
booths, every one in session (occupied) before the measurement starts, and other
booths' events at ``--traffic`` a second throughout (motion and heartbeats: nothing
ends a session). ``--probes`` probe booths, among them, have short thresholds:

* a stillness probe is occupied and moving from the start; at a known time it
  publishes ``motion still``: its ``unresponsive`` timer is due ``--stillness``
  after that publish;
* a long-session probe is vacant; at a known time it publishes ``occupied``: its
  ``long_session`` timer is due ``--long-session`` after that publish.

Each timer raises an incident whose policy pages the nurse at once (level 1) and
again ``--step2`` later (level 2): the escalation timer, due ``--step2`` after the
incident's ``raised_at`` (read from the store, where it has full precision).
Lateness = the page's arrival at a webhook receiver in this process minus its
deadline, both ``time.time()`` on this machine; so it includes the HTTP hop (and,
for stillness and long session, the MQTT hop of the probe's publish). Target: p99
within 10 ms.

    .venv/bin/python bench/timers.py [--booths 10000] [--probes 200] [--traffic 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    SITE,
    Broker,
    Service,
    add_src_option,
    bench_site,
    broker_line,
    percentile,
    workdir,
)
from bench.latency import Receiver, Traffic, connect, publish_spaced
from tests.harness.broker import free_port
from tests.harness.site import booth, policy, step

TARGET_P99 = 10.0  # ms
# what the other booths say meanwhile: they stay in session, nothing of theirs is due
BACKGROUND: tuple[dict[str, Any], ...] = (
    {"kind": "motion", "state": "moving"},
    {"kind": "heartbeat", "battery": 87},
    {"kind": "motion", "state": "still"},
)


def topic(booth_id: str) -> str:
    return f"boothwatch/{SITE}/booths/{booth_id}/events"


def body(nonce: str, n: int, **event: Any) -> bytes:
    return json.dumps({**event, "id": f"{nonce}-{n}"}, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Plan:
    """Who is who: background booths, and the two kinds of probes."""

    background: list[str]
    still: list[str]  # stillness probes
    long: list[str]  # long-session probes

    @classmethod
    def of(cls, booths: int, probes: int) -> Plan:
        ids = [f"b{i}" for i in range(1, booths + 1)]
        probe_ids = ids[booths - probes:]
        return cls(ids[:booths - probes], probe_ids[0::2], probe_ids[1::2])

    def probe_booths(self, stillness: str, long_session: str) -> list[dict[str, Any]]:
        """The probes' [[booths]] tables, each with the one short threshold it tests."""
        return ([booth(b, stillness=stillness, long_session="1h") for b in self.still]
                + [booth(b, long_session=long_session, stillness="1h") for b in self.long])


def setup(broker: Broker, plan: Plan, nonce: str) -> int:
    """Every booth in session but the long-session probes; stillness probes moving.
    Returns how many events were published (all acknowledged by the broker)."""
    messages = [(topic(b), body(nonce, i, kind="occupancy", occupied=True))
                for i, b in enumerate(plan.background + plan.still)]
    messages += [(topic(b), body(nonce, len(messages) + i, kind="motion", state="moving"))
                 for i, b in enumerate(plan.still)]
    client = connect(broker, "setup")
    try:
        infos = [client.publish(t, p, qos=1) for t, p in messages]
        for info in infos:
            info.wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()
    return len(messages)


def wait_stored(db_path: Path, count: int, service: Service, timeout: float) -> float:
    """Until the store holds ``count`` events; returns the seconds it took."""
    started = time.monotonic()
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        while time.monotonic() - started < timeout:
            service.check_alive()
            # fetchall ends the read transaction (a held snapshot would block checkpoints)
            if db.execute("SELECT count(*) FROM events").fetchall()[0][0] >= count:
                return time.monotonic() - started
            time.sleep(0.1)
    finally:
        db.close()
    raise RuntimeError(f"the store did not hold {count} events within {timeout:g} s")


def raised_at(db_path: Path) -> dict[str, float]:
    """Incident id -> raised_at, full precision (the pages carry whole milliseconds)."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return {i: float(at) for i, at in db.execute("SELECT id, raised_at FROM incidents")}
    finally:
        db.close()


def show(label: str, ms: Sequence[float]) -> bool:
    """Print the distribution; True if its p99 meets the target."""
    if not ms:
        print(f"{label:<22} no pages")
        return False
    p99 = percentile(ms, 99)
    print(f"{label:<22} count {len(ms):>4}  p50 {percentile(ms, 50):6.2f}  "
          f"p90 {percentile(ms, 90):6.2f}  p99 {p99:6.2f}  max {max(ms):6.2f} ms"
          f"   (p99 <= {TARGET_P99:g} ms: {'MET' if p99 <= TARGET_P99 else 'MISSED'})")
    return p99 <= TARGET_P99


async def run(args: argparse.Namespace, tmp: Path) -> int:
    plan = Plan.of(args.booths, args.probes)
    broker = Broker(tmp / "broker")
    receiver = Receiver()
    service: Service | None = None
    failed = False
    try:
        broker.start()
        print(broker_line(broker))
        await receiver.start()
        http_port = free_port()
        db_path = tmp / "boothwatch.db"
        twice = policy(step("0s", "role:nurse"), step(args.step2, "role:nurse"),
                       repeat="1h", ack_timeout="1h")
        site = bench_site(
            mqtt_port=broker.port, http_port=http_port, db=db_path,
            booths=len(plan.background), auth=broker.auth,
            channel={"type": "webhook", "url": receiver.url, "timeout": "5s"},
            extra_booths=plan.probe_booths(args.stillness, args.long_session),
        )
        site.escalation = {"high": twice, "medium": twice,
                           "low": policy(step("0s", "role:nurse"))}
        service = Service(tmp, site.text(), http_port, src=args.src, profile=args.profile)
        service.start()
        ready = await asyncio.to_thread(service.wait_ready, 120)
        print(f"service: ready in {ready:.2f} s with {args.booths} booths "
              f"({len(plan.still)} stillness probes, {len(plan.long)} long-session probes)")
        nonce = uuid.uuid4().hex[:8]
        count = await asyncio.to_thread(setup, broker, plan, nonce)
        took = await asyncio.to_thread(wait_stored, db_path, count, service, 120)
        print(f"setup: {count} events (every booth in session but the long-session probes) "
              f"stored in {took:.1f} s; RSS {service.memory_mb('VmRSS') or 0:.1f} MiB")

        stillness, long_session, step2 = (float(args.stillness.rstrip("s")),
                                          float(args.long_session.rstrip("s")),
                                          float(args.step2.rstrip("s")))
        # alternating, so both kinds fall due across the whole window
        order = [b for pair in zip_longest(plan.still, plan.long) for b in pair if b]
        probes = [(topic(b), body(nonce, count + i, **(
            {"kind": "motion", "state": "still"} if b in plan.still
            else {"kind": "occupancy", "occupied": True}))) for i, b in enumerate(order)]
        expected = 2 * len(probes)  # level 1 and level 2 for each
        cpu0 = service.cpu_seconds() or 0.0
        wall0 = time.monotonic()
        with Traffic(broker, plan.background, args.traffic, BACKGROUND) as traffic:
            await asyncio.sleep(args.settle)
            sent = await asyncio.to_thread(publish_spaced_on, broker, probes, args.spacing)
            await receiver.wait_until(lambda: len(receiver.pages) >= expected,
                                      timeout=max(stillness, long_session) + step2 + 30)
            await asyncio.sleep(0.5)  # an extra page would show up now
        cpu = ((service.cpu_seconds() or 0.0) - cpu0) / (time.monotonic() - wall0)
        service.check_alive()
        raised = await asyncio.to_thread(raised_at, db_path)

        due = {topic(b): stillness for b in plan.still} | {topic(b): long_session
                                                            for b in plan.long}
        by_booth = {t.split("/")[3]: at + due[t] for t, at in sent.items()}
        lateness: dict[str, list[float]] = {"stillness": [], "long_session": [], "escalation": []}
        seen: dict[tuple[str, int], int] = {}
        for arrived, page in receiver.pages:
            key = (str(page.get("booth")), int(page.get("level", 0)))
            seen[key] = seen.get(key, 0) + 1
            if key[1] == 1 and key[0] in by_booth:
                kind = "stillness" if key[0] in plan.still else "long_session"
                lateness[kind].append((arrived - by_booth[key[0]]) * 1000)
            elif key[1] == 2 and str(page.get("incident")) in raised:
                deadline = raised[str(page["incident"])] + step2
                lateness["escalation"].append((arrived - deadline) * 1000)
        missing = sum(1 for b in by_booth for level in (1, 2) if (b, level) not in seen)
        extra = sum(n - 1 for n in seen.values()) + sum(
            1 for (b, _level) in seen if b not in by_booth)

        print(f"probes: {len(probes)} publishes {args.spacing * 1000:g} ms apart; other "
              f"traffic {traffic.sent / max(traffic.seconds, 1e-9):.0f} events/s over "
              f"{len(plan.background)} booths; service CPU {cpu * 100:.0f}%")
        print("lateness (page arrival - deadline):")
        met = [show("  stillness", lateness["stillness"]),
               show("  long session", lateness["long_session"]),
               show("  escalation (level 2)", lateness["escalation"])]
        everything = [v for values in lateness.values() for v in values]
        met.append(show("  all timers", everything))
        print(f"pages: expected {expected}, received {len(receiver.pages)}, missing {missing}, "
              f"extra {extra}")
        print(f"service RSS now {service.memory_mb('VmRSS') or 0:.1f} MiB, peak (VmHWM) "
              f"{service.peak_rss_mb() or 0:.1f} MiB   (target < 150 MiB)")
        if missing or extra:
            failed = True
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


def publish_spaced_on(broker: Broker, messages: Sequence[tuple[str, bytes]],
                      interval: float) -> dict[str, float]:
    """`publish_spaced` from a client of its own: time.time() just before each, by topic."""
    client = connect(broker, "probes")
    try:
        sent = publish_spaced(client, messages, interval)
        time.sleep(0.2)  # let the last PUBACKs in before disconnecting
    finally:
        client.disconnect()
        client.loop_stop()
    return sent


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--booths", type=int, default=10_000, help="booths, all in session")
    parser.add_argument("--probes", type=int, default=200,
                        help="probe booths among them, half stillness, half long session")
    parser.add_argument("--traffic", type=float, default=500.0,
                        help="other booths' events a second throughout")
    parser.add_argument("--stillness", default="3s", help="the stillness probes' threshold")
    parser.add_argument("--long-session", default="3s",
                        help="the long-session probes' threshold")
    parser.add_argument("--step2", default="2s", help="when escalation pages again (level 2)")
    parser.add_argument("--spacing", type=float, default=0.05,
                        help="seconds between the probes' publishes")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds of background traffic before the first probe")
    parser.add_argument("--profile", metavar="FILE",
                        help="run the service under cProfile and write FILE (skews timing)")
    add_src_option(parser)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    args.profile = Path(args.profile).resolve() if args.profile else None
    if not 2 <= args.probes < args.booths:
        parser.error("--probes must be at least 2 and fewer than --booths")
    for name in ("stillness", "long_session", "step2"):
        value = getattr(args, name)
        if not (value.endswith("s") and value[:-1].replace(".", "", 1).isdigit()):
            parser.error(f"--{name.replace('_', '-')} takes seconds, e.g. 3s")
    with workdir("timers", args) as tmp:
        return asyncio.run(run(args, tmp))


if __name__ == "__main__":
    raise SystemExit(main())
