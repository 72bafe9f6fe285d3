"""Crash anywhere: SIGKILL the real service at random moments of a scripted scenario.

Used by `tests/test_crash.py` (a few trials, asserts none failed) and `bench/crash.py`
(many trials, prints figures). One trial:

1. A fresh site (its own site id, so its topics are its own), SQLite file, webhook
   receiver and `boothwatch run --config FILE` subprocess, against a Mosquitto shared
   by all trials (persistent sessions: events published while the service is dead
   wait in the broker).
2. Four booths play a script, each as its own task, reacting to the pages they get
   the way staff would (an ack comes after a page, presence after the ack):

   - b1: the call button; paged responders escalate (levels 1-3, 0 s, 1.5 s, 3 s);
     acknowledged on the MQTT ack topic at a random moment of the escalation, then
     presence and clear at the booth.
   - b2: occupied and still: `unresponsive` after 2 s; acknowledged through the
     signed ack link of a page (HTTP POST), then presence, moving, clear, vacant.
   - b3: occupied and moving: `long_session` (medium) after 3 s; vacancy resolves it.
   - b4: a short session (its thresholds are far away): no incident; one event is
     published twice with the same id, as a device retrying would.

3. 1-3 SIGKILLs at random points (right after a publish, right after an ack, when a
   page of some level arrives, at a random moment, or again while the restarted
   service is still restoring), each followed by a random downtime (0-3 s) and a restart.
4. The oracle, from the published events, the received pages, the kill/restart times
   and the SQLite file: every event stored exactly once; exactly the incidents the
   script implies; every page due before the acknowledgement received at least once;
   the stamps (raised, acknowledged, presence, resolved) inside the window the script
   and the downtime allow.

The service's own stamps decide which pages were due (a step due before the stored
`acknowledged_at`), and the stamps are checked against the script separately, so the
two checks together pin down the behaviour without guessing the service's timing.

An incident raised in memory but killed before its commit is raised again when the
broker redelivers the event (or the restored timer fires), under the same id
(`monitor/core/ids.py`): the page sent before the kill, its ack link and an MQTT ack
naming it all reach the incident the store keeps. A page naming an id the store never
had is a "ghost" incident, and a failure. So that the bench can measure code from before
stable ids (`--src`), the script still copes with one: an MQTT ack naming a ghost is
ignored by the service, so the script acks the incident the service shows instead
(counted as a re-ack); a ghost's ack link answers 404 with an offer of the alarm raised
again, and the script takes it (counted too).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import json
import math
import random
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.harness import site as cfg
from tests.harness.broker import Publisher, free_port
from tests.harness.process import Run, ServiceProcess
from tests.harness.receivers import Webhook

STILLNESS = 2.0
LONG_SESSION = 3.0
FAR = "10m"  # thresholds that must never fire within a trial
# (after, responders paged) per level; the config below says the same with roles
POLICIES: dict[str, tuple[tuple[float, tuple[str, ...]], ...]] = {
    "high": ((0.0, ("ana",)), (1.5, ("ana", "rui")), (3.0, ("eva",))),
    "medium": ((0.0, ("ana",)), (2.0, ("rui",))),
}
EXPECTED = {"b1": ("call", "high"), "b2": ("unresponsive", "high"),
            "b3": ("long_session", "medium")}  # b4: no incident
BOOTHS = ("b1", "b2", "b3", "b4")

SETTLE = 1.0  # an input the service had this long before a kill is committed
SLACK = 2.0  # a stamp may land this long after the service could first act (slow machine)
EDGE = 0.3  # a step due this close to the acknowledgement may or may not have fired
LATE_LIMIT = 10.0  # a page due while the service was dead must come this soon after restart
WAIT = 15.0  # generous waits for a page or an ack, across restarts
DOWNTIME = (0.0, 3.0)
WAIT_READY = 60.0  # a restart on a loaded machine

KILL_POINTS = (
    "pub:b1:call", "pub:b1:presence", "pub:b1:clear", "pub:b2:occupied", "pub:b2:still",
    "pub:b2:clear", "pub:b3:occupied", "pub:b3:vacant", "pub:b4:occupied",
    "ack:b1", "ack:b2", "page:b1:1", "page:b1:2", "page:b1:3", "page:b2:1", "page:b2:2",
    "page:b3:1", "page:b3:2", "time",
)


def trial_site(*, site: str, mqtt_port: int, http_port: int, webhook_url: str, db: Path,
               client_id: str) -> cfg.Site:
    """The trial's site: b1 calls, b2 goes still, b3 stays long, b4 does neither."""
    high, medium = POLICIES["high"], POLICIES["medium"]
    return cfg.Site(
        id=site, name="Crash trial", mqtt_port=mqtt_port, client_id=client_id, store=db,
        http_port=http_port,
        defaults={"long_session": f"{LONG_SESSION}s", "stillness": f"{STILLNESS}s",
                  "device_timeout": "15m"},
        booths=[cfg.booth("b1"), cfg.booth("b2", long_session=FAR),
                cfg.booth("b3", stillness=FAR), cfg.booth("b4", long_session=FAR, stillness=FAR)],
        channels={"pager": cfg.webhook(webhook_url)},
        responders=[cfg.responder("ana", ["nurse"], ["pager"]),
                    cfg.responder("rui", ["coordinator"], ["pager"]),
                    cfg.responder("eva", ["lead"], ["pager"])],
        escalation={
            "high": cfg.policy(cfg.step(high[0][0], "role:nurse"),
                               cfg.step(high[1][0], "role:nurse", "role:coordinator"),
                               cfg.step(high[2][0], "eva"), repeat="60s", ack_timeout="60s"),
            "medium": cfg.policy(cfg.step(medium[0][0], "role:nurse"),
                                 cfg.step(medium[1][0], "role:coordinator"),
                                 repeat="60s", ack_timeout="60s"),
            "low": cfg.policy(cfg.step(0, "role:coordinator")),
        },
    )


# --------------------------------------------------------------------------- the process


class TrialService(ServiceProcess):
    """The service process of a trial, and what its runs tell about when it could act."""

    def settled(self, t: float) -> float:
        """The latest time an input arriving at ``t`` can have been acted on and committed:
        at once if the service was up for SETTLE after, else after the next restart that
        stayed up; plus SLACK."""
        x = t
        for run in self.runs:
            end = run.killed if run.killed is not None else math.inf
            if end <= x or run.ready is None:
                continue
            start = max(x, run.ready)
            if end > start + SETTLE:
                return start + SLACK
            x = end
        return math.inf

    def disturbed(self, t: float) -> bool:
        """``t`` falls where a kill or a restart may have postponed what was due."""
        for before, after in itertools.pairwise(self.runs):
            assert before.killed is not None
            ready = after.ready if after.ready is not None else after.spawn + SLACK
            if before.killed - SETTLE <= t <= ready + SLACK:
                return True
        return False

    def dead_at(self, t: float) -> Run | None:
        """The run that restarted after a downtime holding ``t``, if ``t`` fell in one."""
        for before, after in itertools.pairwise(self.runs):
            assert before.killed is not None
            if before.killed <= t < after.spawn:
                return after
        return None

    def last_spawn(self, t: float) -> float:
        return max((r.spawn for r in self.runs if r.spawn <= t), default=self.runs[0].spawn)


def _offer(text: str, booth_name: str) -> str | None:
    """The fresh ack link a "not on record" page offers for ``booth_name``, if any."""
    for item in re.findall(r"<li>(.*?)</li>", text, re.S):
        found = re.search(r'action="([^"]+)"', item)
        if f"<b>{html.escape(booth_name)}</b>" in item and found:
            return html.unescape(found.group(1))
    return None


# --------------------------------------------------------------------------- a trial


@dataclass(frozen=True)
class KillPlan:
    point: str  # where in the script (see KILL_POINTS)
    delay: float  # after the point
    downtime: float  # dead for this long before the restart
    again_after: float | None  # kill the restarted process again this soon after its spawn
    again_downtime: float = 0.0


@dataclass
class Published:
    booth: str
    name: str
    event_id: str
    at: float


@dataclass
class AckRecord:
    booth: str
    responder: str
    via: str
    first_at: float
    last_at: float = 0.0
    incidents: list[str] = field(default_factory=list)


@dataclass
class TrialResult:
    seed: int
    failures: list[str] = field(default_factory=list)
    plan: list[KillPlan] = field(default_factory=list)
    kills: int = 0
    events: int = 0
    incidents: int = 0
    pages_expected: int = 0
    pages_received: int = 0
    duplicates: int = 0
    late_from_spawn: list[float] = field(default_factory=list)
    late_from_ready: list[float] = field(default_factory=list)
    restart_seconds: list[float] = field(default_factory=list)
    ghost_incidents: int = 0
    reacks: int = 0
    offers_taken: int = 0  # a ghost incident's ack link answered with the alarm raised again
    duration: float = 0.0
    timeline: list[str] = field(default_factory=list)
    workdir: Path | None = None

    def report(self) -> str:
        lines = [f"trial seed {self.seed}: {len(self.failures)} failure(s); reproduce with "
                 f"`python bench/crash.py --trials 1 --seed {self.seed}` "
                 f"(files in {self.workdir})"]
        lines += [f"  FAIL {f}" for f in self.failures]
        lines += ["  kill plan: " + "; ".join(
            f"{p.point}+{p.delay:.3f}s down {p.downtime:.2f}s"
            + (f" (again {p.again_after:.2f}s after restart)" if p.again_after else "")
            for p in self.plan)]
        lines += [f"  {line}" for line in self.timeline]
        return "\n".join(lines)


def make_plan(rng: random.Random) -> list[KillPlan]:
    """1-3 kills: each at a script point, or one more while a restart restores."""
    total = rng.randint(1, 3)
    plans: list[KillPlan] = []
    points = rng.sample(KILL_POINTS, total)
    while total > 0:
        point = points.pop()
        total -= 1
        # at once (before the page is answered, right after the PUBACK), within a few ms
        # (while the service handles and commits it), or within half a second
        delay = rng.choice((0.0, rng.uniform(0, 0.004), rng.uniform(0, 0.02),
                            rng.uniform(0, 0.5)))
        again, again_downtime = None, 0.0
        if total > 0 and rng.random() < 0.2:
            again = rng.uniform(0.05, 0.8)  # while it restores and fires what fell due
            again_downtime = rng.uniform(*DOWNTIME)
            total -= 1
        plans.append(KillPlan(point, delay, rng.uniform(*DOWNTIME), again, again_downtime))
    return plans


class Trial:
    def __init__(self, seed: int, broker: tuple[str, int], workdir: Path,
                 src: Path | None = None, plan: list[KillPlan] | None = None) -> None:
        self.seed = seed
        self._plan = plan  # the kills, else drawn from the seed
        self.src = src  # import the service from here (bench/crash.py --src), else this tree
        self.rng = random.Random(seed)  # the kill plan; each booth's script has its own
        self.result = TrialResult(seed, workdir=workdir)
        self.workdir = workdir
        self.broker = broker
        self.site = f"crash-{seed}"
        self.published: list[Published] = []
        self.acks: dict[str, AckRecord] = {}
        self.t0 = 0.0
        self._pending: dict[str, KillPlan] = {}
        self._kill_tasks: list[asyncio.Task[None]] = []
        self._busy = False  # a kill is under way: the next one waits until it is ready again
        self._idle = asyncio.Event()
        self._seen_pages: set[str] = set()

    def note(self, text: str) -> None:
        self.result.timeline.append(f"t+{time.time() - self.t0:6.3f} {text}")

    def fail(self, text: str) -> None:
        self.result.failures.append(text)

    # --- kills ------------------------------------------------------------------------

    def point(self, name: str) -> None:
        """The script reached ``name``: carry out the kill planned there, if any. A kill
        planned with no delay is sent before this returns (before the page's HTTP answer,
        right after the broker's PUBACK), unless another kill is still restarting."""
        plan = self._pending.pop(name, None)
        if plan is None:
            return
        if plan.delay == 0 and not self._busy:
            self._claim()
            self._signal(plan)
            self._kill_tasks.append(asyncio.create_task(self._restart(plan)))
        else:
            self._kill_tasks.append(asyncio.create_task(self._kill(plan)))

    def _claim(self) -> None:
        self._busy = True
        self._idle.clear()

    def _signal(self, plan: KillPlan) -> None:
        self.svc.kill()
        self.note(f"SIGKILL ({plan.point}+{plan.delay:.3f}s)")

    async def _kill(self, plan: KillPlan) -> None:
        await asyncio.sleep(plan.delay)
        while self._busy:
            await self._idle.wait()
        self._claim()
        self._signal(plan)
        await self._restart(plan)

    async def _restart(self, plan: KillPlan) -> None:
        try:
            await self.svc.reap()
            await asyncio.sleep(plan.downtime)
            self.svc.start()
            self.note("restart")
            if plan.again_after is not None:
                await asyncio.sleep(plan.again_after)
                self.svc.kill()
                await self.svc.reap()
                self.note(f"SIGKILL while restoring ({plan.again_after:.2f}s after spawn)")
                await asyncio.sleep(plan.again_downtime)
                self.svc.start()
                self.note("restart")
            await self.svc.ready(WAIT_READY, every=0.02)
            self.note("ready")
        finally:
            self._busy = False
            self._idle.set()

    def _on_page(self, page: dict[str, Any]) -> None:
        """Called by the receiver before it answers: the page:<booth>:<level> points."""
        key = f"page:{page['booth']}:{page['level']}"
        if key not in self._seen_pages:
            self._seen_pages.add(key)
            self.note(f"page {page['booth']} L{page['level']} -> {page['responder']} "
                      f"({page['incident'][-6:]})")
            self.point(key)

    async def _timed_kill(self, rng: random.Random) -> None:
        await asyncio.sleep(rng.uniform(0, 8))
        self.point("time")

    # --- script helpers ---------------------------------------------------------------

    async def pub(self, booth: str, name: str, kind: str, **fields: Any) -> Published:
        event_id = f"{booth}-{name}"
        body = json.dumps({"kind": kind, "id": event_id, "device": f"{booth}-dev", **fields})
        record = Published(booth, name, event_id, time.time())
        await asyncio.to_thread(self.mqtt.publish,
                                f"boothwatch/{self.site}/booths/{booth}/events", body.encode())
        self.published.append(record)
        self.note(f"published {event_id}")
        self.point(f"pub:{booth}:{name}")
        return record

    def pages_of(self, booth: str) -> list[dict[str, Any]]:
        return [p for p in self.hook.pages if p["booth"] == booth]

    async def first_page(self, booth: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while not self.pages_of(booth):
            if time.monotonic() > deadline:
                raise ScriptStuck(f"{booth}: no page within {WAIT:g} s")
            await asyncio.sleep(0.01)
        return self.pages_of(booth)[0]

    async def booth_incident(self, booth: str) -> dict[str, Any] | None:
        """The booth's open incident as the service shows it (waits while it is down)."""
        url = f"http://127.0.0.1:{self.svc.http_port}/api/booths"
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self.http.get(url) as resp:
                    if resp.status == 200:
                        booths = {b["booth"]: b for b in await resp.json()}
                        incident: dict[str, Any] | None = booths[booth]["incident"]
                        return incident
            await asyncio.sleep(0.05)

    async def ack_mqtt(self, booth: str, responder: str) -> None:
        """Ack on the MQTT ack topic; re-ack if the incident named was lost in a crash."""
        incident = self.pages_of(booth)[-1]["incident"]
        record = self.acks[booth] = AckRecord(booth, responder, "mqtt", time.time())
        deadline = time.monotonic() + WAIT
        while True:
            record.last_at = time.time()
            record.incidents.append(incident)
            body = json.dumps({"incident": incident, "responder": responder}).encode()
            await asyncio.to_thread(self.mqtt.publish, f"boothwatch/{self.site}/ack", body)
            self.note(f"ack {booth} over MQTT as {responder} ({incident[-6:]})")
            self.point(f"ack:{booth}")
            while True:
                shown = await self.booth_incident(booth)
                if shown is not None and shown["state"] != "open":
                    return
                if shown is not None and shown["id"] != incident:
                    incident = shown["id"]  # the one we acked was never committed
                    self.result.reacks += 1
                    break
                if time.monotonic() > deadline:
                    raise ScriptStuck(f"{booth}: ack over MQTT not applied within {WAIT:g} s "
                                      f"(shown: {shown})")
                await asyncio.sleep(0.05)

    async def ack_link(self, booth: str, responder: str) -> None:
        """POST the signed ack link of the latest page to ``responder``; again until 200."""
        record = self.acks[booth] = AckRecord(booth, responder, "link", time.time())
        deadline = time.monotonic() + WAIT
        last_incident = None
        while True:
            page = [p for p in self.pages_of(booth) if p["responder"] == responder][-1]
            if last_incident is not None and page["incident"] != last_incident:
                self.result.reacks += 1
            last_incident = page["incident"]
            record.incidents.append(page["incident"])
            status: int | str
            try:
                async with self.http.post(page["ack_url"]) as resp:
                    status = resp.status
                    text = await resp.text()
                offered = _offer(text, f"Booth {booth[1:]}") if status == 404 else None
                if offered is not None:
                    # the link's incident was never recorded: take the page's offer of the
                    # booth's alarm raised again, as the nurse would
                    async with self.http.post(offered) as resp:
                        status = resp.status
                    if status == 200:
                        self.result.offers_taken += 1
                        self.note(f"ghost link {booth}: took the offered incident")
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = type(exc).__name__
            if status == 200:
                record.last_at = time.time()
                self.note(f"ack {booth} by link as {responder} ({page['incident'][-6:]})")
                self.point(f"ack:{booth}")
                return
            if time.monotonic() > deadline:
                raise ScriptStuck(f"{booth}: ack link never answered 200 (last: {status})")
            await asyncio.sleep(0.1)

    def paged_responders(self, booth: str) -> list[str]:
        return sorted({p["responder"] for p in self.pages_of(booth)})

    # --- the script -------------------------------------------------------------------

    async def script_b1(self) -> None:
        rng = random.Random(f"{self.seed}-b1")
        await asyncio.sleep(rng.uniform(0, 0.5))
        await self.pub("b1", "call", "button", press="call")
        await self.first_page("b1")
        await asyncio.sleep(rng.uniform(0.3, 4.0))  # before level 2, between, or after 3
        await self.ack_mqtt("b1", rng.choice(self.paged_responders("b1")))
        await asyncio.sleep(rng.uniform(0.2, 1.0))
        await self.pub("b1", "presence", "button", press="presence")
        await asyncio.sleep(rng.uniform(0.2, 0.8))
        await self.pub("b1", "clear", "button", press="clear")

    async def script_b2(self) -> None:
        rng = random.Random(f"{self.seed}-b2")
        await asyncio.sleep(rng.uniform(0, 0.5))
        await self.pub("b2", "occupied", "occupancy", occupied=True)
        await self.pub("b2", "still", "motion", state="still")
        await self.first_page("b2")
        await asyncio.sleep(rng.uniform(0.3, 4.0))
        await self.ack_link("b2", rng.choice(self.paged_responders("b2")))
        await asyncio.sleep(rng.uniform(0.2, 1.0))
        await self.pub("b2", "presence", "button", press="presence")
        await self.pub("b2", "moving", "motion", state="moving")
        await asyncio.sleep(rng.uniform(0.2, 0.8))
        await self.pub("b2", "clear", "button", press="clear")
        await self.pub("b2", "vacant", "occupancy", occupied=False)

    async def script_b3(self) -> None:
        rng = random.Random(f"{self.seed}-b3")
        await asyncio.sleep(rng.uniform(0, 0.5))
        await self.pub("b3", "occupied", "occupancy", occupied=True)
        await self.pub("b3", "moving", "motion", state="moving")
        await self.first_page("b3")
        await asyncio.sleep(rng.uniform(0.2, 3.0))
        await self.pub("b3", "vacant", "occupancy", occupied=False)

    async def script_b4(self) -> None:
        rng = random.Random(f"{self.seed}-b4")
        await asyncio.sleep(rng.uniform(0, 2.0))
        await self.pub("b4", "occupied", "occupancy", occupied=True)
        await self.pub("b4", "moving", "motion", state="moving")
        await asyncio.sleep(rng.uniform(0.3, 1.0))
        await self.pub("b4", "vacant", "occupancy", occupied=False)
        await asyncio.sleep(rng.uniform(0, 0.3))
        await self.pub("b4", "vacant", "occupancy", occupied=False)  # a device's retry, same id

    # --- running it -------------------------------------------------------------------

    async def run(self) -> TrialResult:
        started = time.monotonic()
        self.result.plan = make_plan(self.rng) if self._plan is None else self._plan
        self._pending = {p.point: p for p in self.result.plan}
        http_port = free_port()
        db = self.workdir / "boothwatch.db"
        async with KillingWebhook(self._on_page) as hook, aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=3)) as http:
            self.hook, self.http, self.db = hook, http, db
            config = trial_site(site=self.site, mqtt_port=self.broker[1], http_port=http_port,
                                webhook_url=hook.url, db=db, client_id=f"bw-{self.site}"
                                ).write(self.workdir / "boothwatch.toml")
            if self.src is None:
                self.svc = TrialService(config, http_port, self.workdir / "service.log")
            else:
                self.svc = TrialService(config, http_port, self.workdir / "service.log",
                                        cwd=self.src, env={"PYTHONPATH": str(self.src)})
            self.mqtt = Publisher(*self.broker, timeout=10)
            helpers: list[asyncio.Task[None]] = []
            try:
                self.svc.start()
                await self.svc.ready(WAIT_READY, every=0.02)
                self.t0 = time.time()
                self.note("ready")
                helpers = [asyncio.create_task(self._timed_kill(random.Random(f"{self.seed}-t")))]
                await self._play()
                # points the script never reached (a level never paged): kill now
                for name in list(self._pending):
                    await asyncio.sleep(0.1)
                    self.point(name)
                await asyncio.gather(*self._kill_tasks)
                await self.svc.ready(WAIT_READY, every=0.02)
                await self._settle()
                code = await self.svc.stop()
                self.note(f"stopped: exit {code}")
                if code != 0:
                    self.fail(f"SIGTERM: exit code {code}, expected 0")
                self.check(final=True)
            except Exception as exc:  # a stuck script, a service that never came back
                self.fail(f"{type(exc).__name__}: {exc}")
                for task in self._kill_tasks:
                    task.cancel()
                if self.svc.proc is not None and self.svc.proc.poll() is None:
                    self.svc.proc.kill()
                    self.svc.proc.wait(5)
            finally:
                for task in helpers:
                    task.cancel()
                self.mqtt.close()
        self.result.kills = self.svc.kills
        self.result.restart_seconds = [r.ready - r.spawn for r in self.svc.runs[1:]
                                       if r.ready is not None]
        self.result.duration = time.monotonic() - started
        return self.result

    async def _play(self) -> None:
        scripts = [self.script_b1(), self.script_b2(), self.script_b3(), self.script_b4()]
        results = await asyncio.gather(*scripts, return_exceptions=True)
        for outcome in results:
            if isinstance(outcome, BaseException):
                if isinstance(outcome, ScriptStuck):
                    self.fail(str(outcome))
                else:
                    raise outcome

    async def _settle(self, timeout: float = 10.0) -> None:
        """Wait until the store and the receiver show what the oracle expects (or time out:
        the final check then says what is missing)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.check(final=False):
                return
            await asyncio.sleep(0.2)

    # --- the oracle -------------------------------------------------------------------

    def _read_store(self) -> tuple[list[tuple[str, str | None, int]], list[dict[str, Any]]]:
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        try:
            events = con.execute("SELECT booth, event_id, count(*) FROM events "
                                 "GROUP BY booth, event_id").fetchall()
            incidents = [json.loads(v) for (v,) in con.execute("SELECT view FROM incidents")]
        finally:
            con.close()
        return events, incidents

    def check(self, final: bool) -> list[str]:
        """Every divergence from what the script implies; when ``final``, recorded."""
        problems: list[str] = []
        try:
            events, incidents = self._read_store()
        except sqlite3.Error as exc:
            return [f"store unreadable: {exc}"]
        figures = TrialResult(self.seed)
        self._check_events(events, problems, figures)
        by_booth = self._check_incidents(incidents, problems)
        for booth, inc in by_booth.items():
            self._check_stamps(booth, inc, problems)
            self._check_pages(booth, inc, problems, figures)
        stored_ids = {inc["id"] for inc in incidents}
        for page in self.hook.pages:
            if page["booth"] not in EXPECTED:
                problems.append(f"{page['booth']}: unexpected page {page}")
        if self.hook.bad_signatures:
            problems.append(f"webhook: {self.hook.bad_signatures} bad signature(s)")
        for run in self.svc.runs[1:]:
            # a restart that is slow to listen hears no acks meanwhile (the CI failure of
            # a publish racing paho's CONNECT: 15.8 s); typical is half a second
            if run.ready is not None and run.ready - run.spawn > LATE_LIMIT:
                problems.append(f"restart at t+{run.spawn - self.t0:.3f} ready only after "
                                f"{run.ready - run.spawn:.1f} s")
        ghosts = sorted({(p["booth"], p["incident"]) for p in self.hook.pages
                         if p["incident"] not in stored_ids})
        if final:
            # only at the end: a ghost never goes away, so settling must not wait for it
            problems += [f"{booth}: paged about incident {iid}, which the store never had "
                         "(a ghost: raised again under another id)" for booth, iid in ghosts]
            self.result.failures += problems
            r = self.result
            r.events, r.incidents = figures.events, len(incidents)
            r.pages_expected, r.pages_received = figures.pages_expected, len(self.hook.pages)
            r.duplicates = figures.duplicates
            r.late_from_spawn, r.late_from_ready = figures.late_from_spawn, figures.late_from_ready
            r.ghost_incidents = len(ghosts)
        return problems

    def _check_events(self, rows: Sequence[tuple[str, str | None, int]], problems: list[str],
                      figures: TrialResult) -> None:
        stored = {(booth, eid): n for booth, eid, n in rows}
        published = {(p.booth, p.event_id) for p in self.published}
        figures.events = len(published)
        for key in sorted(published):
            n = stored.get(key, 0)
            if n != 1:
                problems.append(f"event {key[1]}: stored {n} times, expected once")
        for extra in sorted(set(stored) - published, key=str):
            problems.append(f"event {extra}: stored but never published")

    def _check_incidents(self, incidents: list[dict[str, Any]],
                         problems: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for inc in incidents:
            booth = inc["booth"]
            expected = EXPECTED.get(booth)
            if expected is None or booth in found:
                raised = inc["raised_at"] - self.t0
                problems.append(f"{booth}: unexpected incident {inc['id']} "
                                f"triggers {inc['triggers']} raised t+{raised:.3f}")
                continue
            found[booth] = inc
            if (inc["triggers"][0], inc["priority"]) != expected:
                problems.append(f"{booth}: incident triggers {inc['triggers']} priority "
                                f"{inc['priority']}, expected {expected}")
            if inc["state"] != "resolved":
                problems.append(f"{booth}: incident {inc['id']} is {inc['state']}, "
                                "expected resolved")
        for booth in EXPECTED:
            if booth not in found:
                problems.append(f"{booth}: no incident stored (expected {EXPECTED[booth]})")
        return found

    def _at(self, booth: str, name: str) -> float:
        """When the script published ``name`` at ``booth`` (a stuck script: never)."""
        return next((p.at for p in self.published if p.booth == booth and p.name == name),
                    math.nan)

    def _check_stamps(self, booth: str, inc: dict[str, Any], problems: list[str]) -> None:
        settled = self.svc.settled
        windows: dict[str, tuple[float, float] | None] = {}
        if booth == "b1":
            call = self._at(booth, "call")
            windows["raised_at"] = (call, settled(call))
        elif booth == "b2":
            still = self._at(booth, "still")
            windows["raised_at"] = (still + STILLNESS, settled(settled(still) + STILLNESS))
        else:
            occupied = self._at(booth, "occupied")
            windows["raised_at"] = (occupied + LONG_SESSION,
                                    settled(settled(occupied) + LONG_SESSION))
        ack = self.acks.get(booth)
        if booth == "b3":
            windows["acknowledged_at"] = windows["presence_at"] = None
            vacant = self._at(booth, "vacant")
            windows["resolved_at"] = (vacant, settled(vacant))
        elif ack is not None:
            # a 200 from the link means stored; an MQTT ack is applied when delivered
            last = ack.last_at if ack.via == "link" else settled(ack.last_at)
            windows["acknowledged_at"] = (ack.first_at, last)
            presence = self._at(booth, "presence")
            windows["presence_at"] = (presence, settled(presence))
            clear = self._at(booth, "clear")
            windows["resolved_at"] = (clear, settled(clear))
        if any(w is not None and math.isnan(w[0]) for w in windows.values()):
            return  # the script stopped early: that failure is already recorded
        for name, window in windows.items():
            value = inc[name]
            if window is None:
                if value is not None:
                    problems.append(f"{booth}: {name} is t+{value - self.t0:.3f}, expected none")
                continue
            lo, hi = window
            if value is None:
                problems.append(f"{booth}: {name} missing (expected t+{lo - self.t0:.3f}.."
                                f"t+{hi - self.t0:.3f})")
            elif not lo - 0.05 <= value <= hi:
                problems.append(f"{booth}: {name} t+{value - self.t0:.3f} outside "
                                f"t+{lo - self.t0:.3f}..t+{hi - self.t0:.3f}")
        stamps = [inc[n] for n in ("raised_at", "acknowledged_at", "presence_at", "resolved_at")
                  if inc[n] is not None]
        if stamps != sorted(stamps):
            problems.append(f"{booth}: stamps out of order: {stamps}")
        ack = self.acks.get(booth)
        if ack is not None and inc["acknowledged_by"] != ack.responder:
            problems.append(f"{booth}: acknowledged_by {inc['acknowledged_by']}, "
                            f"expected {ack.responder}")
        if booth == "b3" and inc["outcome"] != "session_ended":
            problems.append(f"b3: outcome {inc['outcome']}, expected session_ended")

    def _check_pages(self, booth: str, inc: dict[str, Any], problems: list[str],
                     figures: TrialResult) -> None:
        """Every (responder, level) due before the first of ack/presence/resolve was received
        (a higher level stands in for a step that fell due in a downtime: folded); none that
        was not due; a page twice only across a crash."""
        steps = POLICIES[inc["priority"]]
        stops = [inc[n] for n in ("acknowledged_at", "presence_at", "resolved_at")
                 if inc[n] is not None]
        stop = min(stops) if stops else time.time()
        received: dict[tuple[str, int], list[float]] = {}
        for page, at in zip(self.hook.pages, self.hook.received_at, strict=True):
            if page["booth"] == booth:
                received.setdefault((page["responder"], page["level"]), []).append(at)
        # allowed: levels due by the stop, to anyone named at or below them (folding)
        allowed: set[tuple[str, int]] = set()
        named: set[str] = set()
        for level, (after, responders) in enumerate(steps, start=1):
            if inc["raised_at"] + after < stop + EDGE:
                named.update(responders)
                allowed.update((r, level) for r in named)
        for level, (after, responders) in enumerate(steps, start=1):
            due = inc["raised_at"] + after
            if due >= stop - EDGE:
                continue
            for responder in responders:
                figures.pages_expected += 1
                times = received.get((responder, level), [])
                if not times and self.svc.disturbed(due):
                    times = sorted(t for (r, lv), ts in received.items() for t in ts
                                   if r == responder and lv > level)
                if not times:
                    problems.append(f"{booth}: page L{level} to {responder} due "
                                    f"t+{due - self.t0:.3f} never received")
                    continue
                restarted = self.svc.dead_at(due)
                if restarted is not None:
                    first = min((t for t in times if t >= due - EDGE), default=times[0])
                    spawn = self.svc.last_spawn(first)
                    figures.late_from_spawn.append(first - spawn)
                    ready = next((r.ready for r in self.svc.runs
                                  if r.spawn == spawn and r.ready is not None), None)
                    if ready is not None:
                        figures.late_from_ready.append(first - ready)
                    if first - spawn > LATE_LIMIT:
                        problems.append(f"{booth}: page L{level} to {responder} due while dead "
                                        f"came {first - spawn:.2f} s after the restart")
        for key, times in sorted(received.items()):
            if key not in allowed:
                problems.append(f"{booth}: page L{key[1]} to {key[0]} was not due "
                                f"(received t+{times[0] - self.t0:.3f})")
            times.sort()
            for before, after in itertools.pairwise(times):
                figures.duplicates += 1
                crashed = any(r.killed is not None and before - SETTLE <= r.killed <= after
                              for r in self.svc.runs)
                if not crashed:
                    problems.append(f"{booth}: page L{key[1]} to {key[0]} twice with no crash "
                                    f"between (t+{before - self.t0:.3f}, "
                                    f"t+{after - self.t0:.3f})")


class KillingWebhook(Webhook):
    """The test receiver, telling the trial of each page before it answers, so a kill can
    land between the page's delivery and the service learning that it was delivered."""

    def __init__(self, on_page: Callable[[dict[str, Any]], None]) -> None:
        super().__init__()
        self.on_page = on_page

    async def _handle(self, request: web.Request) -> web.Response:
        count = len(self.pages)
        response = await super()._handle(request)
        if len(self.pages) > count:
            self.on_page(self.pages[-1])
        return response


class ScriptStuck(Exception):
    """A script step waited too long for the service (a lost page or ack)."""


async def run_trials(seeds: Sequence[int], broker: tuple[str, int], workdir: Path,
                     on_result: Callable[[TrialResult], Awaitable[None] | None] | None = None,
                     stop_on_failure: bool = False, src: Path | None = None
                     ) -> list[TrialResult]:
    """Run trials one after another; each gets its own directory under ``workdir``."""
    results = []
    for seed in seeds:
        trial_dir = workdir / f"trial-{seed}"
        trial_dir.mkdir(parents=True, exist_ok=True)
        result = await Trial(seed, broker, trial_dir, src).run()
        results.append(result)
        if on_result is not None:
            maybe = on_result(result)
            if maybe is not None:
                await maybe
        if stop_on_failure and result.failures:
            break
    return results
