"""The store: events, sessions, incidents with their timeline and protocol steps, pages,
audit, duty, devices.

Two backends keep it: SQLite (``[store] path``, `monitor.store_sqlite`), the default
for one box and the demo, and PostgreSQL (``[store] url``, `monitor.store_postgres`)
for a site whose store must outlive its box. This module is what does not depend on
which: the writer task, what a failing store does, and the reads, written once in
SQL both run (``?`` marks a parameter); `monitor.store_base` has the rows, the batch
and what a backend must do (`Backend`). A backend holds what differs, each in one
module: its connections, its schema and migrations, and the commit of a batch.

Writes are batched: callers add rows to the current batch and get a future that
completes when that batch is committed. One writer task commits whatever has
gathered while the previous commit ran, so a burst becomes a few large
transactions instead of many small ones. The MQTT adapter acknowledges a
message to the broker only when the batch holding its event has committed.

A failed commit is never dropped: the batch is kept, merged with what came
since, and retried with backoff; meanwhile ``writable`` is False (``/readyz``
says so) and nothing is acknowledged to the broker, which keeps the messages.
The service goes on from memory (the core pages without waiting for the disk);
when the store recovers (a lock released, disk space freed, the database server
back) the next commit catches up with everything held since the trouble began.
Failures are counted (``commit_failures``) and logged at once, then at most every
``FAILURE_LOG_EVERY`` seconds while they last, and once more on recovery.

Schema versions: the ``meta`` row ``schema_version`` says which version a store has.
`Store.open` brings an older store up to ``SCHEMA_VERSION`` (each backend's
``MIGRATIONS``, then its ``SCHEMA``, which creates what is missing) and refuses a
newer one (`SchemaTooNew`): a store written by a newer boothwatch is never written
by an older one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

import orjson
import structlog

from alerts.delivery import after_pages
from alerts.tokens import Use
from monitor.codec import booth_from_record, incident_from_record
from monitor.core.booth import BoothView
from monitor.core.fatigue import ACTIONABLE, NON_ACTIONABLE
from monitor.core.incident import IncidentView, TimelineEntry

# the rows, dumps and the errors, from where the backends take them too (and here, where
# the store's callers have always found them)
from monitor.store_base import SCHEMA_VERSION as SCHEMA_VERSION
from monitor.store_base import AttemptRow as AttemptRow
from monitor.store_base import (
    Backend,
    Batch,
    Mark,
    MarkMoved,
    Reader,
    Row,
    SchemaTooNew,
    is_url,
    settle,
)
from monitor.store_base import EventRow as EventRow
from monitor.store_base import PageRow as PageRow
from monitor.store_base import StoreUnavailable as StoreUnavailable
from monitor.store_base import dumps as dumps

log = structlog.get_logger(__name__)

SITE_TIMEZONE = "site_timezone"  # the meta key of the site's time zone, for reports
ROSTER_SHIFTS = "roster_shifts"  # the meta key of the roster's shifts (JSON), for reports
FAILURE_LOG_EVERY = 30.0  # seconds between "still failing" log lines during an outage
# commits of one batch whose mark another commit moved meanwhile, before giving up for a
# while (retried as a failed commit): more means two processes write as one site
MARK_TRIES = 3
#: how long the writer encodes a batch's rows in one turn of the event loop (seconds): a
#: burst's commit (1,000 incidents with their pages, booths and devices) took 10-35 ms
#: of the loop in one go, and a call read meanwhile waited for it (bench/burst.py)
ENCODE_SLICE = 0.001


def recent_outcomes(before: float, booths: Sequence[str], run: int
                    ) -> tuple[str, list[Any]]:
    """The SQL and parameters of each booth's last `run` outcomes a person recorded on
    incidents raised before `before`, oldest first: the alarm-fatigue history
    (`monitor.core.fatigue`) of `boothwatch report` and of the service's metrics."""
    classed = sorted(ACTIONABLE | NON_ACTIONABLE)
    where = f" AND booth IN ({','.join('?' * len(booths))})" if booths else ""
    # the derived table is named: PostgreSQL before 16 requires it
    return ("SELECT booth, outcome FROM (SELECT booth, outcome, raised_at, row_number() OVER"
            " (PARTITION BY booth ORDER BY raised_at DESC) AS n FROM incidents"
            f" WHERE raised_at < ? AND outcome IN ({','.join('?' * len(classed))}){where})"
            " AS recent WHERE n <= ? ORDER BY booth, raised_at",
            [before, *classed, *booths, run])


class Store:
    def __init__(self, backend: Backend, writer: str = "boothwatch") -> None:
        self._backend = backend
        # the meta key each commit writes its batch's mark under: one writer a site at a time
        # (a pair's lease fences the other out), so the site's id is enough
        self._mark_key = f"last_commit:{writer}"
        self._mark_value: str | None = None  # its value as last known (`_attempt`)
        self.where = backend.where
        self.errors = backend.errors
        # a commit failing so is tried again
        self._retried: tuple[type[Exception], ...] = (*backend.errors, MarkMoved)
        self._batch = Batch()
        self._wakeup = asyncio.Event()
        self._waking = False  # the writer's wake-up is scheduled (behind the pages)
        self._occupied: dict[str, float | None] = {}  # booth -> open session start
        self.writable = True
        self.last_error: str | None = None
        self.last_commit_seconds = 0.0
        self.last_commit_at = time.monotonic()
        self.commits = 0
        self.commit_failures = 0
        self.failing_since: float | None = None  # monotonic, while commits fail
        self._logged_failure_at = 0.0
        self._trouble = asyncio.Event()  # set while commits fail
        self._failed: Batch | None = None  # held for the next attempt, with what came since
        self._committing: Batch | None = None
        self._inflight: asyncio.Future[None] | None = None
        self._inflight_done: asyncio.Future[None] | None = None
        self.on_failed: Callable[[], None] | None = None  # e.g. keep reading MQTT anyway

    @classmethod
    async def open(cls, where: str, *, password: str | None = None,
                   busy_timeout_ms: int = 5000, writer: str = "boothwatch") -> Store:
        """The store at `where`, a SQLite path or a PostgreSQL URL (`password` from
        BOOTHWATCH_DB_PASSWORD, else libpq's own), created or migrated to this schema;
        StoreUnavailable, naming it and why, if it cannot be opened. A commit waiting for a
        lock longer than `busy_timeout_ms` fails (and is retried)."""
        backend: Backend
        # imported here, psycopg (the postgres extra) only when [store] url asks for it
        if is_url(where):
            from monitor.store_postgres import PostgresBackend

            backend = await PostgresBackend.open(where, password, lock_timeout_ms=busy_timeout_ms)
        else:
            from monitor.store_sqlite import SQLiteBackend

            backend = await SQLiteBackend.open(where, busy_timeout_ms=busy_timeout_ms)
        store = cls(backend, writer)
        try:
            await store.load_sessions()
            store._mark_value = await store._read_mark()
        except BaseException:
            await backend.close()
            raise
        return store

    async def load_sessions(self) -> None:
        """Which booths have a session open in the store: again when a standby takes the
        site over, after the store was written by the owner before it."""
        self._occupied = {booth: started for booth, started in await self._fetch(
            "SELECT booth, started_at FROM sessions WHERE ended_at IS NULL")}

    async def close(self) -> None:
        await self._backend.close()

    def fence(self, site: str, holder: str, epoch: int | None) -> None:
        """Every write from now on first checks that `holder` still has the lease of `site`
        at `epoch` (PostgreSQL: `monitor.lease`); a refused write raises `LeaseLost`."""
        assert epoch is not None and hasattr(self._backend, "fence")
        self._backend.fence = (site, holder, epoch)

    # --- writes (batched) -------------------------------------------------------------

    def _future(self) -> asyncio.Future[None]:
        if self._batch.done is None:
            self._batch.done = asyncio.get_running_loop().create_future()
        if not self._waking:
            # The writer's step (taking the batch, encoding it, starting the commit: about
            # 0.1 ms) is woken behind the pages submitted with these rows: woken at once it
            # ran in the turn between a page's first step and its body being written.
            # The acknowledgement waits for the commit either way.
            self._waking = True
            after_pages(self._wake)
        return self._batch.done

    def _wake(self) -> None:
        self._waking = False
        self._wakeup.set()

    def add_event(self, row: EventRow) -> asyncio.Future[None]:
        self._batch.events.append(row)
        return self._future()

    def put_booth(self, view: BoothView, now: float) -> asyncio.Future[None]:
        self._batch.booths[view.id] = (view, now)
        open_start = self._occupied.get(view.id)
        if view.occupied and view.session_started_at != open_start:
            if open_start is not None:
                self._batch.sessions.append((view.id, open_start, now))
            assert view.session_started_at is not None
            self._batch.sessions.append((view.id, view.session_started_at, None))
            self._occupied[view.id] = view.session_started_at
        elif not view.occupied and open_start is not None:
            self._batch.sessions.append((view.id, open_start, now))
            self._occupied[view.id] = None
        return self._future()

    def put_incident(
        self, view: IncidentView, new: Iterable[TimelineEntry]
    ) -> asyncio.Future[None]:
        self._batch.incidents[view.id] = view
        self._batch.timeline.extend((view.id, entry) for entry in new)
        return self._future()

    def put_page(self, row: PageRow) -> asyncio.Future[None]:
        self._batch.pages[row.id] = row
        return self._future()

    def add_attempt(self, row: AttemptRow) -> asyncio.Future[None]:
        self._batch.attempts.append(row)
        return self._future()

    def put_duty(self, snapshot: dict[str, Any], now: float) -> asyncio.Future[None]:
        self._batch.duty[snapshot["responder"]] = (snapshot, now)
        return self._future()

    def add_audit(self, at: float, kind: str, subject: str,
                  detail: dict[str, Any]) -> asyncio.Future[None]:
        self._batch.audit.append((at, kind, subject, detail))
        return self._future()

    def mark_receipt(self, receipt: str, status: str, at: float) -> asyncio.Future[None]:
        """The service reports the page delivered to a device, or acknowledged there."""
        self._batch.receipts.append((receipt, status, at))
        return self._future()

    def put_device(self, booth: str, snapshot: dict[str, Any], now: float) -> asyncio.Future[None]:
        self._batch.devices[snapshot["id"]] = (booth, snapshot, now)
        return self._future()

    def barrier(self) -> asyncio.Future[None]:
        """Completes once everything added so far is committed (the writer keeps order)."""
        return self._future()

    def remember(self, key: str, value: str) -> asyncio.Future[None]:
        """Keep `value` in meta, with the next batch (e.g. the site's time zone, for
        `boothwatch report` without a config)."""
        self._batch.meta[key] = value
        return self._future()

    def probe(self) -> asyncio.Future[None]:
        """A tiny write through the writer (for /readyz when nothing else was written)."""
        self._batch.meta["probe"] = str(time.time())
        return self._future()

    def pending(self) -> int:
        """Rows not committed yet: the next batch and whatever a failed commit holds."""
        held = self._failed or self._committing
        return len(self._batch) + (len(held) if held is not None else 0)

    async def run_writer(self) -> None:
        """Commit batches until cancelled; a failed commit is retried, never dropped."""
        delay = 0.05
        while True:
            if self._failed is None:
                await self._wakeup.wait()
            if self._failed is not None:
                # retried alone, not merged with what came since: a failed commit may have
                # landed all the same (the answer to its COMMIT lost), and then only its own
                # rows are stored (`_attempt`); the rest waits in the next batch
                batch, self._failed = self._failed, None
            else:
                self._wakeup.clear()
                batch, self._batch = self._batch, Batch()
                if not len(batch):
                    if batch.done is not None:
                        settle(batch.done)
                    continue
            started = time.perf_counter()
            self._committing = batch  # `drain` commits it if we are cancelled while encoding
            await encode(batch)
            # a commit is never cancelled half-way: shutdown waits for it in `drain`
            self._inflight = asyncio.ensure_future(self._attempt(batch))
            self._inflight_done = batch.done
            try:
                await asyncio.shield(self._inflight)
            except self._retried as exc:
                self._failed, self._committing = batch, None
                self._commit_failed(exc, delay)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 5.0)
                continue
            except asyncio.CancelledError:
                self._inflight.add_done_callback(partial(self._settled, batch=batch))
                raise
            self._committing = None
            delay = 0.05
            self._committed(batch, time.perf_counter() - started)

    async def _attempt(self, batch: Batch) -> None:
        """Commit `batch` once, never twice.

        A connection can break after the server committed, the answer to COMMIT lost: the
        commit fails here yet landed, and committing the batch again would store its events
        without an id, timeline, steps and audit twice. So each commit first moves this
        writer's mark in `meta` from the value last known to a new one (`mark_statement`),
        or does nothing. A mark that moved was moved by a commit whose answer was lost:
        one of this batch's (stored, then: done) or an earlier writer's (the value is
        taken and the batch committed over it). A failed commit whose session is still
        open holds the mark's row, so the next waits for it to end either way."""
        for _ in range(MARK_TRIES):
            batch.mark = Mark(self._mark_key, self._mark_value, secrets.token_hex(8))
            batch.marks.append(batch.mark.value)
            try:
                await self._backend.commit(batch)
            except MarkMoved:
                self._mark_value = await self._read_mark()
                if self._mark_value in batch.marks:
                    log.warning("store_commit_landed", rows=len(batch), store=self.where)
                    return
                continue
            self._mark_value = batch.mark.value
            return
        raise MarkMoved(f"{self._mark_key} moved {MARK_TRIES} times: another process writes "
                        "as this site")

    async def _read_mark(self) -> str | None:
        rows = await self._fetch("SELECT value FROM meta WHERE key = ?", (self._mark_key,))
        return rows[0][0] if rows else None

    def _commit_failed(self, exc: BaseException, retry_in: float) -> None:
        now = time.monotonic()
        self.writable = False
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.commit_failures += 1
        self._trouble.set()
        if self.failing_since is None:
            self.failing_since = self._logged_failure_at = now
            log.error("store_commit_failed", error=self.last_error, pending=self.pending(),
                      retry_in=retry_in, store=self.where)
            if self.on_failed is not None:
                self.on_failed()
        elif now - self._logged_failure_at >= FAILURE_LOG_EVERY:
            self._logged_failure_at = now
            log.error("store_still_failing", error=self.last_error, pending=self.pending(),
                      failing_for=round(now - self.failing_since, 1),
                      failures=self.commit_failures, store=self.where)

    def _committed(self, batch: Batch, seconds: float) -> None:
        if self.failing_since is not None:
            log.warning("store_recovered", rows=len(batch), store=self.where,
                        failed_for=round(time.monotonic() - self.failing_since, 1))
            self.failing_since = None
        self.writable, self.last_error = True, None
        self._trouble.clear()
        self.last_commit_seconds = seconds
        self.last_commit_at = time.monotonic()
        self.commits += 1
        if batch.done is not None:
            settle(batch.done)

    def _settled(self, task: asyncio.Future[None], *, batch: Batch) -> None:
        if not task.cancelled() and task.exception() is None:
            self._committing = None
            self._committed(batch, 0.0)

    async def drain(self) -> None:
        """At shutdown, with the writer stopped: finish the commit under way, then the rest
        (including whatever failed commits held)."""
        if self._inflight is not None:
            with contextlib.suppress(*self._retried):
                await self._inflight  # done, its batch is no longer `_committing`
        # a failed commit's rows, older than the current batch: committed first, on their own
        held = self._failed or self._committing
        self._committing = self._failed = None
        if held is not None:
            await self._attempt(held)
            self._committed(held, 0.0)
        current, self._batch = self._batch, Batch()
        if len(current):
            await self._attempt(current)
            self._committed(current, 0.0)

    async def flush(self) -> None:
        """Wait until everything added so far is committed (the writer commits in order);
        while commits fail, return at once: reads then miss what memory still holds."""
        if len(self._batch):
            await self.settled(self._future())
        elif self._inflight_done is not None:
            await self.settled(self._inflight_done)

    async def settled(self, done: asyncio.Future[None]) -> bool:
        """Wait until `done` is committed (True), or until commits fail (False): the change
        is then held in memory and stored when the store recovers."""
        while not done.done():
            if not self.writable:
                return False
            trouble: asyncio.Future[Any] = asyncio.ensure_future(self._trouble.wait())
            try:
                await asyncio.wait({done, trouble}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                trouble.cancel()
        return True

    # --- reads ------------------------------------------------------------------------

    async def _fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return await self._backend.fetch(sql, args)

    # The restart's reads (`monitor.runtime`): every booth, open incident, device and duty
    # snapshot, each a JSON document: orjson decodes 10,000 booths in half json's time
    # (bench/restart.py).

    async def load_booths(self) -> list[BoothView]:
        return [booth_from_record(record)
                for record in _documents(await self._fetch("SELECT view FROM booths"))]

    async def load_devices(self) -> list[dict[str, Any]]:
        return _documents(await self._fetch("SELECT snapshot FROM devices"))

    async def load_open_incidents(self) -> list[IncidentView]:
        rows = await self._fetch(
            "SELECT view FROM incidents WHERE state != 'resolved' ORDER BY raised_at"
        )
        return [incident_from_record(record) for record in _documents(rows)]

    async def incidents(
        self, open_only: bool, limit: int = 500
    ) -> tuple[list[IncidentView], int]:
        """The newest ``limit`` incidents, and how many there are in all."""
        where = "WHERE state != 'resolved'" if open_only else ""
        rows = await self._fetch(
            f"SELECT view FROM incidents {where} ORDER BY raised_at DESC LIMIT ?", (limit,)
        )
        (total,) = (await self._fetch(f"SELECT count(*) FROM incidents {where}"))[0]
        return [incident_from_record(json.loads(r[0])) for r in rows], int(total)

    async def incident(self, incident_id: str) -> IncidentView | None:
        rows = await self._fetch("SELECT view FROM incidents WHERE id = ?", (incident_id,))
        return incident_from_record(json.loads(rows[0][0])) if rows else None

    async def unsent_pages(self) -> list[PageRow]:
        """Pages of open incidents, and notices, queued or retrying when the service
        stopped: to be sent again."""
        rows = await self._fetch(
            "SELECT p.id, p.incident, p.responder, p.channel, p.level, p.payload, p.status,"
            " p.attempts, p.created_at, p.updated_at, p.last_error, p.kind FROM pages p"
            " JOIN incidents i ON i.id = p.incident"
            " WHERE p.status IN ('queued', 'retrying')"
            " AND (i.state = 'open' OR p.kind != 'page')"
            " ORDER BY p.created_at"
        )
        return [
            PageRow(id=r[0], incident=r[1], responder=r[2], channel=r[3], level=r[4],
                    payload=json.loads(r[5]), status=r[6], attempts=r[7], created_at=r[8],
                    updated_at=r[9], last_error=r[10], kind=r[11])
            for r in rows
        ]

    async def open_receipts(self) -> list[PageRow]:
        """Accepted pages with a receipt whose incident is unresolved (to watch again)."""
        rows = await self._fetch(
            "SELECT p.id, p.incident, p.responder, p.channel, p.level, p.payload, p.status,"
            " p.attempts, p.created_at, p.updated_at, p.receipt FROM pages p"
            " JOIN incidents i ON i.id = p.incident"
            " WHERE p.receipt IS NOT NULL AND p.kind = 'page' AND i.state != 'resolved'"
            " AND p.status IN ('sent', 'delivered') ORDER BY p.created_at"
        )
        return [
            PageRow(id=r[0], incident=r[1], responder=r[2], channel=r[3], level=r[4],
                    payload=json.loads(r[5]), status=r[6], attempts=r[7], created_at=r[8],
                    updated_at=r[9], receipt=r[10])
            for r in rows
        ]

    async def pages(self, incident_id: str) -> list[dict[str, Any]]:
        """The incident's pages and notices, each with its delivery attempts."""
        rows = await self._fetch(
            "SELECT id, kind, responder, channel, level, status, attempts, last_error,"
            " created_at, sent_at, latency, receipt, delivered_at FROM pages"
            " WHERE incident = ? ORDER BY created_at",
            (incident_id,),
        )
        keys = ("id", "kind", "responder", "channel", "level", "status", "attempts",
                "last_error", "created_at", "sent_at", "latency", "receipt", "delivered_at")
        pages = [dict(zip(keys, r, strict=True)) for r in rows]
        attempts = await self._fetch(
            "SELECT a.page, a.number, a.channel, a.ok, a.error, a.latency, a.at"
            " FROM page_attempts a JOIN pages p ON p.id = a.page WHERE p.incident = ?"
            " ORDER BY a.page, a.number", (incident_id,))
        by_page: dict[str, list[dict[str, Any]]] = {}
        for a in attempts:
            by_page.setdefault(a[0], []).append({
                "number": a[1], "channel": a[2], "ok": bool(a[3]), "error": a[4],
                "latency": a[5], "at": a[6]})
        for page in pages:
            page["tries"] = by_page.get(page["id"], [])
        return pages

    async def load_duty(self) -> list[dict[str, Any]]:
        return _documents(await self._fetch("SELECT snapshot FROM duty"))

    async def audit(self, limit: int = 500, subject: str | None = None) -> list[dict[str, Any]]:
        """The newest audit entries (maintenance, suppressed triggers, duty changes)."""
        where, args = ("WHERE subject = ?", (subject, limit)) if subject else ("", (limit,))
        rows = await self._fetch(
            f"SELECT at, kind, subject, detail FROM audit {where} ORDER BY seq DESC LIMIT ?",
            args)
        return [{"at": r[0], "kind": r[1], "subject": r[2], **json.loads(r[3])} for r in rows]

    async def audit_of(self, kind: str, since: float) -> list[dict[str, Any]]:
        """The audit entries of one kind from `since` on, oldest first."""
        rows = await self._fetch(
            "SELECT at, kind, subject, detail FROM audit WHERE kind = ? AND at >= ?"
            " ORDER BY at, seq", (kind, since))
        return [{"at": r[0], "kind": r[1], "subject": r[2], **json.loads(r[3])} for r in rows]

    async def recent_outcomes(self, run: int) -> list[tuple[str, str]]:
        """(booth, outcome) of each booth's last `run` outcomes a person recorded."""
        sql, params = recent_outcomes(math.inf, (), run)
        return [(r[0], r[1]) for r in await self._fetch(sql, tuple(params))]

    async def last_deliveries(self) -> list[tuple[str, str, float]]:
        """(responder, channel, when it last delivered to them), for every pair that did."""
        rows = await self._fetch("SELECT responder, channel, max(sent_at) FROM pages"
                                 " WHERE sent_at IS NOT NULL GROUP BY responder, channel")
        return [(r[0], r[1], float(r[2])) for r in rows]

    async def latest_time(self) -> float | None:
        """The newest time anything was recorded at (events, booths, pages, devices)."""
        rows = await self._fetch(
            "SELECT MAX(t) FROM (SELECT MAX(received_at) AS t FROM events"
            " UNION ALL SELECT MAX(updated_at) FROM booths"
            " UNION ALL SELECT MAX(updated_at) FROM pages"
            " UNION ALL SELECT MAX(updated_at) FROM devices) AS latest")
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    async def event_ids_since(self, since: float, limit: int | None = None
                              ) -> list[tuple[str, str]]:
        """(booth, event id) of the events received from `since` on, oldest first; with
        `limit`, the newest `limit` of them (what the runtime's memory of ids can hold: more
        would only lengthen the start)."""
        sql = ("SELECT booth, event_id FROM events WHERE event_id IS NOT NULL"
               " AND received_at >= ? ORDER BY received_at DESC")
        rows = await self._fetch(sql + (" LIMIT ?" if limit is not None else ""),
                                 (since,) if limit is None else (since, limit))
        return [(r[0], r[1]) for r in reversed(rows)]

    async def count(self, table: str) -> int:
        if table not in ("events", "incidents", "pages", "sessions", "timeline", "steps",
                         "page_attempts", "audit", "duty", "used_ack_links"):
            raise ValueError(table)
        rows = await self._fetch(f"SELECT count(*) FROM {table}")
        return int(rows[0][0])

    async def secret(self, name: str, make: str) -> str:
        """A value kept in meta (e.g. the ack-link key when no env secret is set). Written
        only when missing (a restart onto a full disk reads it); when another process
        (PostgreSQL) wrote it first, theirs is the one."""
        rows = await self._fetch("SELECT value FROM meta WHERE key = ?", (name,))
        if not rows:
            await self._backend.apart([(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING",
                (name, make))])
            rows = await self._fetch("SELECT value FROM meta WHERE key = ?", (name,))
        return str(rows[0][0])

    # --- used ack links -------------------------------------------------------------

    async def use_ack_link(self, digest: str, use: Use, forget_before: float) -> bool:
        """Record that the ack link `digest` acted, committed when this returns; False if
        it was recorded already. Forgets the uses of links signed and used before
        `forget_before` (expired links need no record).

        Apart from the batch writer (`Backend.apart`): its transaction may be open across
        several awaits, and a statement slipped into it would commit (or roll back) with
        that batch instead of now.
        """
        _, added = await self._backend.apart([
            ("DELETE FROM used_ack_links WHERE used_at < ? AND signed_at < ?",
             (forget_before, forget_before)),
            ("INSERT INTO used_ack_links(digest, incident, responder, used_at, via, signed_at)"
             " VALUES (?,?,?,?,?,?) ON CONFLICT(digest) DO NOTHING",
             (digest, use.incident, use.responder, use.at, use.via, use.signed_at)),
        ])
        return added == 1

    async def used_ack_links(self, since: float) -> list[tuple[str, Use]]:
        """The ack links that acted, except those signed and used before `since`."""
        rows = await self._fetch(
            "SELECT digest, incident, responder, used_at, via, signed_at FROM used_ack_links"
            " WHERE used_at >= ? OR signed_at >= ?", (since, since))
        return [(r[0], Use(r[1], r[2], r[3], r[4], r[5])) for r in rows]

    async def unwritable(self, idle: float = 10.0, timeout: float = 2.0) -> str | None:
        """Why the store cannot take writes now (for /readyz), or None.

        The writer's last attempt decides; when nothing was committed for `idle`
        seconds, a probe row goes through the writer first, so a disk that filled up
        while all was quiet is found. Never writes beside the writer, whose open
        transaction it would join.
        """
        if self.writable and time.monotonic() - self.last_commit_at >= idle:
            try:
                async with asyncio.timeout(timeout):
                    await self.settled(self.probe())
            except TimeoutError:
                if self.writable:
                    return f"no commit within {timeout:g}s"
        if self.writable:
            return None
        since = time.monotonic() - (self.failing_since or time.monotonic())
        return f"{self.last_error} (for {since:.0f}s, {self.pending()} rows held in memory)"


async def encode(batch: Batch) -> None:
    """Make the batch's rows on the event loop, `ENCODE_SLICE` at a time, a turn of the loop
    in between. The batch is the writer's alone by now and what it holds does not change
    (frozen views, rows and snapshots made for it), so the rows are what they were when
    each was put."""
    stop = time.perf_counter() + ENCODE_SLICE
    for _ in batch.encode():
        if time.perf_counter() >= stop:
            await asyncio.sleep(0)
            stop = time.perf_counter() + ENCODE_SLICE


def schema_problem(where: str, password: str | None, env: Mapping[str, str]) -> str | None:
    """What keeps `boothwatch run` from using the store at `where`, found by reading it (for
    check-config): a PostgreSQL server it cannot connect to, a schema newer than this code.
    A SQLite file that cannot be read is `monitor.access`'s to explain; `env` holds libpq's
    own variables (PGPASSFILE...), as the service will have them."""
    if is_url(where):
        from monitor.store_postgres import schema_version

        try:
            found = schema_version(where, password, env)
        except StoreUnavailable as exc:
            return str(exc)
    else:
        from monitor.store_sqlite import schema_version as sqlite_version

        found = sqlite_version(where)
    if found is not None and found > SCHEMA_VERSION:
        return str(SchemaTooNew.found(where, found))
    return None


def _documents(rows: Sequence[Row]) -> list[Any]:
    """The JSON document in the first column of each row, decoded: by orjson, or json's
    way if orjson refuses one (NaN, an integer past 64 bits: what json wrote before)."""
    try:
        return [orjson.loads(r[0]) for r in rows]
    except orjson.JSONDecodeError:
        return [json.loads(r[0]) for r in rows]


def open_reader(where: str, password: str | None = None) -> Reader:
    """The store at `where` (a path or a URL) opened read-only; StoreUnavailable, saying
    why, if it is missing, unreachable or no boothwatch store."""
    if is_url(where):
        from monitor.store_postgres import Reader as PostgresReader

        return PostgresReader.open(where, password)
    from monitor.store_sqlite import Reader as SQLiteReader

    return SQLiteReader.open(where)
