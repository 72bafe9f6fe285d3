"""Soak: a simulated day at 200 booths, compressed into minutes; RSS and tasks over time.

The real service (``boothwatch run``, a subprocess) on the deploy-config broker.
Every booth lives a day: sessions with motion every minute, heartbeats every 5
minutes, and now and then a person gone still, a session running long, or a call.
A responder bot in this process receives the pages (webhook), acknowledges over
the MQTT ack topic, presses presence and then clear at the booth, as a nurse
would. Every duration, the service's thresholds included, is divided by
``--speed``: at the default 240 a day takes 6 minutes and the service sees the
whole day's events, sessions, incidents and pages.

Every ``--sample`` seconds it prints the simulated hour, the service's resident
memory (VmRSS), the tasks alive on its event loop (``boothwatch_event_loop_tasks``),
its open file descriptors, open incidents, events and pages so far. At the end:
the growth of RSS and tasks from the first simulated hour to the last (they must
stay flat), and events published against events the service accepted.

The service runs with the environment the systemd unit gives it
(``Environment=`` lines of ``deploy/systemd/boothwatch.service``: glibc's malloc
settings); ``--no-unit-env`` runs it with glibc's defaults instead.

    .venv/bin/python bench/soak.py [--booths 200] [--hours 24] [--speed 240]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho
from aiohttp import web

from bench.harness import (
    REPO,
    SITE,
    Broker,
    Service,
    add_src_option,
    bench_site,
    workdir,
)
from bench.latency import connect
from tests.harness.broker import free_port
from tests.harness.site import policy, step

MINUTE = 60.0
# thresholds at speed 1, as a site would set them (domain.md: stillness 2-3 min)
STILLNESS = 3 * MINUTE
LONG_SESSION = 30 * MINUTE
ESCALATE_AFTER = 1 * MINUTE
REPEAT = 1 * MINUTE
ACK_TIMEOUT = 2 * MINUTE


@dataclass
class Tally:
    published: int = 0
    stories: dict[str, int] = field(default_factory=dict)
    pages: int = 0
    notices: int = 0
    acked: set[str] = field(default_factory=set)


class Day:
    def __init__(self, args: argparse.Namespace, client: paho.Client) -> None:
        self.args = args
        self.client = client
        self.speed = float(args.speed)
        self.rng = random.Random(args.seed)
        self.tally = Tally()
        self.started = time.monotonic()
        self.end: float = self.started + args.hours * 3600 / self.speed

    def sim_hours(self) -> float:
        return (time.monotonic() - self.started) * self.speed / 3600

    async def sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(sim_seconds / self.speed)

    def publish(self, booth: str, kind: str, **fields: Any) -> None:
        body = {"kind": kind, "id": uuid.uuid4().hex, "device": f"{booth}-{kind}", **fields}
        topic = f"boothwatch/{SITE}/booths/{booth}/events"
        self.client.publish(topic, json.dumps(body).encode(), qos=1)
        self.tally.published += 1

    def over(self) -> bool:
        return time.monotonic() >= self.end

    async def moving(self, booth: str, sim_seconds: float) -> None:
        until = time.monotonic() + sim_seconds / self.speed
        while time.monotonic() < until and not self.over():
            self.publish(booth, "motion", state="moving")
            await self.sleep(MINUTE)

    async def booth(self, i: int) -> None:
        booth, rng = f"b{i}", self.rng
        await self.sleep(rng.uniform(0, 20 * MINUTE))
        while not self.over():
            self.publish(booth, "occupancy", occupied=True)
            r = rng.random()
            if r < 0.03:
                story = "still"  # moving a while, then still past the threshold
                await self.moving(booth, rng.uniform(2, 8) * MINUTE)
                self.publish(booth, "motion", state="still")
                await self.sleep(STILLNESS * 1.5 + 3 * MINUTE)  # the nurse comes and clears
            elif r < 0.05:
                story = "call"
                await self.moving(booth, rng.uniform(1, 5) * MINUTE)
                self.publish(booth, "button", press="call")
                await self.moving(booth, 5 * MINUTE)
            elif r < 0.08:
                story = "long"
                await self.moving(booth, LONG_SESSION + rng.uniform(2, 10) * MINUTE)
            else:
                story = "normal"
                await self.moving(booth, rng.uniform(10, 25) * MINUTE)
            self.tally.stories[story] = self.tally.stories.get(story, 0) + 1
            self.publish(booth, "motion", state="absent")
            self.publish(booth, "occupancy", occupied=False)
            await self.sleep(rng.expovariate(1 / (12 * MINUTE)))

    async def heartbeats(self) -> None:
        booths = [f"b{i}" for i in range(1, self.args.booths + 1)]
        while not self.over():
            for booth in booths:
                self.publish(booth, "heartbeat", battery=90)
            await self.sleep(5 * MINUTE)

    async def respond(self, page: dict[str, Any]) -> None:
        """The nurse: acknowledge, walk over (presence), see to the person, clear."""
        incident, booth = str(page["incident"]), str(page["booth"])
        if incident in self.tally.acked:
            return
        self.tally.acked.add(incident)
        await self.sleep(self.rng.uniform(10, 40))
        ack = {"incident": incident, "responder": page["responder"]}
        self.client.publish(f"boothwatch/{SITE}/ack", json.dumps(ack).encode(), qos=1)
        await self.sleep(self.rng.uniform(20, 60))
        self.publish(booth, "button", press="presence")
        await self.sleep(self.rng.uniform(30, 120))
        self.publish(booth, "button", press="clear")


UNIT = REPO / "deploy" / "systemd" / "boothwatch.service"


def unit_environment() -> dict[str, str]:
    """The ``Environment=NAME=value`` settings of the shipped systemd unit."""
    out: dict[str, str] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if line.startswith("Environment="):
            name, _, value = line.removeprefix("Environment=").partition("=")
            out[name] = value
    return out


def read_proc(pid: int) -> tuple[float, int]:
    """VmRSS in MiB and open file descriptors of the service."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return rss / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    out = 0.0
    for key, value in samples.items():
        if key.split("{", 1)[0] == name and all(f'{k}="{v}"' in key for k, v in labels.items()):
            out += value
    return out


@dataclass
class Row:
    hour: float
    rss: float
    tasks: float
    fds: int
    open_incidents: float
    events: float
    pages: float


def sample(service: Service, day: Day) -> Row:
    assert service.process is not None
    m = service.metrics()
    rss, fds = read_proc(service.process.pid)
    return Row(hour=day.sim_hours(), rss=rss, tasks=m.get("boothwatch_event_loop_tasks", -1),
               fds=fds, open_incidents=total(m, "boothwatch_incidents_open"),
               events=total(m, "boothwatch_events_total", result="accepted"),
               pages=total(m, "boothwatch_pages_total", result="sent"))


def print_row(row: Row) -> None:
    print(f"  {row.hour:5.1f} h  rss {row.rss:6.1f} MiB  tasks {row.tasks:4.0f}  fds {row.fds:3d}"
          f"  open incidents {row.open_incidents:3.0f}  events {row.events:8.0f}"
          f"  pages sent {row.pages:6.0f}", flush=True)


async def run(args: argparse.Namespace, tmp: Path) -> int:
    scale = float(args.speed)

    def dur(seconds: float) -> str:
        return f"{seconds / scale:.3f}s"

    broker = Broker(tmp / "broker")
    broker.start()
    service: Service | None = None
    runner: web.AppRunner | None = None
    rows: list[Row] = []
    try:
        client = connect(broker, "soak")
        day = Day(args, client)
        responding: set[asyncio.Task[None]] = set()

        async def hook(request: web.Request) -> web.Response:
            body = json.loads(await request.read())
            if body.get("kind", "page") == "page":
                day.tally.pages += 1
                task = asyncio.create_task(day.respond(body))
                responding.add(task)
                task.add_done_callback(responding.discard)
            else:
                day.tally.notices += 1
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/page", hook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        hook_port = free_port()
        await web.TCPSite(runner, "127.0.0.1", hook_port).start()

        http_port = free_port()
        site = bench_site(
            mqtt_port=broker.port, http_port=http_port, db=tmp / "boothwatch.db",
            booths=args.booths, auth=broker.auth,
            channel={"type": "webhook", "url": f"http://127.0.0.1:{hook_port}/page",
                     "timeout": "5s"},
            long_session=dur(LONG_SESSION), stillness=dur(STILLNESS), device_timeout="1h",
        )
        # the flood limit scaled like everything else: a booth's motion report every
        # simulated minute is 16 a second at speed 960, past the default 10/s, and the
        # limiter would drop the bot's presence and clear presses with them
        site.rate_limit = {"rate": max(10.0, scale / 20), "burst": max(50, int(scale / 4))}
        # escalation as a site has it: a second step and repeats, scaled like the rest
        site.escalation["high"] = policy(step("0s", "role:nurse"),
                                         step(dur(ESCALATE_AFTER), "role:nurse"),
                                         repeat=dur(REPEAT), ack_timeout=dur(ACK_TIMEOUT))
        config = site.text()
        service = Service(tmp, config, http_port, src=args.src)
        env = {} if args.no_unit_env else unit_environment()
        os.environ.update(env)  # for the service only: the broker is already running
        service.start()
        await asyncio.to_thread(service.wait_ready)
        print(f"soak: {args.booths} booths, {args.hours} h at speed {args.speed:g} "
              f"({args.hours * 3600 / scale / 60:.1f} min), sample every {args.sample:g} s, "
              f"environment {env or 'glibc defaults'}")

        day.started = time.monotonic()
        day.end = day.started + args.hours * 3600 / scale
        lives = [asyncio.create_task(day.booth(i)) for i in range(1, args.booths + 1)]
        lives.append(asyncio.create_task(day.heartbeats()))
        while not day.over():
            await asyncio.sleep(min(args.sample, max(0.0, day.end - time.monotonic())))
            service.check_alive()
            row = await asyncio.to_thread(sample, service, day)
            rows.append(row)
            print_row(row)
        for task in lives:
            task.cancel()
        await asyncio.gather(*lives, return_exceptions=True)
        await asyncio.sleep(3)  # let the last events land
        published = day.tally.published
        m = await asyncio.to_thread(service.metrics)
        accepted = total(m, "boothwatch_events_total", result="accepted")
        duplicate = total(m, "boothwatch_events_total", result="duplicate")
        rejected = total(m, "boothwatch_events_rejected_total")
        print(f"stories: {day.tally.stories}")
        print(f"events published {published}, accepted {accepted:.0f}, duplicates "
              f"{duplicate:.0f}, rejected {rejected:.0f}, not accounted for "
              f"{published - accepted - duplicate - rejected:.0f}")
        raised = total(m, "boothwatch_incidents_raised_total")
        print(f"incidents raised {raised:.0f}, pages received {day.tally.pages}, notices "
              f"{day.tally.notices}, incidents acknowledged by the bot {len(day.tally.acked)}")
        warm = [r for r in rows if r.hour >= 1.0] or rows
        first = warm[: max(1, len(warm) // 8)]
        last = warm[-max(1, len(warm) // 8):]

        def mean(values: Sequence[float]) -> float:
            return sum(values) / len(values)

        rss_growth = mean([r.rss for r in last]) - mean([r.rss for r in first])
        print(f"RSS after the first hour {mean([r.rss for r in first]):.1f} MiB, "
              f"at the end {mean([r.rss for r in last]):.1f} MiB (growth {rss_growth:+.1f} MiB),"
              f" peak {max(r.rss for r in rows):.1f} MiB")
        print(f"tasks after the first hour {min(r.tasks for r in warm):.0f}.."
              f"{max(r.tasks for r in warm):.0f}, at the end {last[-1].tasks:.0f}; "
              f"fds {min(r.fds for r in warm)}..{max(r.fds for r in warm)}")
        return 0
    finally:
        if service is not None:
            code = service.stop()
            print(f"service: exit code {code} after SIGTERM")
        if runner is not None:
            await runner.cleanup()
        broker.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--booths", type=int, default=200)
    parser.add_argument("--hours", type=float, default=24.0, help="simulated hours")
    parser.add_argument("--speed", type=float, default=240.0,
                        help="simulated seconds per real second (thresholds scale with it)")
    parser.add_argument("--sample", type=float, default=15.0, help="real seconds per sample")
    parser.add_argument("--seed", type=int, default=1)
    add_src_option(parser)
    parser.add_argument("--no-unit-env", action="store_true",
                        help="run the service without the systemd unit's Environment= settings")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    with workdir("soak", args) as tmp:
        return asyncio.run(run(args, tmp))


if __name__ == "__main__":
    sys.exit(main())
