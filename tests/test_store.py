"""The store on each backend, a real SQLite file and a real PostgreSQL database (the
`store_at` fixture runs each test on both): batching, sessions, every table written
and read back, never dropping a batch, schema versions."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from alerts.tokens import Use
from monitor import store as store_module
from monitor.codec import booth_from_record, booth_record, incident_record
from monitor.core.booth import BoothView, IncidentRef
from monitor.core.events import Button, Press, Resolve
from monitor.core.incident import TimelineEntry
from monitor.store import SCHEMA_VERSION, AttemptRow, EventRow, PageRow
from monitor.store_base import Batch, SchemaTooNew
from tests.harness.core import CoreDriver, incident
from tests.harness.postgres import PASSWORD, Postgres, StoreAt, writing


def _event(n: int, booth: str = "b1") -> EventRow:
    return EventRow(booth=booth, kind="heartbeat", event_id=f"e{n}", device=None, ts=None,
                    received_at=1000.0 + n, payload="{}")


def _booth(occupied: bool, started: float | None) -> BoothView:
    return BoothView(id="b1", name="Booth 1", occupied=occupied, session_started_at=started,
                     motion=None, still_since=None, incident=None, devices_ok=True,
                     mode="normal", maintenance=None, door=None, unmonitored=False,
                     stillness_from=None,
                     unresponsive_fired=False,
                     long_fired=False)


async def test_a_burst_is_committed_in_few_batches(store_at: StoreAt) -> None:
    """A thousand events added at once land in far fewer transactions, none lost."""
    async with writing(store_at) as store:
        futures = [store.add_event(_event(n)) for n in range(1000)]
        await asyncio.gather(*futures)
        assert await store.count("events") == 1000
        assert store.commits <= 3


async def test_the_writer_wakes_behind_the_pages(
        store_at: StoreAt, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows added along with a page wake the writer only once the page is out: its
    delivery's first step, then the task writing its body (aiohttp on Python 3.11),
    and only then the writer's step; the rows are committed all the same."""
    order: list[str] = []
    original = store_module.encode

    async def encode(batch: Batch) -> None:
        order.append("writer")
        await original(batch)

    monkeypatch.setattr(store_module, "encode", encode)
    async with writing(store_at) as store:
        async def deliver() -> None:
            order.append("page step")

            async def body() -> None:
                order.append("page body")

            await asyncio.get_running_loop().create_task(body())

        page = asyncio.create_task(deliver())
        stored = store.add_event(_event(1))
        await asyncio.gather(page, stored)
        assert order == ["page step", "page body", "writer"]
        assert await store.event_ids_since(0) == [("b1", "e1")]


async def test_duplicate_event_ids_are_stored_once(store_at: StoreAt) -> None:
    """The unique (booth, id) index keeps a redelivered event out of the table, in one
    batch or the next; events without an id are all kept."""
    async with writing(store_at) as store:
        store.add_event(_event(1))
        await store.add_event(_event(1))
        await store.add_event(_event(1))
        no_id = EventRow("b2", "press", None, None, None, 5.0, "{}")
        store.add_event(no_id)
        await store.add_event(no_id)
        assert await store.count("events") == 3
        assert await store.event_ids_since(0) == [("b1", "e1")]


async def test_the_event_ids_reloaded_are_the_newest_oldest_first(store_at: StoreAt) -> None:
    """At start the runtime reloads the ids of the last day, at most what its memory holds:
    the newest of them, in the order they came (the oldest is forgotten first)."""
    async with writing(store_at) as store:
        await asyncio.gather(*(store.add_event(_event(n)) for n in (5, 3, 1, 4, 2)))
        assert await store.event_ids_since(1002.0) == [("b1", "e2"), ("b1", "e3"),
                                                       ("b1", "e4"), ("b1", "e5")]
        assert await store.event_ids_since(0, limit=3) == [("b1", "e3"), ("b1", "e4"),
                                                           ("b1", "e5")]


async def test_sessions_open_and_close_with_occupancy(store_at: StoreAt) -> None:
    """Occupied starts a session row; vacant closes it with the end time, also when both
    land in one batch."""
    async with writing(store_at) as store:
        await store.put_booth(_booth(True, 50.0), now=50.0)
        await store.put_booth(_booth(False, None), now=80.0)
        store.put_booth(_booth(True, 90.0), now=90.0)
        await store.put_booth(_booth(False, None), now=95.0)
        await store.put_booth(_booth(True, 99.0), now=99.0)
    assert store_at.query(
        "SELECT booth, started_at, ended_at FROM sessions ORDER BY started_at") == [
        ("b1", 50.0, 80.0), ("b1", 90.0, 95.0), ("b1", 99.0, None)]
    reopened = await store_at.open()  # the open session is known again after a restart
    try:
        assert reopened._occupied == {"b1": 99.0}
    finally:
        await reopened.close()


def _page(id: str, of: str, **kw: Any) -> PageRow:
    row = PageRow(id=id, incident=of, responder="ana", channel="pager", level=1,
                  payload={"text": "Booth 1: call"}, status="queued", attempts=0,
                  created_at=100.0, updated_at=100.0)
    for key, value in kw.items():
        setattr(row, key, value)
    return row


async def test_every_table_is_written_and_read_back(store_at: StoreAt) -> None:
    """What the service restores after a restart, what the API shows and what the report
    reads come back as written: incidents, their timeline and protocol steps, pages (the
    outbox: queued ones are sent again, those of a resolved incident are not), attempts,
    receipts, duty, devices, audit, booths, meta."""
    core = CoreDriver(start=True)
    opened = incident(core.send(Button("b1", Press.CALL)))
    core.advance(1)
    other = incident(core.send(Button("b2", Press.CALL)))
    core.advance(10)
    resolved = incident(core.send(Resolve(other.view.id, "rui", outcome="ok")))
    first, second = opened.view.id, other.view.id
    async with writing(store_at) as store:
        for change in (opened, other, resolved):
            store.put_incident(change.view, change.new)
        store.put_incident(opened.view, [TimelineEntry(
            opened.view.raised_at + 5, "step",
            {"step": "naloxone", "responder": "ana", "count": 1, "via": "api"})])
        store.put_page(_page("p1", first))
        store.put_page(_page("p2", first, status="sent", attempts=1, sent_at=101.0, latency=0.2,
                             receipt="R1"))
        store.put_page(_page("p3", second))  # queued, but its incident is resolved
        store.add_attempt(AttemptRow("p2", 1, "pager", True, None, 0.2, "R1", 101.0))
        store.add_attempt(AttemptRow("p2", 2, "pager", False, "HTTP 500", 0.3, None, 102.0))
        store.put_duty({"responder": "ana", "on": True}, 100.0)
        store.put_device("b1", {"id": "d1", "online": True, "last_seen": 99.0,
                                "battery": 80}, 100.0)
        store.add_audit(100.0, "maintenance", "b2", {"by": "rui"})
        store.put_booth(_booth(True, 90.0), now=100.0)
        store.remember("site_timezone", "Europe/Lisbon")
        await store.barrier()
        store.mark_receipt("R1", "delivered", 103.0)
        store.put_page(_page("p1", first, status="retrying", attempts=2, last_error="timeout",
                             updated_at=104.0))
        await store.barrier()

        assert [v.id for v in await store.load_open_incidents()] == [first]
        back = await store.incident(first)
        assert back is not None and incident_record(back) == incident_record(opened.view)
        assert await store.incident("nope") is None
        incidents, total = await store.incidents(open_only=False)
        assert ([v.id for v in incidents], total) == ([second, first], 2)
        assert [(p.id, p.status, p.attempts, p.last_error)
                for p in await store.unsent_pages()] == [("p1", "retrying", 2, "timeout")]
        assert [(p.id, p.receipt) for p in await store.open_receipts()] == [("p2", "R1")]
        pages = {p["id"]: p for p in await store.pages(first)}
        assert pages["p2"]["status"] == "delivered" and pages["p2"]["delivered_at"] == 103.0
        assert pages["p2"]["sent_at"] == 101.0 and pages["p2"]["receipt"] == "R1"
        assert [(t["number"], t["ok"], t["error"]) for t in pages["p2"]["tries"]] == [
            (1, True, None), (2, False, "HTTP 500")]
        assert await store.load_duty() == [{"responder": "ana", "on": True}]
        assert await store.load_devices() == [{"id": "d1", "online": True, "last_seen": 99.0,
                                               "battery": 80}]
        assert await store.audit(subject="b2") == [
            {"at": 100.0, "kind": "maintenance", "subject": "b2", "by": "rui"}]
        assert [b.id for b in await store.load_booths()] == ["b1"]
        assert await store.latest_time() == 104.0
        assert await store.count("timeline") == 1 + sum(
            len(c.new) for c in (opened, other, resolved))
        assert await store.count("steps") == 1
    assert store_at.query("SELECT value FROM meta WHERE key = ?", ("site_timezone",)) == [
        ("Europe/Lisbon",)]
    assert store_at.query("SELECT online FROM devices") in ([(1,)], [(True,)])
    assert store_at.query("SELECT incident, step, responder, count, note, via FROM steps") == [
        (first, "naloxone", "ana", 1, None, "api")]


async def test_used_links_and_secrets_are_committed_at_once(store_at: StoreAt) -> None:
    """An ack link's use is committed when recorded (another connection sees it) and a
    second record of it says so; a kept secret is made once and read back after."""
    store = await store_at.open()
    try:
        use = Use("I1", "ana", at=1000.0, via="link", signed_at=990.0)
        assert await store.use_ack_link("d1", use, forget_before=0.0)
        assert not await store.use_ack_link("d1", use, forget_before=0.0)
        assert store_at.query("SELECT digest, via FROM used_ack_links") == [("d1", "link")]
        assert await store.used_ack_links(since=995.0) == [("d1", use)]
        later = Use("I2", "rui", at=2000.0, via="ntfy", signed_at=1999.0)
        assert await store.use_ack_link("d2", later, forget_before=1500.0)
        assert await store.used_ack_links(since=0.0) == [("d2", later)]
        assert await store.secret("ack_secret", "first") == "first"
        assert await store.secret("ack_secret", "second") == "first"
    finally:
        await store.close()


@contextlib.contextmanager
def _store_blocked(at: StoreAt, postgres: Postgres | None) -> Iterator[None]:
    """Commits fail inside the block: SQLite's file locked by another process; the
    PostgreSQL server stopped (the pool's connections break, as on a server restart)."""
    if postgres is None:
        import sqlite3

        locker = sqlite3.connect(at.where, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        return
    postgres.stop()
    try:
        yield
    finally:
        postgres.start()


async def test_a_failed_commit_is_retried_not_dropped(
        store_at: StoreAt, request: pytest.FixtureRequest) -> None:
    """While the store cannot commit, nothing is confirmed and the trouble is said; after,
    everything is, the held commit first."""
    server = request.getfixturevalue("postgres") if store_at.backend == "postgresql" else None
    async with writing(store_at, busy_timeout_ms=50) as store:
        await store.add_event(_event(0))
        with _store_blocked(store_at, server):
            done = store.add_event(_event(1))
            store.add_event(_event(2))
            for _ in range(200):
                if not store.writable:
                    break
                await asyncio.sleep(0.05)
            assert not done.done() and not store.writable
            assert store.last_error and store.commit_failures >= 1
            assert not await store.settled(done)  # says at once: held in memory
        await asyncio.wait_for(done, 30)
        assert store.writable
        assert await store.count("events") == 3


async def test_drain_after_cancel_keeps_everything(store_at: StoreAt) -> None:
    """Cancelling the writer mid-stream and draining leaves every row committed."""
    store = await store_at.open()
    writer = asyncio.create_task(store.run_writer())
    for n in range(500):
        store.add_event(_event(n))
    await asyncio.sleep(0)
    writer.cancel()
    for n in range(500, 600):
        store.add_event(_event(n))
    await store.drain()
    assert await store.count("events") == 600
    await store.close()


async def test_cancelled_while_encoding_a_batch_drain_keeps_it(
        store_at: StoreAt, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer makes a batch's rows a slice of the loop at a time: cancelled between two
    slices (shutdown), nothing of that batch is lost."""
    monkeypatch.setattr(store_module, "ENCODE_SLICE", 0.0)  # a turn after every row
    store = await store_at.open()
    writer = asyncio.create_task(store.run_writer())
    for n in range(50):
        store.add_event(_event(n))
    for _ in range(5):
        await asyncio.sleep(0)
    assert store.pending() == 50  # being encoded, not committed
    writer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await writer
    await store.drain()
    assert await store.count("events") == 50
    await store.close()


def test_a_batch_encoded_row_by_row_gives_the_same_rows() -> None:
    """`Batch.encode` yields once a row and makes what the ``*_rows`` methods give."""
    batch = Batch(events=[_event(n) for n in range(3)],
                  audit=[(1.0, "duty", "ana", {"on": True})])
    plain = (batch.event_rows(), batch.audit_rows())
    assert sum(1 for _ in batch.encode()) == 4
    assert (batch.event_rows(), batch.audit_rows()) == plain


def test_a_booth_row_holds_the_booth_record() -> None:
    """The booths table keeps `booth_record`'s document (orjson writes the view itself), for
    a booth with every field set, and it reads back as the same view."""
    view = BoothView(
        id="b1", name="Booth 1", occupied=True, session_started_at=90.0, motion="still",
        still_since=95.5, incident=IncidentRef("01J", "high", "open", 2), devices_ok=False,
        mode="maintenance", maintenance={"since": 1.0, "until": 2.0, "reason": "r", "by": "rui"},
        door="closed", unmonitored=True, stillness_from=95.5, unresponsive_fired=True,
        long_fired=False, door_closed_at=89.0, awaiting_presence=False, stillness=60.0,
        long_session=600.0, unresponsive_at=155.5,
        troubles=({"device": "d1", "role": "motion", "trouble": "offline"},), risk="high",
        route="inject", closed=True, test={"until": 300.0, "tester": "ana"},
        last_incident="01H")
    [(booth, text, at)] = Batch(booths={"b1": (view, 100.0)}).booth_rows()
    assert (booth, at) == ("b1", 100.0)
    assert orjson.loads(text) == json.loads(json.dumps(booth_record(view)))
    assert booth_from_record(orjson.loads(text)) == view


async def test_a_newer_schema_is_refused(store_at: StoreAt) -> None:
    """A store a newer boothwatch migrated is not opened (nor written): the error names it,
    both versions and what to do."""
    store = await store_at.open()
    await store.close()
    store_at.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                     (str(SCHEMA_VERSION + 1),))
    with pytest.raises(SchemaTooNew) as refused:
        await store_at.open()
    message = str(refused.value)
    assert f"schema version {SCHEMA_VERSION + 1}, newer than this boothwatch knows " \
           f"({SCHEMA_VERSION})" in message
    assert "run that version again" in message
    assert refused.value.status == 73
    assert store_at.query("SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(SCHEMA_VERSION + 1),)]


async def test_an_older_store_is_migrated_once(store_at: StoreAt) -> None:
    """A store of an older version missing a table of this one gets it, and its version,
    keeping its rows; opening a current store writes nothing to its schema."""
    async with writing(store_at) as store:
        await store.add_event(_event(1))
    store_at.execute("DROP TABLE used_ack_links")
    store_at.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    store = await store_at.open()
    try:
        assert await store.use_ack_link("d", Use("I", "ana", 1.0, "link", 1.0), 0.0)
        assert await store.count("events") == 1
    finally:
        await store.close()
    assert store_at.query("SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(SCHEMA_VERSION),)]


async def test_both_backends_have_the_same_tables_and_columns(
        tmp_path: Path, postgres_url: str) -> None:
    """A table or column added to one backend's schema and not the other's fails here
    (the store's reads and the report run the same SQL on both). The site's lease is
    PostgreSQL's alone (`monitor.lease`: one SQLite file has one process)."""
    lite = StoreAt("sqlite", str(tmp_path / "s.db"))
    pg = StoreAt("postgresql", postgres_url, PASSWORD)
    for at in (lite, pg):
        await (await at.open()).close()
    tables = [t for (t,) in lite.query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    sqlite_columns = {(t, c) for t in tables
                      for (c,) in lite.query(f"SELECT name FROM pragma_table_info('{t}')")}
    pg_columns = set(pg.query(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name NOT IN ('lease', 'lease_members')"))
    assert pg_columns == sqlite_columns


async def test_a_store_from_before_versions_gets_its_columns(tmp_path: Path) -> None:
    """A SQLite store made before pages had kind, receipt and delivered_at (and before
    used ack links) opens with them added and its pages kept, at this version."""
    at = StoreAt("sqlite", str(tmp_path / "old.db"))
    store = await at.open()
    await store.close()
    for statement in (
        "DROP TABLE pages", "DROP TABLE used_ack_links",
        "CREATE TABLE pages (id TEXT PRIMARY KEY, incident TEXT NOT NULL, responder TEXT"
        " NOT NULL, channel TEXT NOT NULL, level INTEGER NOT NULL, payload TEXT NOT NULL,"
        " status TEXT NOT NULL, attempts INTEGER NOT NULL, last_error TEXT, created_at REAL"
        " NOT NULL, updated_at REAL NOT NULL, sent_at REAL, latency REAL)",
        "INSERT INTO pages VALUES ('p1', 'I1', 'ana', 'pager', 1, '{}', 'sent', 1, NULL,"
        " 1.0, 2.0, 2.0, 0.5)",
        "UPDATE meta SET value = '1' WHERE key = 'schema_version'",
    ):
        at.execute(statement)
    async with writing(at) as store:
        await store.put_page(_page("p2", "I1", kind="notice", receipt="R2"))
    assert at.query("SELECT id, kind, receipt FROM pages ORDER BY id") == [
        ("p1", "page", None), ("p2", "notice", "R2")]
    assert at.query("SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(SCHEMA_VERSION),)]
