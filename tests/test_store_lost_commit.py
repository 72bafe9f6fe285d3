"""A commit whose answer was lost is not committed twice (PostgreSQL).

A real PostgreSQL server behind a relay (`tests/harness/cut_proxy.py`) that breaks the
store's connection at a COMMIT. When the server committed but its answer was lost, the
store cannot tell from the error; committing the batch again would store its append-only
rows twice (an event without an id, timeline entries, steps, audit lines: a coordinator's
record of who did what, when). Each batch writes a mark with its rows; after a failed
commit the store ends the old session if it still runs and reads the mark.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from structlog.testing import capture_logs

from monitor.store import EventRow, Store
from tests.harness.cut_proxy import CutProxy
from tests.harness.postgres import PASSWORD

pytestmark = pytest.mark.integration


def _event(n: int, event_id: str | None) -> EventRow:
    return EventRow(booth="b1", kind="button", event_id=event_id, device=None, ts=None,
                    received_at=1000.0 + n, payload='{"kind":"button","press":"call"}')


@contextlib.asynccontextmanager
async def relayed(postgres_url: str) -> AsyncIterator[tuple[CutProxy, Store, str]]:
    """The store, on `postgres_url` through a relay that can cut it; the plain URL too."""
    parts = urlsplit(postgres_url)
    assert parts.hostname is not None and parts.port is not None
    proxy = await CutProxy(parts.hostname, parts.port).start()
    via = urlunsplit(parts._replace(netloc=f"{parts.username}@{parts.hostname}:{proxy.port}"))
    store = await Store.open(via, password=PASSWORD)
    try:
        yield proxy, store, postgres_url
    finally:
        await store.close()
        await proxy.close()


async def _count(url: str, sql: str) -> int:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, password=PASSWORD,
                                                     autocommit=True) as conn:
        cur = await conn.execute(sql)
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def _write_and_cut(proxy: CutProxy, store: Store, how: str) -> asyncio.Future[None]:
    """A batch with append-only rows of every kind the relay cuts at its COMMIT; returns
    its future once the store has seen the commit fail."""
    getattr(proxy, how)()
    store.add_event(_event(1, None))  # no id: nothing in the schema keeps it from doubling
    store.add_event(_event(2, "e2"))
    store.add_audit(1001.0, "duty", "ana", {"on": True})
    done = store.add_audit(1002.0, "duty", "ana", {"on": False})
    for _ in range(200):
        if store.commit_failures:
            break
        await asyncio.sleep(0.05)
    assert proxy.cuts == 1 and store.commit_failures >= 1, "the relay did not cut the commit"
    return done


async def _assert_once(url: str) -> None:
    assert await _count(url, "SELECT count(*) FROM events WHERE event_id IS NULL") == 1
    assert await _count(url, "SELECT count(*) FROM events") == 2
    assert await _count(url, "SELECT count(*) FROM audit") == 2


@pytest.mark.parametrize("how", ["lose_answer", "lose_commit"])
async def test_a_commit_cut_at_its_commit_is_stored_once(postgres_url: str, how: str) -> None:
    """Answer lost (the server committed) or COMMIT lost (it did not): either way every row
    is stored once, and whoever waits on the batch hears it is stored."""
    async with relayed(postgres_url) as (proxy, store, url):
        writer = asyncio.create_task(store.run_writer())
        try:
            with capture_logs() as logs:
                done = await _write_and_cut(proxy, store, how)
                await asyncio.wait_for(done, 30)
            await _assert_once(url)
            landed = [e for e in logs if e["event"] == "store_commit_landed"]
            assert len(landed) == (1 if how == "lose_answer" else 0)
            assert store.writable
            # the store carries on as before
            await store.add_event(_event(3, "e3"))
            assert await _count(url, "SELECT count(*) FROM events") == 3
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            await store.drain()


async def test_shutdown_after_a_lost_answer_stores_it_once(postgres_url: str) -> None:
    """Stopped right after such a failure, before any retry: `drain` reads the mark too."""
    async with relayed(postgres_url) as (proxy, store, url):
        writer = asyncio.create_task(store.run_writer())

        def stop() -> None:  # at the first failure, before any retry
            writer.cancel()

        store.on_failed = stop
        done = await _write_and_cut(proxy, store, "lose_answer")
        assert not done.done()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        await store.drain()
        assert done.done() and done.exception() is None
        await _assert_once(url)
