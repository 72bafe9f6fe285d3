"""SQLite store (aiosqlite, WAL): events, sessions, incidents with their timeline, pages.

Writes are batched: callers add rows to the current batch and get a future that
completes when that batch is committed. One writer task commits whatever has
gathered while the previous commit ran, so a burst becomes a few large
transactions instead of many small ones. The MQTT adapter acknowledges a
message to the broker only when the batch holding its event has committed.

A failed commit is never dropped: the batch is kept, merged with what came
since, and retried with backoff; meanwhile ``writable`` is False (``/readyz``
says so) and nothing is acknowledged to the broker, which keeps the messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import aiosqlite
import structlog

from monitor.booth import BoothView
from monitor.incident import IncidentView, TimelineEntry

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 2

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
    done: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return (
            len(self.events) + len(self.booths) + len(self.sessions) + len(self.incidents)
            + len(self.timeline) + len(self.pages) + len(self.devices) + len(self.attempts)
            + len(self.duty) + len(self.audit) + len(self.receipts)
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
        self.commits = 0
        self._inflight: asyncio.Future[None] | None = None
        self._inflight_done: asyncio.Future[None] | None = None
        self.on_committed: Callable[[], None] | None = None  # e.g. resume reading MQTT

    @classmethod
    async def open(cls, path: str, busy_timeout_ms: int = 5000) -> Store:
        db = await aiosqlite.connect(path, isolation_level=None)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=FULL")  # a committed event survives power loss
        await db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        await db.executescript(SCHEMA)
        await _migrate(db)
        await db.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
        store = cls(db, path)
        for booth, started in await store._fetch(
            "SELECT booth, started_at FROM sessions WHERE ended_at IS NULL"
        ):
            store._occupied[booth] = started
        return store

    async def close(self) -> None:
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

    def pending(self) -> int:
        return len(self._batch)

    async def run_writer(self) -> None:
        """Commit batches until cancelled; a failed commit is retried, never dropped."""
        failed: _Batch | None = None
        delay = 0.05
        while True:
            if failed is None:
                await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._batch = self._batch, _Batch()
            if failed is not None:
                failed.absorb(batch)
                batch, failed = failed, None
            if not len(batch):
                if batch.done is not None:
                    _settle(batch.done)
                continue
            started = time.perf_counter()
            # a commit is never cancelled half-way: shutdown waits for it in `drain`
            self._inflight = asyncio.ensure_future(self._commit(batch))
            self._inflight_done = batch.done
            try:
                await asyncio.shield(self._inflight)
            except (aiosqlite.Error, OSError) as exc:
                self.writable = False
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("store_commit_failed", error=self.last_error, retry_in=delay)
                failed = batch
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 5.0)
                continue
            except asyncio.CancelledError:
                self._inflight.add_done_callback(partial(self._settled, batch=batch))
                raise
            delay = 0.05
            self._committed(batch, time.perf_counter() - started)

    def _committed(self, batch: _Batch, seconds: float) -> None:
        self.writable, self.last_error = True, None
        self.last_commit_seconds = seconds
        self.commits += 1
        if batch.done is not None:
            _settle(batch.done)
        if self.on_committed is not None:
            self.on_committed()

    def _settled(self, task: asyncio.Future[None], *, batch: _Batch) -> None:
        if not task.cancelled() and task.exception() is None:
            self._committed(batch, 0.0)

    async def drain(self) -> None:
        """At shutdown, with the writer stopped: finish the commit under way, then the rest."""
        if self._inflight is not None:
            with contextlib.suppress(aiosqlite.Error, OSError):
                await self._inflight
        batch, self._batch = self._batch, _Batch()
        if len(batch):
            await self._commit(batch)
            self._committed(batch, 0.0)

    async def flush(self) -> None:
        """Wait until everything added so far is committed (the writer commits in order)."""
        if len(self._batch):
            await self._future()
        elif self._inflight_done is not None:
            await asyncio.shield(self._inflight_done)

    async def _commit(self, b: _Batch) -> None:
        db = self._db
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
                    (dumps([[bid, dumps(booth_snapshot(view)), at]
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
                      v.presence_at, v.resolved_at, v.resolved_by, v.outcome, dumps(asdict(v)))
                     for v in b.incidents.values()],
                )
            if b.timeline:
                await db.executemany(
                    "INSERT INTO timeline(incident, at, kind, detail) VALUES (?,?,?,?)",
                    [(iid, e.at, e.kind, dumps(e.detail)) for iid, e in b.timeline],
                )
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
            await db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise

    # --- reads ------------------------------------------------------------------------

    async def _fetch(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        async with self._db.execute(sql, args) as cur:
            return list(await cur.fetchall())

    async def load_booths(self) -> list[dict[str, Any]]:
        return [json.loads(r[0]) for r in await self._fetch("SELECT view FROM booths")]

    async def load_devices(self) -> list[dict[str, Any]]:
        return [json.loads(r[0]) for r in await self._fetch("SELECT snapshot FROM devices")]

    async def load_open_incidents(self) -> list[dict[str, Any]]:
        rows = await self._fetch(
            "SELECT view FROM incidents WHERE state != 'resolved' ORDER BY raised_at"
        )
        return [json.loads(r[0]) for r in rows]

    async def incidents(
        self, open_only: bool, limit: int = 500
    ) -> tuple[list[dict[str, Any]], int]:
        """The newest ``limit`` incidents, and how many there are in all."""
        where = "WHERE state != 'resolved'" if open_only else ""
        rows = await self._fetch(
            f"SELECT view FROM incidents {where} ORDER BY raised_at DESC LIMIT ?", (limit,)
        )
        (total,) = (await self._fetch(f"SELECT count(*) FROM incidents {where}"))[0]
        return [json.loads(r[0]) for r in rows], int(total)

    async def incident(self, incident_id: str) -> dict[str, Any] | None:
        rows = await self._fetch("SELECT view FROM incidents WHERE id = ?", (incident_id,))
        return json.loads(rows[0][0]) if rows else None

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

    async def event_ids_since(self, since: float) -> list[tuple[str, str]]:
        rows = await self._fetch(
            "SELECT booth, event_id FROM events WHERE event_id IS NOT NULL AND received_at >= ?",
            (since,),
        )
        return [(r[0], r[1]) for r in rows]

    async def count(self, table: str) -> int:
        if table not in ("events", "incidents", "pages", "sessions", "timeline",
                         "page_attempts", "audit", "duty"):
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

    async def check_writable(self) -> bool:
        """A cheap write probe for /readyz."""
        try:
            await self._db.execute(
                "INSERT INTO meta(key, value) VALUES ('probe', ?)"
                " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (str(time.time()),),
            )
        except (aiosqlite.Error, OSError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            return False
        return self.writable


async def _migrate(db: aiosqlite.Connection) -> None:
    """Bring a store made by an older version up to this schema (columns added since)."""
    async with db.execute("PRAGMA table_info(pages)") as cur:
        have = {row[1] for row in await cur.fetchall()}
    for column, decl in (("kind", "TEXT NOT NULL DEFAULT 'page'"), ("receipt", "TEXT"),
                         ("delivered_at", "REAL")):
        if column not in have:
            await db.execute(f"ALTER TABLE pages ADD COLUMN {column} {decl}")
    await db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                     (str(SCHEMA_VERSION),))


def booth_snapshot(view: BoothView) -> dict[str, Any]:
    """The stored form of a booth view (what `Booth.restore` reads); asdict is too slow here."""
    snap = {name: getattr(view, name) for name in _BOOTH_FIELDS}
    inc = view.incident
    snap["incident"] = None if inc is None else {
        "id": inc.id, "priority": inc.priority, "state": inc.state, "level": inc.level}
    return snap


_BOOTH_FIELDS = tuple(f for f in BoothView.__dataclass_fields__ if f != "incident")


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
