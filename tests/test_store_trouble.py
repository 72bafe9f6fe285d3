"""Store trouble (issue 6): the SQLite file locked by another process, and a full disk;
and a slow store (commits wait for the lock, none fails), which pauses reading MQTT.

The whole service runs against a real Mosquitto, a real webhook server and a real
SQLite file. The lock is another process holding ``BEGIN EXCLUSIVE``; the full disk
is a small tmpfs filled to the last byte (root only). While the store is in
trouble the service must page from memory, say so (log, metrics, /readyz), hold
every MQTT message unacknowledged, and catch the store up once it recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from monitor import ingest
from monitor.store import Store
from tests.harness.broker import Mosquitto, Publish
from tests.harness.service import Service, event, events_topic, eventually, start_service
from tests.harness.site import Site

pytestmark = pytest.mark.integration

# another process takes the write lock, says so, and holds it until told to let go
LOCKER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
"""


@contextlib.asynccontextmanager
async def locked(db: Path) -> AsyncIterator[None]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LOCKER, str(db), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"locked\n"
        yield
    finally:
        proc.stdin.write(b"release\n")
        await proc.stdin.drain()
        await asyncio.wait_for(proc.wait(), 10)


def rows(db: Path, sql: str) -> list[Any]:
    """Read the store from a connection of our own (WAL lets it read during a lock)."""
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        return conn.execute(sql).fetchall()


async def readyz(svc: Service) -> tuple[int, dict[str, Any]]:
    async with svc.http.get(f"{svc.base}/readyz") as resp:
        return resp.status, await resp.json()


async def metric_is(svc: Service, line_start: str, value: float) -> bool:
    return await svc.metric(line_start) == value


async def not_ready_for_the_store(svc: Service) -> list[str] | None:
    status, body = await readyz(svc)
    if status != 503:
        return None
    store = [r for r in body["reasons"] if r.startswith("store not writable")]
    return store or None


async def trouble_then_recovery(svc: Service, db: Path, trouble: Any,
                                error: str) -> None:
    """Under `trouble` (an async context manager), a call is paged, a burst is held
    unacknowledged; after it, everything is in SQLite and the service is ready again."""
    before_events = rows(db, "SELECT count(*) FROM events")[0][0]
    with capture_logs() as logs:
        async with trouble:
            svc.publish(events_topic("b1"), event("button", press="call", id="call-1"))
            page = (await svc.hook.wait(1, 5))[0]
            assert (page["booth"], page["responder"], page["level"]) == ("b1", "ana", 1)
            for n in range(40):
                svc.publish(events_topic("b2"), event("heartbeat", battery=90, id=f"hb-{n}"))
            reasons = await eventually(lambda: not_ready_for_the_store(svc), 15)
            assert error in reasons[0] and "rows held in memory" in reasons[0]
            assert await svc.metric("boothwatch_store_writable ") == 0.0
            assert await svc.metric("boothwatch_store_commit_failures_total ") >= 1
            await eventually(lambda: svc.runtime.store.pending() >= 41)
            # nothing of the trouble period was acknowledged to the broker
            assert await svc.metric("boothwatch_mqtt_unacked_messages ") == 41.0
            assert list(svc.runtime.core.incidents) == [page["incident"]]
            assert rows(db, "SELECT count(*) FROM incidents") == [(0,)]
            assert rows(db, "SELECT count(*) FROM events")[0][0] == before_events
            # the API answers from what is stored, and Ana's ack is applied at once
            async with asyncio.timeout(10):
                assert await svc.incidents("open") == []
                status, body = await svc.post(f"/api/incidents/{page['incident']}/ack",
                                              {"responder": "ana"})
            assert (status, body["state"]) == (200, "acknowledged")
        await eventually(lambda: metric_is(svc, "boothwatch_store_writable ", 1.0), 20)
    assert [e["event"] for e in logs if e["event"].startswith("store_")] [:1] == [
        "store_commit_failed"]
    assert any(e["event"] == "store_recovered" for e in logs)
    status, _ = await readyz(svc)
    assert status == 200
    await eventually(lambda: metric_is(svc, "boothwatch_mqtt_unacked_messages ", 0.0))
    ids = {r[0] for r in rows(db, "SELECT event_id FROM events")}
    assert {"call-1", *(f"hb-{n}" for n in range(40))} <= ids
    assert rows(db, "SELECT id, state FROM incidents") == [(page["incident"], "acknowledged")]
    kinds = {r[0] for r in rows(db, "SELECT kind FROM timeline")}
    assert {"trigger", "state", "page_sent", "ack"} <= kinds
    assert rows(db, "SELECT responder, status FROM pages WHERE level = 1") == [("ana", "sent")]
    assert rows(db, "SELECT ok FROM page_attempts") [:1] == [(1,)]


async def no_redelivery(tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish,
                        edit: Callable[[Site], object] | None = None) -> None:
    """A fresh start on the same session: the broker redelivers nothing, so every message
    of the trouble period was acknowledged (after it was stored)."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h", edit=edit) as svc:
        svc.publish(events_topic("b2"), event("heartbeat", battery=80, id="marker"))
        await eventually(lambda: svc.metric(
            'boothwatch_events_total{kind="heartbeat",result="accepted"}'))
        # a redelivered message would arrive before the marker and count as a duplicate
        assert await svc.metric('boothwatch_events_total{kind="heartbeat",result="duplicate"}'
                                ) == 0.0
        assert await svc.metric('boothwatch_events_total{kind="button",result="duplicate"}'
                                ) == 0.0


async def test_locked_database_pages_from_memory_and_catches_up(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Another process holds BEGIN EXCLUSIVE for several seconds: a call is paged anyway,
    /readyz names the store, nothing is acknowledged; after the lock, all is stored."""
    db = tmp_path / "boothwatch.db"
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h") as svc:
        await trouble_then_recovery(svc, db, locked(db), "database is locked")
    await no_redelivery(tmp_path, mosquitto, mqtt_publish)


async def test_an_ack_link_works_while_the_store_is_locked(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """The nurse's tap acknowledges even though its single use cannot be stored; a replay
    is still refused (from memory)."""
    db = tmp_path / "boothwatch.db"
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h") as svc:
        async with locked(db):
            svc.publish(events_topic("b1"), event("button", press="call"))
            page = (await svc.hook.wait(1, 10))[0]
            await eventually(lambda: metric_is(svc, "boothwatch_store_writable ", 0.0), 10)
            async with svc.http.post(page["ack_url"]) as resp:
                assert resp.status == 200, await resp.text()
            [incident] = svc.runtime.core.incidents.values()
            assert incident.state.value == "acknowledged"
            async with svc.http.post(page["ack_url"]) as resp:
                assert resp.status == 403
            assert incident.state.value == "acknowledged"


async def test_stopped_while_locked_loses_nothing(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """The service stops during the lock (its last commit fails too): the broker still
    holds every event, and the next start stores them all."""
    db = tmp_path / "boothwatch.db"
    async with contextlib.AsyncExitStack() as lock:
        async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h") as svc:
            await lock.enter_async_context(locked(db))
            for n in range(20):
                svc.publish(events_topic("b2"), event("heartbeat", battery=90, id=f"hb-{n}"))
            await eventually(lambda: metric_is(svc, "boothwatch_mqtt_unacked_messages ", 20.0),
                             10)
        # stopped, and the lock is still held: the last commit failed too
        assert rows(db, "SELECT count(*) FROM events") == [(0,)]
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h"):
        await eventually(lambda: rows(db, "SELECT count(*) FROM events") == [(20,)], 10)


async def test_a_broker_restart_during_the_lock_acknowledges_nothing_early(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """The broker restarts during the lock and redelivers what we hold: the redelivered
    copies are duplicates, yet acknowledged only once the first copies are stored."""
    db = tmp_path / "boothwatch.db"
    async with contextlib.AsyncExitStack() as lock:
        async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h") as svc:
            await lock.enter_async_context(locked(db))
            for n in range(10):
                svc.publish(events_topic("b2"), event("heartbeat", battery=90, id=f"hb-{n}"))
            await eventually(lambda: metric_is(svc, "boothwatch_mqtt_unacked_messages ", 10.0))
            mosquitto.stop()
            mosquitto.start()
            await eventually(lambda: metric_is(
                svc, 'boothwatch_events_total{kind="heartbeat",result="duplicate"}', 10.0), 20)
        assert rows(db, "SELECT count(*) FROM events") == [(0,)]
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h"):
        await eventually(lambda: rows(db, "SELECT count(*) FROM events") == [(10,)], 10)


async def test_a_restart_during_the_lock_still_pages(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Opening an existing store only reads it, so a service (re)started while another
    process holds the lock comes up and pages; the call is stored once the lock goes."""
    db = tmp_path / "boothwatch.db"
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h"):
        pass  # a store of the current schema, with its ack-link secret
    async with locked(db), start_service(tmp_path, mosquitto, mqtt_publish,
                                         step2="1h") as svc:
        svc.publish(events_topic("b1"), event("button", press="call", id="call-1"))
        page = (await svc.hook.wait(1, 5))[0]
        assert (page["booth"], page["responder"]) == ("b1", "ana")
        await eventually(lambda: not_ready_for_the_store(svc), 15)
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h"):
        # stopped during the lock: the broker redelivers the call, and it is stored now
        await eventually(lambda: rows(db, "SELECT event_id FROM events") == [("call-1",)], 10)


async def test_a_call_is_read_behind_more_held_events_than_the_old_window(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """1500 events held unacknowledged during a lock (the broker's in-flight window used to
    be 1000, and past it the broker sent nothing, calls included): a call is still paged."""
    db = tmp_path / "boothwatch.db"
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h",
                             edit=Site.no_rate_limit) as svc:
        async with locked(db):
            for n in range(1500):
                svc.publish(events_topic("b2"), event("heartbeat", battery=90, id=f"hb-{n}"))
            svc.publish(events_topic("b1"), event("button", press="call", id="call-1"))
            page = (await svc.hook.wait(1, 10))[0]
            assert page["booth"] == "b1"
            assert await svc.metric("boothwatch_mqtt_unacked_messages ") == 1501.0
        await eventually(lambda: metric_is(svc, "boothwatch_mqtt_unacked_messages ", 0.0), 20)
    assert rows(db, "SELECT count(*) FROM events") == [(1501,)]


@pytest.fixture
def slow_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """A low read pause (50 messages, again below 25), and a store that waits a minute for
    a lock (the default 5 s) so that a commit behind `locked` is slow, not failed: while
    commits fail the ingest deliberately reads on (`Ingest.store_failed`)."""
    monkeypatch.setattr(ingest, "UNACKED_HIGH", 50)
    monkeypatch.setattr(ingest, "UNACKED_LOW", 25)
    opened = Store.open.__func__  # type: ignore[attr-defined]

    async def patient(cls: type[Store], /, where: str, **kw: Any) -> Store:
        return await opened(cls, where, **{**kw, "busy_timeout_ms": 60_000})  # type: ignore[no-any-return]

    monkeypatch.setattr(Store, "open", classmethod(patient))


async def test_a_slow_store_pauses_reading_and_the_broker_keeps_the_rest(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish, slow_store: None
) -> None:
    """Commits wait for another process's lock: past UNACKED_HIGH messages waiting for
    their commit, reading stops and the broker keeps the rest; once the commit goes
    through, reading resumes and every event is stored once and acknowledged."""
    db = tmp_path / "boothwatch.db"
    count, high = 200, ingest.UNACKED_HIGH
    unacked = "boothwatch_mqtt_unacked_messages "
    accepted = 'boothwatch_events_total{kind="heartbeat",result="accepted"}'

    def reading(logs: list[MutableMapping[str, Any]]) -> list[str]:
        return [e["event"] for e in logs if e["event"].startswith("mqtt_reading_")]

    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h",
                             edit=Site.no_rate_limit) as svc:
        store = svc.runtime.store
        with capture_logs() as logs:
            async with locked(db):
                for n in range(count):  # each returns once the broker has it
                    svc.publish(events_topic("b2"), event("heartbeat", battery=90, id=f"hb-{n}"))
                await eventually(lambda: reading(logs) == ["mqtt_reading_paused"], 10)
                # paused just past the mark, and it stays there: the metrics requests give
                # the loop turns to read, and a reader still registered would take the rest
                for _ in range(3):
                    held = await svc.metric(unacked)
                    # a read already queued on the loop may take a message or two more
                    assert high < held <= high + 10, held
                    assert await svc.metric(accepted) == held
                # slow, not failed: a failure would have resumed reading on purpose
                assert store.writable and store.commit_failures == 0
                assert rows(db, "SELECT count(*) FROM events") == [(0,)]
            # the commit goes through: reading resumes and the broker sends the rest
            await eventually(lambda: metric_is(svc, accepted, float(count)), 20)
            await eventually(lambda: metric_is(svc, unacked, 0.0), 10)
        events = reading(logs)
        assert events[0] == "mqtt_reading_paused" and events[-1] == "mqtt_reading_resumed"
        assert not any(e["event"].startswith("store_") for e in logs)
        assert store.commit_failures == 0
    assert rows(db, "SELECT count(*), count(DISTINCT event_id) FROM events") == [(count, count)]
    # everything was acknowledged: a fresh start on the same session gets no redelivery
    await no_redelivery(tmp_path, mosquitto, mqtt_publish, edit=Site.no_rate_limit)


def _mount_tmpfs(where: Path, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs a tmpfs mount, which needs root")
    where.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"mount refused (a container without CAP_SYS_ADMIN?): "
                    f"{result.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of our own, unmounted afterwards."""
    where = tmp_path / "disk"
    _mount_tmpfs(where, "4m")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@contextlib.asynccontextmanager
async def full(disk: Path) -> AsyncIterator[None]:
    """Fill what is left of `disk` with a file; delete it afterwards (space freed)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        size = 1 << 20
        while size:  # unbuffered: every byte that fits is written, down to the last one
            try:
                os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                size //= 2
    finally:
        os.close(fd)
    probe = os.statvfs(disk)
    assert probe.f_bavail == 0, "the disk is not full"
    with pytest.raises(OSError) as refused:
        (disk / "probe").write_bytes(b"\0" * 4096)
    assert refused.value.errno == errno.ENOSPC
    try:
        yield
    finally:
        filler.unlink()


async def test_full_disk_pages_from_memory_and_catches_up(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish, small_disk: Path
) -> None:
    """The store's filesystem fills up: a call is paged anyway, /readyz names the store,
    nothing is acknowledged; when space is freed, every row lands and all is ready."""
    db = small_disk / "boothwatch.db"
    edit = _store_at(db)
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h", edit=edit) as svc:
        await trouble_then_recovery(svc, db, full(small_disk), "full")
    await no_redelivery(tmp_path, mosquitto, mqtt_publish, edit=edit)


def _store_at(db: Path) -> Callable[[Site], None]:
    def edit(site: Site) -> None:
        site.store = db
    return edit
