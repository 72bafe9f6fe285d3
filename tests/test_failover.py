"""A pair of real `boothwatch run` processes on one PostgreSQL store (issue 13, interface
section 10): one owns the site, the other stands by; a dead, frozen or cut-off owner is
replaced within seconds, and nothing is lost, duplicated or sent by a process that no
longer owns the site.

Real parts throughout: Mosquitto and a PostgreSQL cluster of the tests' own on free
ports, the service as child processes (SIGKILL, SIGSTOP), the pages received over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
import tomli_w

from monitor.lease import LeaseLost, SiteLease
from monitor.store import Store
from monitor.store_postgres import conninfo
from tests.harness.broker import Mosquitto, Publish, free_port
from tests.harness.caddy import Caddy, require_caddy
from tests.harness.postgres import PASSWORD, Postgres, StoreAt
from tests.harness.process import ROOT, ServiceProcess
from tests.harness.receivers import Webhook
from tests.harness.service import event, events_topic, eventually
from tests.harness.site import Site, escalation, responder, webhook

pytestmark = pytest.mark.integration

ENV = {"BOOTHWATCH_DB_PASSWORD": PASSWORD, "BOOTHWATCH_SECRET": "s" * 64}


def pair_site(mosquitto: Mosquitto, hook: Webhook, url: str, *, step2: str = "4s") -> Site:
    """The test site on PostgreSQL: Ana then, at `step2`, Ana and Rui paged by webhook;
    nothing repeats, so each step is one page per responder."""
    return Site(mqtt_port=mosquitto.port, store_url=url, client_id="boothwatch-pair",
                channels={"hook": webhook(hook.url)},
                responders=[responder("ana", ["nurse"], ["hook"]),
                            responder("rui", ["coordinator"], ["hook"])],
                escalation=escalation(step2=step2, repeat="1h", ack_timeout="1h"),
                store=Path("unused.db"))


def process(site: Site, workdir: Path, name: str, *, lease: float | None = None
            ) -> ServiceProcess:
    """One box of the pair: the same site, its own HTTP port and log; ``lease``, the
    ttl of ``[store] lease`` in seconds (default 3)."""
    site.http_port = free_port()
    box = workdir / name
    box.mkdir()
    document = site.document()
    if lease is not None:
        document["store"]["lease"] = f"{lease:g}s"
    config = box / "boothwatch.toml"
    config.write_text(tomli_w.dumps(document), encoding="utf-8")
    return ServiceProcess(config, site.http_port, box / "service.log", env=ENV)


async def readyz(proc: ServiceProcess) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http, \
            http.get(f"{proc.base}/readyz") as resp:
        return resp.status, await resp.json()


async def get(proc: ServiceProcess, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http, \
            http.get(f"{proc.base}{path}") as resp:
        return resp.status, await resp.text()


async def standing_by(proc: ServiceProcess, timeout: float = 15.0) -> dict[str, Any]:
    """Wait for `proc` to answer as a standby; its /readyz body."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.running, proc.log.read_text()[-2000:]
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            status, body = await readyz(proc)
            if status == 503 and "standby" in body["reasons"] and body["owner"]:
                return body
        assert time.monotonic() < deadline, "no standby answer"
        await asyncio.sleep(0.05)


def mosquitto_log(mosquitto: Mosquitto) -> list[str]:
    return mosquitto.log_text().splitlines()


def log_lines(proc: ServiceProcess) -> list[dict[str, Any]]:
    lines = []
    for line in proc.log.read_text().splitlines():
        with contextlib.suppress(ValueError):
            lines.append(json.loads(line))
    return lines


@contextlib.asynccontextmanager
async def processes(*procs: ServiceProcess) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            if proc.proc is not None and proc.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.proc.send_signal(signal.SIGCONT)
                proc.proc.kill()
                proc.proc.wait(5)


@contextlib.asynccontextmanager
async def pair(site: Site, workdir: Path
               ) -> AsyncIterator[tuple[ServiceProcess, ServiceProcess]]:
    """Box a owning the site, box b standing by for it; both killed at the end."""
    a, b = process(site, workdir, "a"), process(site, workdir, "b")
    async with processes(a, b):
        a.start()
        await a.ready()
        b.start()
        await standing_by(b)
        yield a, b


def page_keys(hook: Webhook) -> Counter[tuple[str, int, str]]:
    return Counter((p["incident"], p["level"], p["responder"]) for p in hook.pages)


async def test_the_standby_takes_over_a_killed_owner_mid_escalation(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish, hook: Webhook,
    postgres_url: str
) -> None:
    """SIGKILL of the owner after the first page of a call: the standby owns the site
    within 5 s, the second step pages on its original schedule (or at once if it fell
    due during the switch), a call pressed during the switch is paged, and no page or
    incident is lost or duplicated."""
    site = pair_site(mosquitto, hook, postgres_url, step2="4s")
    a, b = process(site, tmp_path, "a"), process(site, tmp_path, "b")
    async with processes(a, b):
        a.start()
        await a.ready()
        at = StoreAt("postgresql", postgres_url, PASSWORD)
        # a session open when the standby starts, ended by the old owner before the switch
        mqtt_publish(events_topic("b1"), event("occupancy", occupied=True, id="occ-1"))
        await eventually(lambda: at.query("SELECT count(*) FROM sessions") == [(1,)])
        b.start()
        body = await standing_by(b)
        mqtt_publish(events_topic("b1"), event("occupancy", occupied=False, id="occ-2"))
        await eventually(lambda: at.query(
            "SELECT count(*) FROM sessions WHERE ended_at IS NOT NULL") == [(1,)])
        (ended,) = at.query("SELECT started_at, ended_at FROM sessions")
        assert body["site"] == site.id and body["owner"] is not None
        assert (await get(b, "/healthz"))[0] == 200
        # its own connection to the broker, kept open while it stands by
        await eventually(lambda: any(
            "boothwatch-pair-standby-" in line for line in mosquitto_log(mosquitto)))
        assert body["reasons"] == ["standby"]
        status, text = await get(b, "/metrics")
        assert status == 200 and f'boothwatch_site_owner{{site="{site.id}"}} 0.0' in text
        status, text = await get(a, "/metrics")
        assert f'boothwatch_site_owner{{site="{site.id}"}} 1.0' in text
        assert f'boothwatch_lease_epoch{{site="{site.id}"}} 1.0' in text
        assert (await get(b, "/api/booths"))[0] == 503  # nothing watched here

        raised = time.time()
        mqtt_publish(events_topic("b1"), event("button", press="call", id="press-1"))
        (first,) = await hook.wait(1)
        incident = first["incident"]
        await asyncio.sleep(0.5)  # the page is recorded as sent
        a.kill()
        killed = time.time()
        # pressed while nobody owns the site: the broker keeps it for the site's session
        mqtt_publish(events_topic("b2"), event("button", press="call", id="press-2"))
        await b.ready(timeout=10)
        took = time.time() - killed
        assert took < 5, f"the standby took {took:.1f} s"

        await hook.wait(4, timeout=10)  # b1 level 2 (ana, rui), b2 level 1 (ana)
        await asyncio.sleep(1)
        keys = page_keys(hook)
        assert keys[(incident, 2, "ana")] == 1 and keys[(incident, 2, "rui")] == 1, keys
        assert keys[(incident, 1, "ana")] == 1, keys  # not sent again by the new owner
        arrived = {(p["incident"], p["level"], p["responder"]): t
                   for p, t in zip(hook.pages, hook.received_at, strict=True)}
        second = arrived[(incident, 2, "ana")]
        # on schedule: not before its time, and at once when it fell due during the switch
        assert second >= raised + 4 - 0.2
        assert second <= max(raised + 4, killed + took) + 1.5
        b2 = [p for p in hook.pages if p["booth"] == "b2"]
        assert [(p["level"], p["responder"]) for p in b2] == [(1, "ana")]
        assert max(keys.values()) == 1, keys
        status, text = await get(b, "/metrics")
        assert f'boothwatch_lease_epoch{{site="{site.id}"}} 2.0' in text
        # a new session under the new owner leaves the one the old owner ended as it was
        mqtt_publish(events_topic("b1"), event("occupancy", occupied=True, id="occ-3"))
        await eventually(lambda: at.query("SELECT count(*) FROM sessions") == [(2,)])
        await asyncio.sleep(0.3)
        assert at.query("SELECT started_at, ended_at FROM sessions ORDER BY started_at"
                        )[0] == ended


async def test_a_frozen_owner_that_wakes_up_sends_nothing_and_stands_down(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish, hook: Webhook,
    postgres_url: str
) -> None:
    """SIGSTOP of the owner for 10 s, then SIGCONT: the standby takes over and pages the
    step that fell due; the old owner, awake with every timer overdue, sends no page (each
    page the receiver got is counted: none twice) and exits 75 for systemd to restart it
    as a standby."""
    site = pair_site(mosquitto, hook, postgres_url, step2="3s")
    async with pair(site, tmp_path) as (a, b):
        mqtt_publish(events_topic("b1"), event("button", press="call", id="press-1"))
        (first,) = await hook.wait(1)
        incident = first["incident"]
        await asyncio.sleep(0.3)
        assert a.proc is not None
        a.proc.send_signal(signal.SIGSTOP)
        stopped = time.time()
        await b.ready(timeout=10)
        await hook.wait(3, timeout=10)  # level 2 from the new owner
        await asyncio.sleep(max(0.0, stopped + 10 - time.time()))
        a.proc.send_signal(signal.SIGCONT)
        woke = time.time()
        status = await asyncio.to_thread(a.proc.wait, 10)
        assert status == 75, a.log.read_text()[-3000:]
        await asyncio.sleep(1)  # anything the old owner had queued would have arrived
        keys = page_keys(hook)
        assert keys == {(incident, 1, "ana"): 1, (incident, 2, "ana"): 1,
                        (incident, 2, "rui"): 1}, keys
        late = [line for line in log_lines(a)
                if line.get("event") == "page delivered"
                and _when(line) >= woke - 0.5]
        assert late == []
        assert any(line.get("event") == "lease_lost" for line in log_lines(a))
        # and the new owner still owns it, its state not overwritten
        assert (await readyz(b))[0] == 200


def _when(line: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()


async def test_a_postgresql_restart_keeps_the_owner_paging(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish, hook: Webhook,
    postgres: Postgres, postgres_url: str
) -> None:
    """PostgreSQL restarted under the pair: the owner keeps paging from memory while the
    store is away, both reconnect, the owner keeps the site and catches the store up."""
    site = pair_site(mosquitto, hook, postgres_url, step2="1h")
    at = StoreAt("postgresql", postgres_url, PASSWORD)
    async with pair(site, tmp_path) as (a, b):
        await asyncio.to_thread(postgres.stop)
        try:
            mqtt_publish(events_topic("b1"), event("button", press="call", id="press-1"))
            (page,) = await hook.wait(1, timeout=10)  # paged with the store away
        finally:
            await asyncio.to_thread(postgres.start)
        await eventually(lambda: at.query(
            "SELECT count(*) FROM incidents WHERE id = ?", (page["incident"],)) == [(1,)],
            timeout=20)
        await eventually(lambda: at.query(
            "SELECT count(*) FROM events WHERE event_id = 'press-1'") == [(1,)], timeout=20)
        assert (await readyz(a))[0] == 200
        assert "standby" in (await readyz(b))[1]["reasons"]
        assert a.running and b.running
        assert len(hook.pages) == 1


async def test_a_new_owner_renews_its_lease_while_it_restores(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish, hook: Webhook,
    postgres_url: str
) -> None:
    """A restore that takes longer than the lease's ttl (a day's event ids to load, a busy
    server: here the events table is locked for 3 ttl) must not cost the new owner the
    site: it renews from the moment it takes the lease, so the other standby keeps
    standing by instead of taking the site and restoring in turn (each owner standing
    down in the middle of its restore, exit 75, and nobody paging meanwhile)."""
    ttl = 1.0
    site = pair_site(mosquitto, hook, postgres_url, step2="2s")
    a, b, c = (process(site, tmp_path, name, lease=ttl) for name in "abc")
    at = StoreAt("postgresql", postgres_url, PASSWORD)
    async with processes(a, b, c):
        a.start()
        await a.ready()
        b.start()
        c.start()
        await standing_by(b)
        await standing_by(c)
        mqtt_publish(events_topic("b1"), event("button", press="call", id="press-1"))
        (first,) = await hook.wait(1)
        await asyncio.sleep(0.5)  # the page is recorded as sent
        async with await psycopg.AsyncConnection.connect(postgres_url,
                                                         password=PASSWORD) as slow:
            # every read of the restore waits (less than the store's lock_timeout, 5 s)
            await slow.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            a.kill()
            await eventually(lambda: at.query("SELECT epoch FROM lease") == [(2,)],
                             timeout=10)
            await asyncio.sleep(3 * ttl)  # the restore is still waiting
            ((holder, epoch),) = at.query("SELECT holder, epoch FROM lease")
            await slow.rollback()
        assert epoch == 2, "the site changed hands while its new owner restored"
        pid = int(holder.split(":")[1])  # holder_name(): host, pid, random
        owner, standby = (b, c) if b.proc is not None and b.proc.pid == pid else (c, b)
        await owner.ready(timeout=10)
        await hook.wait(3, timeout=10)  # level 2, from the new owner
        await asyncio.sleep(2 * ttl)  # a lost lease would show by now
        assert b.running and c.running
        assert (await standing_by(standby))["epoch"] == 2
        assert not any(line.get("event") == "lease_lost"
                       for proc in (b, c) for line in log_lines(proc))
        keys = page_keys(hook)
        incident = first["incident"]
        assert keys == {(incident, 1, "ana"): 1, (incident, 2, "ana"): 1,
                        (incident, 2, "rui"): 1}, keys


async def test_writes_of_a_process_that_lost_the_lease_are_refused(
    postgres_url: str
) -> None:
    """Fencing in the database: once another process has taken the lease (the first one's
    expired while it was frozen), a commit by the first fails with LeaseLost and nothing
    of it is written."""
    store = await Store.open(postgres_url, password=PASSWORD)
    info = conninfo(postgres_url, PASSWORD)
    first = SiteLease(info, "lisbon-1", ttl=1.0, holder="first")
    second = SiteLease(info, "lisbon-1", ttl=1.0, holder="second")
    try:
        assert await first.acquire() == 1
        store.fence("lisbon-1", "first", 1)
        writer = asyncio.create_task(store.run_writer())
        await store.remember("k", "one")
        assert await asyncio.wait_for(second.acquire(every=0.1), 5) == 2
        assert not first.permit()  # its own count ran out first
        store.remember("k", "two")
        with pytest.raises(LeaseLost):
            await asyncio.wait_for(writer, 5)
        rows = await store._fetch("SELECT value FROM meta WHERE key = 'k'")
        assert rows == [("one",)]
        await first.renew()
        assert first.standing.lost and not await first.settle()
    finally:
        await first.close()
        await second.close()
        await store.close()


async def test_three_processes_share_twelve_sites_and_take_over_a_dead_ones(
    tmp_path: Path, mosquitto: Mosquitto, postgres: Postgres
) -> None:
    """`boothwatch run --config DIR` with twelve sites, in three processes: each owns
    four; one killed, its sites are owned by the other two within 5 s, and every site
    has exactly one owner throughout what the test reads."""
    sites = [f"s{i:02}" for i in range(1, 13)]
    urls = {s: postgres.database() for s in sites}
    boxes = []
    for name in ("a", "b", "c"):
        directory = tmp_path / name / "sites"
        directory.mkdir(parents=True)
        ports = {}
        for s in sites:
            ports[s] = free_port()
            site = Site(id=s, mqtt_port=mosquitto.port, store_url=urls[s],
                        client_id=f"boothwatch-{s}", http_port=ports[s],
                        booths=[{"id": "b1", "name": "Booth 1"}],
                        store=Path("unused.db"))
            site.document()
            text = site.text().replace("[store]\n", '[store]\nlease = "1s"\n', 1)
            (directory / f"{s}.toml").write_text(text)
        proc = ServiceProcess(directory, 0, tmp_path / name / "service.log", env=ENV)
        boxes.append((proc, ports))

    async def owners() -> dict[str, list[str]]:
        """site -> the boxes whose /readyz for it is 200."""
        found: dict[str, list[str]] = {s: [] for s in sites}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            for (proc, ports), name in zip(boxes, "abc", strict=True):
                if not proc.running:
                    continue
                for s in sites:
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        async with http.get(f"http://127.0.0.1:{ports[s]}/readyz") as resp:
                            if resp.status == 200:
                                found[s].append(name)
        return found

    def holders() -> dict[str, str]:
        out = {}
        for s in sites:
            with psycopg_connect(postgres, urls[s]) as conn:
                row = conn.execute("SELECT holder FROM lease WHERE expires_at > now()"
                                   ).fetchone()
                out[s] = row[0] if row else ""
        return out

    async with processes(*(p for p, _ in boxes)):
        for proc, _ in boxes:
            proc.start()
        deadline = time.monotonic() + 60

        async def balanced() -> dict[str, list[str]] | None:
            found = await owners()
            counts = Counter(owner for names in found.values() for owner in names)
            if all(len(names) == 1 for names in found.values()) and \
                    sorted(counts.values()) == [4, 4, 4]:
                return found
            return None

        while (found := await balanced()) is None:
            for proc, _ in boxes:
                assert proc.running, proc.log.read_text()[-3000:]
            assert time.monotonic() < deadline, await owners()
            await asyncio.sleep(0.5)
        assert len(set(holders().values())) == 3
        # one log for twelve sites: each line of a site's runtime says which
        connected = [line for line in log_lines(boxes[1][0]) if line.get("event") in (
            "mqtt_connected", "incident_raised", "http_listening")]
        assert connected and all(line.get("site") in sites for line in connected), connected
        victim = boxes[0][0]
        theirs = [s for s, names in found.items() if names == ["a"]]
        victim.kill()
        killed = time.monotonic()
        while True:
            found = await owners()
            if all(len(names) == 1 for names in found.values()):
                break
            assert time.monotonic() - killed < 5, found
            await asyncio.sleep(0.1)
        assert all(found[s][0] in ("b", "c") for s in theirs)
        # then the two share them evenly, each site with one owner at every look (a site
        # handed over has none for a moment: the giver stops before the taker starts)
        deadline = time.monotonic() + 30
        while True:
            found = await owners()
            assert all(len(names) <= 1 for names in found.values()), found
            counts = Counter(names[0] for names in found.values() if names)
            if sorted(counts.values()) == [6, 6]:
                break
            assert time.monotonic() < deadline, counts
            await asyncio.sleep(0.2)


def psycopg_connect(postgres: Postgres, url: str) -> Any:
    import psycopg

    return psycopg.connect(url, password=PASSWORD, autocommit=True)


async def test_the_shipped_pair_caddyfile_follows_the_owner(
    tmp_path: Path, mosquitto: Mosquitto, hook: Webhook, postgres_url: str
) -> None:
    """deploy/pair/Caddyfile as shipped, in front of a pair: requests reach the owner
    (the standby is never chosen), and after the owner is killed, the new one."""
    site = pair_site(mosquitto, hook, postgres_url)
    async with pair(site, tmp_path) as (a, b):
        async with Caddy(tmp_path / "caddy", require_caddy(), "unused",
                         caddyfile=ROOT / "deploy" / "pair" / "Caddyfile",
                         env={"BOOTHWATCH_A": f"127.0.0.1:{a.http_port}",
                              "BOOTHWATCH_B": f"127.0.0.1:{b.http_port}"}) as caddy:

            async def through() -> tuple[int, Any]:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) \
                        as http, http.get(f"{caddy.url}/api/booths",
                                          ssl=caddy.ssl_context()) as resp:
                    return resp.status, await resp.json()

            async def owner_answers() -> bool:
                status, body = await through()
                return status == 200 and [x["booth"] for x in body] == ["b1", "b2"]

            await eventually(owner_answers, timeout=10)
            for _ in range(10):  # never the standby
                assert await owner_answers()
            a.kill()
            killed = time.monotonic()
            await eventually(owner_answers, timeout=15, every=0.2)
            assert time.monotonic() - killed < 10
