"""A commit whose answer was lost is stored once: never twice, and nothing else lost.

A connection can break after the server committed: the commit failed for the store, yet
landed. Committing the batch again would store its append-only rows twice (an event
without an id, audit lines, timeline entries, steps: a coordinator's record of who did
what, when). Each commit moves the writer's mark in `meta` first (`Store._attempt`); a
mark that moved tells a landed commit from one that did not.

On PostgreSQL a real server sits behind a relay (`tests/harness/cut_proxy.py`) that cuts
the store's connection at its COMMIT: the answer lost, the COMMIT lost with the connection
(the server rolls back), or the COMMIT held back, its session open inside its transaction
and holding the mark's row: reaching the server late, after the store has moved on, or
never (the server ends the session once it has been idle in its transaction for twice the
lock timeout). On both backends the commit is also made to fail right after it landed
(the backend's error raised once the transaction committed), and another writer's mark is
found in the way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from structlog.testing import capture_logs

from monitor.store import EventRow, Store
from monitor.store_base import Batch
from tests.harness.cut_proxy import CutProxy
from tests.harness.postgres import PASSWORD, StoreAt, writing

pytestmark = pytest.mark.integration

LOCK_TIMEOUT_MS = 1000  # the server ends a session of ours idle in a transaction after 2 s


def _event(n: int, event_id: str | None) -> EventRow:
    return EventRow(booth="b1", kind="button", event_id=event_id, device=None, ts=None,
                    received_at=1000.0 + n, payload='{"kind":"button","press":"call"}')


@contextlib.asynccontextmanager
async def relayed(postgres_url: str) -> AsyncIterator[tuple[CutProxy, StoreAt, StoreAt]]:
    """A relay that can cut connections to `postgres_url`; the store through it, and the
    store as read directly."""
    parts = urlsplit(postgres_url)
    assert parts.hostname is not None and parts.port is not None
    proxy = await CutProxy(parts.hostname, parts.port).start()
    via = urlunsplit(parts._replace(netloc=f"{parts.username}@{parts.hostname}:{proxy.port}"))
    try:
        yield (proxy, StoreAt("postgresql", via, PASSWORD),
               StoreAt("postgresql", postgres_url, PASSWORD))
    finally:
        await proxy.close()


def _batch(store: Store, first: int) -> asyncio.Future[None]:
    """A batch with append-only rows; its future."""
    store.add_event(_event(first, None))  # no id: nothing in the schema keeps it from doubling
    store.add_event(_event(first + 1, f"e{first + 1}"))
    store.add_audit(1000.0 + first, "duty", "ana", {"on": True})
    return store.add_audit(1001.0 + first, "duty", "ana", {"on": False})


async def _failed(store: Store) -> None:
    for _ in range(400):
        if store.commit_failures:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the commit did not fail")


def _counts(at: StoreAt) -> tuple[int, int, int]:
    (without_id,), = at.query("SELECT count(*) FROM events WHERE event_id IS NULL")
    (events,), = at.query("SELECT count(*) FROM events")
    (audit,), = at.query("SELECT count(*) FROM audit")
    return without_id, events, audit


@pytest.mark.parametrize("how", ["lose_answer", "lose_commit", "late_commit"])
async def test_a_commit_cut_at_its_commit_is_stored_once(postgres_url: str, how: str) -> None:
    """The answer lost (the server committed), the COMMIT lost (the connection gone both
    ways: the server rolled back), or the COMMIT arriving 1 s late while its session holds
    the mark's row and the store is already trying again: every row is stored once, and
    what came meanwhile too."""
    async with (relayed(postgres_url) as (proxy, via, at),
                writing(via, busy_timeout_ms=LOCK_TIMEOUT_MS) as store):
        with capture_logs() as logs:
            if how == "late_commit":
                proxy.late_commit(1.0)
            else:
                getattr(proxy, how)()
            done = _batch(store, 1)
            await _failed(store)
            later = _batch(store, 11)  # came during the trouble
            await asyncio.wait_for(asyncio.gather(done, later), 30)
        assert proxy.cuts == 1
        if how == "late_commit":
            assert proxy.late_sent
        assert _counts(at) == (2, 4, 4)
        landed = [e for e in logs if e["event"] == "store_commit_landed"]
        assert len(landed) == (0 if how == "lose_commit" else 1)
        assert store.writable


async def test_a_late_commit_and_a_cut_retry_store_everything_once(postgres_url: str) -> None:
    """The first COMMIT held back for 1.5 s and the retry's COMMIT lost as well, rows added
    meanwhile: each row is stored once, and nothing is said to be stored that is not."""
    async with (relayed(postgres_url) as (proxy, via, at),
                writing(via, busy_timeout_ms=LOCK_TIMEOUT_MS) as store):
        proxy.late_commit(1.5)
        done = _batch(store, 1)
        await _failed(store)
        proxy.lose_commit()  # the retry's COMMIT, when it comes
        later = _batch(store, 11)
        await asyncio.wait_for(asyncio.gather(done, later), 30)
        assert _counts(at) == (2, 4, 4)
        assert proxy.cuts == 2


async def test_shutdown_after_a_lost_answer_stores_it_once(postgres_url: str) -> None:
    """Stopped at the first failure, before any retry: `drain` moves the mark the same way."""
    async with relayed(postgres_url) as (proxy, via, at):
        store = await via.open(busy_timeout_ms=LOCK_TIMEOUT_MS)
        writer = asyncio.create_task(store.run_writer())

        def stop() -> None:  # at the first failure, before any retry
            writer.cancel()

        store.on_failed = stop
        proxy.lose_answer()
        done = _batch(store, 1)
        await _failed(store)
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        assert not done.done()
        await store.drain()
        assert done.done() and done.exception() is None
        assert _counts(at) == (1, 2, 2)
        await store.close()


async def test_a_commit_that_landed_but_failed_is_not_stored_twice(store_at: StoreAt) -> None:
    """On both backends: the commit goes through, then fails as a lost answer would (the
    backend's own error); the retry finds its mark moved by that commit and stores nothing
    more. What came meanwhile is stored after it."""
    async with writing(store_at) as store:
        backend: Any = store._backend
        real = backend.commit
        lost: list[Batch] = []

        async def answer_lost(batch: Batch) -> None:
            await real(batch)
            if not lost:
                lost.append(batch)
                raise store.errors[0]("the answer to COMMIT was lost")

        backend.commit = answer_lost
        with capture_logs() as logs:
            done = _batch(store, 1)
            await _failed(store)
            later = _batch(store, 11)
            await asyncio.wait_for(asyncio.gather(done, later), 30)
        assert _counts(store_at) == (2, 4, 4)
        assert [e["rows"] for e in logs if e["event"] == "store_commit_landed"] == [4]


async def test_another_writers_mark_is_taken_over(store_at: StoreAt) -> None:
    """The mark moved by someone else (an earlier process of this site whose last commit
    landed after this one read it): the batch is committed over it, once."""
    async with writing(store_at) as store:
        await _batch(store, 1)
        store_at.execute("UPDATE meta SET value = 'theirs' WHERE key = 'last_commit:boothwatch'")
        await asyncio.wait_for(_batch(store, 11), 10)
        assert _counts(store_at) == (2, 4, 4)
        ((mark,),) = store_at.query(
            "SELECT value FROM meta WHERE key = 'last_commit:boothwatch'")
        assert mark != "theirs"


async def test_a_commit_that_never_arrives_is_ended_by_the_server(postgres_url: str) -> None:
    """The COMMIT held back for longer than the server's idle-in-transaction timeout (2 s
    here): the server ends the session, its locks go, and the batch is stored once."""
    async with (relayed(postgres_url) as (proxy, via, at),
                writing(via, busy_timeout_ms=LOCK_TIMEOUT_MS) as store):
        proxy.late_commit(30.0)
        done = _batch(store, 1)
        await _failed(store)
        later = _batch(store, 11)
        await asyncio.wait_for(asyncio.gather(done, later), 8)
        assert _counts(at) == (2, 4, 4)
        assert not proxy.late_sent
