"""SQLite store (aiosqlite, WAL): events, sessions, incidents with their timeline and
protocol steps, pages.

Writes are batched: callers add rows to the current batch and get a future that
completes when that batch is committed. One writer task commits whatever has
gathered while the previous commit ran, so a burst becomes a few large
transactions instead of many small ones. The MQTT adapter acknowledges a
message to the broker only when the batch holding its event has committed.

A failed commit is never dropped: the batch is kept, merged with what came
since, and retried with backoff; meanwhile ``writable`` is False (``/readyz``
says so) and nothing is acknowledged to the broker, which keeps the messages.
The service goes on from memory (the core pages without waiting for the disk);
when the store recovers (a lock released, disk space freed) the next commit
catches up with everything held since the trouble began. Failures are counted
(``commit_failures``) and logged at once, then at most every
``FAILURE_LOG_EVERY`` seconds while they last, and once more on recovery.

SQLITE_FULL and SQLITE_IOERR may roll a transaction back themselves or leave it
open; a ROLLBACK is always attempted and its own error ignored, and a commit
never starts inside a transaction left open by an earlier failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiosqlite
import structlog

from alerts.tokens import Use
from monitor.access import User, store_problem
from monitor.codec import booth_from_record, booth_record, incident_from_record, incident_record
from monitor.core.booth import BoothView
from monitor.core.fatigue import ACTIONABLE, NON_ACTIONABLE
from monitor.core.incident import IncidentView, TimelineEntry
from monitor.exits import CANTCREAT, OperatorError

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 4  # 3: used_ack_links; 4: steps
SITE_TIMEZONE = "site_timezone"  # the meta key of the site's time zone, for reports
ROSTER_SHIFTS = "roster_shifts"  # the meta key of the roster's shifts (JSON), for reports
FAILURE_LOG_EVERY = 30.0  # seconds between "still failing" log lines during an outage

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    booth TEXT NOT NULL,
    kind TEXT NOT NULL,
    event_id TEXT,
    device TEXT,
    ts REAL,
    received_at REAL NOT NULL,
    payload TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_booth_id ON events(booth, event_id)
    WHERE event_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_received ON events(received_at);
CREATE TABLE IF NOT EXISTS booths (
    id TEXT PRIMARY KEY,
    view TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    booth TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    UNIQUE (booth, started_at)
);
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    booth TEXT NOT NULL,
    priority TEXT NOT NULL,
    state TEXT NOT NULL,
    triggers TEXT NOT NULL,
    level INTEGER NOT NULL,
    max_level INTEGER NOT NULL,
    raised_at REAL NOT NULL,
    acknowledged_at REAL,
    acknowledged_by TEXT,
    presence_at REAL,
    resolved_at REAL,
    resolved_by TEXT,
    outcome TEXT,
    view TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_state ON incidents(state);
CREATE INDEX IF NOT EXISTS incidents_raised ON incidents(raised_at);
CREATE TABLE IF NOT EXISTS timeline (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    incident TEXT NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS timeline_incident ON timeline(incident);
CREATE TABLE IF NOT EXISTS steps (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    incident TEXT NOT NULL,
    at REAL NOT NULL,
    step TEXT NOT NULL,
    responder TEXT NOT NULL,
    count INTEGER,
    note TEXT,
    via TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS steps_incident ON steps(incident, step, at);
CREATE TABLE IF NOT EXISTS pages (
    id TEXT PRIMARY KEY,
    incident TEXT NOT NULL,
    responder TEXT NOT NULL,
    channel TEXT NOT NULL,
    level INTEGER NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    sent_at REAL,
    latency REAL
);
CREATE INDEX IF NOT EXISTS pages_incident ON pages(incident);
CREATE INDEX IF NOT EXISTS pages_status ON pages(status);
CREATE TABLE IF NOT EXISTS page_attempts (
    page TEXT NOT NULL,
    number INTEGER NOT NULL,
    channel TEXT NOT NULL,
    ok INTEGER NOT NULL,
    error TEXT,
    latency REAL NOT NULL,
    receipt TEXT,
    at REAL NOT NULL,
    PRIMARY KEY (page, number)
);
CREATE TABLE IF NOT EXISTS duty (
    responder TEXT PRIMARY KEY,
    snapshot TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_at ON audit(at);
CREATE INDEX IF NOT EXISTS audit_kind ON audit(kind, at);
CREATE TABLE IF NOT EXISTS used_ack_links (
    digest TEXT PRIMARY KEY,
    incident TEXT NOT NULL,
    responder TEXT NOT NULL,
    used_at REAL NOT NULL,
    via TEXT NOT NULL,
    signed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS used_ack_links_used ON used_ack_links(used_at);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    booth TEXT NOT NULL,
    online INTEGER NOT NULL,
    last_seen REAL,
    battery INTEGER,
    snapshot TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""


def recent_outcomes(before: float, booths: Sequence[str], run: int
                    ) -> tuple[str, list[Any]]:
    """The SQL and parameters of each booth's last `run` outcomes a person recorded on
    incidents raised before `before`, oldest first: the alarm-fatigue history
    (`monitor.core.fatigue`) of `boothwatch report` and of the service's metrics."""
    classed = sorted(ACTIONABLE | NON_ACTIONABLE)
    where = f" AND booth IN ({','.join('?' * len(booths))})" if booths else ""
    return ("SELECT booth, outcome FROM (SELECT booth, outcome, raised_at, row_number() OVER"
            " (PARTITION BY booth ORDER BY raised_at DESC) AS n FROM incidents"
            f" WHERE raised_at < ? AND outcome IN ({','.join('?' * len(classed))}){where})"
            " WHERE n <= ? ORDER BY booth, raised_at", [before, *classed, *booths, run])


class StoreUnavailable(OperatorError):
    """The store cannot be opened or created: the message names the path and why."""

    status = CANTCREAT

    @classmethod
    def at(cls, path: str, error: Exception) -> StoreUnavailable:
        # SQLite says "unable to open database file", without the path or the reason
        where = os.path.abspath(path)
        why = store_problem(path, f"user {User.current().name}")
        return cls(f"cannot open the store {where}: "
                   + (f"{why} (SQLite: {error})" if why else str(error)), path=where)


@dataclass(frozen=True, slots=True)
class EventRow:
    booth: str
    kind: str
    event_id: str | None
    device: str | None
    ts: float | None
    received_at: float
    payload: str


@dataclass(slots=True)
class PageRow:
    id: str
    incident: str
    responder: str
    channel: str
    level: int
    payload: dict[str, Any]
    status: str  # queued | retrying | sent | delivered | acknowledged | failed
    attempts: int
    created_at: float
    updated_at: float
    last_error: str | None = None
    sent_at: float | None = None
    latency: float | None = None
    kind: str = "page"  # page | notice
    receipt: str | None = None  # the service's id (a Pushover receipt) once accepted
    delivered_at: float | None = None  # the service says the device has it


@dataclass(frozen=True, slots=True)
class AttemptRow:
    page: str
    number: int
    channel: str
    ok: bool
    error: str | None
    latency: float
    receipt: str | None
    at: float


@dataclass(slots=True)
class _Batch:
    events: list[EventRow] = field(default_factory=list)
    booths: dict[str, tuple[BoothView, float]] = field(default_factory=dict)
    sessions: list[tuple[str, float, float | None]] = field(default_factory=list)
    incidents: dict[str, IncidentView] = field(default_factory=dict)
    timeline: list[tuple[str, TimelineEntry]] = field(default_factory=list)
    pages: dict[str, PageRow] = field(default_factory=dict)
    devices: dict[str, tuple[str, dict[str, Any], float]] = field(default_factory=dict)
    attempts: list[AttemptRow] = field(default_factory=list)
    duty: dict[str, tuple[dict[str, Any], float]] = field(default_factory=dict)
    audit: list[tuple[float, str, str, dict[str, Any]]] = field(default_factory=list)
    receipts: list[tuple[str, str, float]] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)  # the readiness probe
    done: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return (
            len(self.events) + len(self.booths) + len(self.sessions) + len(self.incidents)
            + len(self.timeline) + len(self.pages) + len(self.devices) + len(self.attempts)
            + len(self.duty) + len(self.audit) + len(self.receipts) + len(self.meta)
        )

    def absorb(self, later: _Batch) -> None:
        """Fold a later batch into this one (after a failed commit), keeping order."""
        self.events += later.events
        self.booths.update(later.booths)
        self.sessions += later.sessions
        self.incidents.update(later.incidents)
        self.timeline += later.timeline
        self.pages.update(later.pages)
        self.devices.update(later.devices)
        self.attempts += later.attempts
        self.duty.update(later.duty)
        self.audit += later.audit
        self.receipts += later.receipts
        self.meta.update(later.meta)
        if later.done is not None:
            if self.done is None:
                self.done = later.done
            else:  # whoever waits on the later batch now waits on this merged one
                later_done = later.done
                self.done.add_done_callback(lambda _f: _settle(later_done))


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__}")


class Store:
    def __init__(self, db: aiosqlite.Connection, path: str) -> None:
        self._db = db
        self.path = path
        self._batch = _Batch()
        self._wakeup = asyncio.Event()
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
        self._failed: _Batch | None = None  # held for the next attempt, with what came since
        self._committing: _Batch | None = None
        self._inflight: asyncio.Future[None] | None = None
        self._inflight_done: asyncio.Future[None] | None = None
        self.on_committed: Callable[[], None] | None = None  # e.g. resume reading MQTT
        self._links_db: aiosqlite.Connection | None = None  # see `use_ack_link`
        self.on_failed: Callable[[], None] | None = None  # e.g. keep reading MQTT anyway

    @classmethod
    async def open(cls, path: str, busy_timeout_ms: int = 5000) -> Store:
        """The store at `path`, created if new; StoreUnavailable, naming the path and why,
        if it cannot be opened (a missing directory, no permission, a full disk)."""
        db: aiosqlite.Connection | None = None
        try:
            # a failed connect leaves aiosqlite's (0.22) worker thread to post its error to
            # the event loop after it has closed, a traceback at exit (omnilib/aiosqlite
            # PR 389): a path that cannot be opened fails here first, with no thread
            await asyncio.to_thread(lambda: sqlite3.connect(path).close())
            db = await aiosqlite.connect(path, isolation_level=None)
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")  # a committed event survives power loss
            await db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            if not await _schema_current(db):
                # only a new or older store is written to here: a current one opens
                # read-only, so a restart while the file is locked or the disk is full
                # still pages
                await db.executescript(SCHEMA)
                await _migrate(db)
                await db.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
        except (sqlite3.Error, OSError) as exc:
            if db is not None:
                with contextlib.suppress(sqlite3.Error, OSError):
                    await db.close()
            raise StoreUnavailable.at(path, exc) from exc
        store = cls(db, path)
        for booth, started in await store._fetch(
            "SELECT booth, started_at FROM sessions WHERE ended_at IS NULL"
        ):
            store._occupied[booth] = started
        return store

    async def close(self) -> None:
        if self._links_db is not None:
            await self._links_db.close()
        await self._db.close()

    # --- writes (batched) -------------------------------------------------------------

    def _future(self) -> asyncio.Future[None]:
        if self._batch.done is None:
            self._batch.done = asyncio.get_running_loop().create_future()
        self._wakeup.set()
        return self._batch.done

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
            self._wakeup.clear()
            batch, self._batch = self._batch, _Batch()
            if self._failed is not None:
                self._failed.absorb(batch)
                batch, self._failed = self._failed, None
            if not len(batch):
                if batch.done is not None:
                    _settle(batch.done)
                continue
            started = time.perf_counter()
            # a commit is never cancelled half-way: shutdown waits for it in `drain`
            self._committing = batch
            self._inflight = asyncio.ensure_future(self._commit(batch))
            self._inflight_done = batch.done
            try:
                await asyncio.shield(self._inflight)
            except (aiosqlite.Error, OSError) as exc:
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

    def _commit_failed(self, exc: BaseException, retry_in: float) -> None:
        now = time.monotonic()
        self.writable = False
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.commit_failures += 1
        self._trouble.set()
        if self.failing_since is None:
            self.failing_since = self._logged_failure_at = now
            log.error("store_commit_failed", error=self.last_error, pending=self.pending(),
                      retry_in=retry_in, path=self.path)
            if self.on_failed is not None:
                self.on_failed()
        elif now - self._logged_failure_at >= FAILURE_LOG_EVERY:
            self._logged_failure_at = now
            log.error("store_still_failing", error=self.last_error, pending=self.pending(),
                      failing_for=round(now - self.failing_since, 1),
                      failures=self.commit_failures, path=self.path)

    def _committed(self, batch: _Batch, seconds: float) -> None:
        if self.failing_since is not None:
            log.warning("store_recovered", rows=len(batch), path=self.path,
                        failed_for=round(time.monotonic() - self.failing_since, 1))
            self.failing_since = None
        self.writable, self.last_error = True, None
        self._trouble.clear()
        self.last_commit_seconds = seconds
        self.last_commit_at = time.monotonic()
        self.commits += 1
        if batch.done is not None:
            _settle(batch.done)
        if self.on_committed is not None:
            self.on_committed()

    def _settled(self, task: asyncio.Future[None], *, batch: _Batch) -> None:
        if not task.cancelled() and task.exception() is None:
            self._committing = None
            self._committed(batch, 0.0)

    async def drain(self) -> None:
        """At shutdown, with the writer stopped: finish the commit under way, then the rest
        (including whatever failed commits held)."""
        batch = _Batch()
        if self._inflight is not None:
            with contextlib.suppress(aiosqlite.Error, OSError):
                await self._inflight
        for held in (self._committing, self._failed):
            if held is not None:  # a failed commit's rows: older than the current batch
                held.absorb(batch)
                batch = held
        self._committing = self._failed = None
        current, self._batch = self._batch, _Batch()
        batch.absorb(current)
        if len(batch):
            await self._commit(batch)
            self._committed(batch, 0.0)

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

    async def _commit(self, b: _Batch) -> None:
        db = self._db
        await _rollback(db)  # never commit on top of what an earlier failure left open
        await db.execute("BEGIN IMMEDIATE")
        try:
            # one statement per table: each row would otherwise make the writer thread and
            # the event loop trade the GIL, which under load costs far more than the insert
            if b.events:
                await db.execute(
                    "INSERT OR IGNORE INTO events"
                    "(booth, kind, event_id, device, ts, received_at, payload)"
                    " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
                    " json_extract(value, '$[2]'), json_extract(value, '$[3]'),"
                    " json_extract(value, '$[4]'), json_extract(value, '$[5]'),"
                    " json_extract(value, '$[6]') FROM json_each(?)",
                    (dumps([[e.booth, e.kind, e.event_id, e.device, e.ts, e.received_at,
                             e.payload] for e in b.events]),),
                )
            if b.booths:
                await db.execute(
                    "INSERT INTO booths(id, view, updated_at)"
                    " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
                    " json_extract(value, '$[2]') FROM json_each(?) WHERE true"
                    " ON CONFLICT(id) DO UPDATE SET view=excluded.view,"
                    " updated_at=excluded.updated_at",
                    (dumps([[bid, dumps(booth_record(view)), at]
                            for bid, (view, at) in b.booths.items()]),),
                )
            if b.sessions:
                await db.execute(
                    "INSERT INTO sessions(booth, started_at, ended_at)"
                    " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
                    " json_extract(value, '$[2]') FROM json_each(?) WHERE true"
                    " ON CONFLICT(booth, started_at) DO UPDATE SET ended_at=excluded.ended_at",
                    (dumps(b.sessions),),
                )
            if b.incidents:
                await db.executemany(
                    "INSERT INTO incidents(id, booth, priority, state, triggers, level,"
                    " max_level, raised_at, acknowledged_at, acknowledged_by, presence_at,"
                    " resolved_at, resolved_by, outcome, view)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT(id) DO UPDATE SET priority=excluded.priority,"
                    " state=excluded.state, triggers=excluded.triggers, level=excluded.level,"
                    " max_level=excluded.max_level, acknowledged_at=excluded.acknowledged_at,"
                    " acknowledged_by=excluded.acknowledged_by,"
                    " presence_at=excluded.presence_at, resolved_at=excluded.resolved_at,"
                    " resolved_by=excluded.resolved_by, outcome=excluded.outcome,"
                    " view=excluded.view",
                    [(v.id, v.booth, v.priority, v.state, dumps(v.triggers), v.level,
                      v.max_level, v.raised_at, v.acknowledged_at, v.acknowledged_by,
                      v.presence_at, v.resolved_at, v.resolved_by, v.outcome,
                      dumps(incident_record(v)))
                     for v in b.incidents.values()],
                )
            if b.timeline:
                await db.executemany(
                    "INSERT INTO timeline(incident, at, kind, detail) VALUES (?,?,?,?)",
                    [(iid, e.at, e.kind, dumps(e.detail)) for iid, e in b.timeline],
                )
                # protocol steps also in a table of their own, for reports to query
                steps = [(iid, e.at, e.detail["step"], e.detail["responder"],
                          e.detail.get("count"), e.detail.get("note"), e.detail["via"])
                         for iid, e in b.timeline if e.kind == "step"]
                if steps:
                    await db.executemany(
                        "INSERT INTO steps(incident, at, step, responder, count, note, via)"
                        " VALUES (?,?,?,?,?,?,?)", steps)
            if b.pages:
                await db.executemany(
                    "INSERT INTO pages(id, incident, responder, channel, level, payload, status,"
                    " attempts, last_error, created_at, updated_at, sent_at, latency, kind,"
                    " receipt, delivered_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT(id) DO UPDATE SET status=excluded.status,"
                    " channel=excluded.channel,"
                    " attempts=excluded.attempts, last_error=excluded.last_error,"
                    " updated_at=excluded.updated_at,"
                    " sent_at=coalesce(excluded.sent_at, pages.sent_at),"
                    " latency=coalesce(excluded.latency, pages.latency),"
                    " receipt=coalesce(excluded.receipt, pages.receipt),"
                    " delivered_at=coalesce(excluded.delivered_at, pages.delivered_at)",
                    [(p.id, p.incident, p.responder, p.channel, p.level, dumps(p.payload),
                      p.status, p.attempts, p.last_error, p.created_at, p.updated_at,
                      p.sent_at, p.latency, p.kind, p.receipt, p.delivered_at)
                     for p in b.pages.values()],
                )
            if b.attempts:
                await db.executemany(
                    "INSERT OR REPLACE INTO page_attempts(page, number, channel, ok, error,"
                    " latency, receipt, at) VALUES (?,?,?,?,?,?,?,?)",
                    [(a.page, a.number, a.channel, int(a.ok), a.error, a.latency, a.receipt,
                      a.at) for a in b.attempts],
                )
            if b.duty:
                await db.executemany(
                    "INSERT INTO duty(responder, snapshot, updated_at) VALUES (?,?,?)"
                    " ON CONFLICT(responder) DO UPDATE SET snapshot=excluded.snapshot,"
                    " updated_at=excluded.updated_at",
                    [(rid, dumps(snap), at) for rid, (snap, at) in b.duty.items()],
                )
            if b.receipts:
                await db.executemany(
                    "UPDATE pages SET status = CASE WHEN status = 'acknowledged' THEN status"
                    " ELSE ? END, delivered_at = coalesce(delivered_at, ?), updated_at = ?"
                    " WHERE receipt = ?",
                    [(status, at, at, receipt) for receipt, status, at in b.receipts],
                )
            if b.audit:
                await db.executemany(
                    "INSERT INTO audit(at, kind, subject, detail) VALUES (?,?,?,?)",
                    [(at, kind, subject, dumps(detail)) for at, kind, subject, detail in b.audit],
                )
            if b.devices:
                await db.execute(
                    "INSERT INTO devices(id, booth, online, last_seen, battery, snapshot,"
                    " updated_at) SELECT json_extract(value, '$[0]'),"
                    " json_extract(value, '$[1]'), json_extract(value, '$[2]'),"
                    " json_extract(value, '$[3]'), json_extract(value, '$[4]'),"
                    " json_extract(value, '$[5]'), json_extract(value, '$[6]')"
                    " FROM json_each(?) WHERE true ON CONFLICT(id) DO UPDATE SET"
                    " booth=excluded.booth, online=excluded.online,"
                    " last_seen=excluded.last_seen, battery=excluded.battery,"
                    " snapshot=excluded.snapshot, updated_at=excluded.updated_at",
                    (dumps([[did, booth, int(snap["online"]), snap["last_seen"],
                             snap["battery"], dumps(snap), at]
                            for did, (booth, snap, at) in b.devices.items()]),),
                )
            if b.meta:
                await db.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?)"
                    " ON CONFLICT(key) DO UPDATE SET value=excluded.value", b.meta.items())
            await db.execute("COMMIT")
        except BaseException:
            await _rollback(db)
            raise

    # --- reads ------------------------------------------------------------------------

    async def _fetch(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        async with self._db.execute(sql, args) as cur:
            return list(await cur.fetchall())

    async def load_booths(self) -> list[BoothView]:
        return [booth_from_record(json.loads(r[0]))
                for r in await self._fetch("SELECT view FROM booths")]

    async def load_devices(self) -> list[dict[str, Any]]:
        return [json.loads(r[0]) for r in await self._fetch("SELECT snapshot FROM devices")]

    async def load_open_incidents(self) -> list[IncidentView]:
        rows = await self._fetch(
            "SELECT view FROM incidents WHERE state != 'resolved' ORDER BY raised_at"
        )
        return [incident_from_record(json.loads(r[0])) for r in rows]

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
        return [json.loads(r[0]) for r in await self._fetch("SELECT snapshot FROM duty")]

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
            " UNION ALL SELECT MAX(updated_at) FROM devices)")
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    async def event_ids_since(self, since: float) -> list[tuple[str, str]]:
        rows = await self._fetch(
            "SELECT booth, event_id FROM events WHERE event_id IS NOT NULL AND received_at >= ?",
            (since,),
        )
        return [(r[0], r[1]) for r in rows]

    async def count(self, table: str) -> int:
        if table not in ("events", "incidents", "pages", "sessions", "timeline", "steps",
                         "page_attempts", "audit", "duty", "used_ack_links"):
            raise ValueError(table)
        rows = await self._fetch(f"SELECT count(*) FROM {table}")
        return int(rows[0][0])

    async def secret(self, name: str, make: str) -> str:
        """A value kept in meta (e.g. the ack-link key when no env secret is set)."""
        rows = await self._fetch("SELECT value FROM meta WHERE key = ?", (name,))
        if rows:
            return str(rows[0][0])
        await self._db.execute("INSERT INTO meta(key, value) VALUES (?, ?)", (name, make))
        return make

    # --- used ack links -------------------------------------------------------------

    async def use_ack_link(self, digest: str, use: Use, forget_before: float) -> bool:
        """Record that the ack link `digest` acted, committed when this returns; False if
        it was recorded already. Forgets the uses of links signed and used before
        `forget_before` (expired links need no record).

        On a connection of its own: the batch writer's transactions span several awaits
        on the main one, and a statement slipped in between would commit (or roll back)
        with that batch instead of now.
        """
        if self._links_db is None:
            self._links_db = await aiosqlite.connect(self.path, isolation_level=None)
            await self._links_db.execute("PRAGMA synchronous=FULL")
            await self._links_db.execute("PRAGMA busy_timeout=5000")
        db = self._links_db
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.execute("DELETE FROM used_ack_links WHERE used_at < ? AND signed_at < ?",
                             (forget_before, forget_before))
            cursor = await db.execute(
                "INSERT OR IGNORE INTO used_ack_links(digest, incident, responder, used_at, via,"
                " signed_at) VALUES (?,?,?,?,?,?)",
                (digest, use.incident, use.responder, use.at, use.via, use.signed_at))
            await db.execute("COMMIT")
        except BaseException:
            await _rollback(db)
            raise
        return cursor.rowcount == 1

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


async def _rollback(db: aiosqlite.Connection) -> None:
    if db.in_transaction:
        # SQLITE_FULL may have rolled it back already (then ROLLBACK itself fails); the
        # error that matters is the one being raised
        with contextlib.suppress(aiosqlite.Error, OSError):
            await db.execute("ROLLBACK")


async def _schema_current(db: aiosqlite.Connection) -> bool:
    """Every table, index and column of this version is there (reading only)."""
    async with db.execute("SELECT name FROM sqlite_master") as cur:
        have = {row[0] for row in await cur.fetchall()}
    if not set(_SCHEMA_NAMES) <= have:
        return False
    async with db.execute("SELECT value FROM meta WHERE key = 'schema_version'") as cur:
        row = await cur.fetchone()
    return row is not None and row[0] == str(SCHEMA_VERSION) and not await _missing_columns(db)


_SCHEMA_NAMES = re.findall(r"CREATE (?:UNIQUE )?(?:TABLE|INDEX) IF NOT EXISTS (\w+)", SCHEMA)
_PAGES_COLUMNS = (("kind", "TEXT NOT NULL DEFAULT 'page'"), ("receipt", "TEXT"),
                  ("delivered_at", "REAL"))


async def _missing_columns(db: aiosqlite.Connection) -> list[tuple[str, str]]:
    async with db.execute("PRAGMA table_info(pages)") as cur:
        have = {row[1] for row in await cur.fetchall()}
    return [(column, decl) for column, decl in _PAGES_COLUMNS if column not in have]


async def _migrate(db: aiosqlite.Connection) -> None:
    """Bring a store made by an older version up to this schema (columns added since).

    Tables added since (``used_ack_links`` in version 3, ``steps`` in 4) come from SCHEMA,
    which creates what is missing whenever `_schema_current` finds something missing. An
    older store has no steps to copy: the protocol came with the table.
    """
    for column, decl in await _missing_columns(db):
        await db.execute(f"ALTER TABLE pages ADD COLUMN {column} {decl}")
    await db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                     (str(SCHEMA_VERSION),))


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
