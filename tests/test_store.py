"""The SQLite store on a real file: batching, sessions, and never dropping a batch."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from monitor.core.booth import BoothView
from monitor.store import EventRow, Store


def _event(n: int) -> EventRow:
    return EventRow(booth="b1", kind="heartbeat", event_id=f"e{n}", device=None, ts=None,
                    received_at=1000.0 + n, payload="{}")


def _booth(occupied: bool, started: float | None) -> BoothView:
    return BoothView(id="b1", name="Booth 1", occupied=occupied, session_started_at=started,
                     motion=None, still_since=None, incident=None, devices_ok=True,
                     mode="normal", maintenance=None, door=None, unmonitored=False,
                     stillness_from=None,
                     unresponsive_fired=False,
                     long_fired=False)


async def test_a_burst_is_committed_in_few_batches(tmp_path: Path) -> None:
    """A thousand events added at once land in far fewer transactions, none lost."""
    store = await Store.open(str(tmp_path / "s.db"))
    writer = asyncio.create_task(store.run_writer())
    futures = [store.add_event(_event(n)) for n in range(1000)]
    await asyncio.gather(*futures)
    assert await store.count("events") == 1000
    assert store.commits <= 3
    writer.cancel()
    await store.close()


async def test_duplicate_event_ids_are_stored_once(tmp_path: Path) -> None:
    """The unique (booth, id) index keeps a redelivered event out of the table."""
    store = await Store.open(str(tmp_path / "s.db"))
    writer = asyncio.create_task(store.run_writer())
    store.add_event(_event(1))
    await store.add_event(_event(1))
    assert await store.count("events") == 1
    assert await store.event_ids_since(0) == [("b1", "e1")]
    writer.cancel()
    await store.close()


async def test_sessions_open_and_close_with_occupancy(tmp_path: Path) -> None:
    """Occupied starts a session row; vacant closes it with the end time."""
    path = tmp_path / "s.db"
    store = await Store.open(str(path))
    writer = asyncio.create_task(store.run_writer())
    await store.put_booth(_booth(True, 50.0), now=50.0)
    await store.put_booth(_booth(False, None), now=80.0)
    await store.put_booth(_booth(True, 90.0), now=90.0)
    writer.cancel()
    await store.close()
    rows = sqlite3.connect(path).execute(
        "SELECT booth, started_at, ended_at FROM sessions ORDER BY started_at").fetchall()
    assert rows == [("b1", 50.0, 80.0), ("b1", 90.0, None)]


async def test_a_failed_commit_is_retried_not_dropped(tmp_path: Path) -> None:
    """While another process locks the database, nothing is confirmed; after, everything is."""
    path = tmp_path / "s.db"
    store = await Store.open(str(path), busy_timeout_ms=50)
    writer = asyncio.create_task(store.run_writer())
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    done = store.add_event(_event(1))
    store.add_event(_event(2))
    await asyncio.sleep(0.5)
    assert not done.done() and not store.writable and "locked" in (store.last_error or "")
    locker.execute("ROLLBACK")
    await asyncio.wait_for(done, 10)
    assert store.writable
    assert await store.count("events") == 2
    writer.cancel()
    await store.close()


async def test_drain_after_cancel_keeps_everything(tmp_path: Path) -> None:
    """Cancelling the writer mid-stream and draining leaves every row committed."""
    path = tmp_path / "s.db"
    store = await Store.open(str(path))
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
