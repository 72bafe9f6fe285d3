"""The SQLite backend of the store (``[store] path``): one file, WAL, aiosqlite.

Everything SQLite-specific of the store is here: the schema and its migrations, the
commit of a batch, the connections; `monitor.store` holds the rest.

SQLITE_FULL and SQLITE_IOERR may roll a transaction back themselves or leave it
open; a ROLLBACK is always attempted and its own error ignored, and a commit
never starts inside a transaction left open by an earlier failure.

A store already at this schema opens without a write (its schema is only read), so
a restart while the file is locked or the disk is full still pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiosqlite

from monitor.access import User, store_problem
from monitor.store_base import (
    SCHEMA_VERSION,
    Batch,
    Mark,
    MarkMoved,
    Row,
    StoreUnavailable,
    dumps,
    mark_statement,
    pending_migrations,
)

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
    latency REAL,
    kind TEXT NOT NULL DEFAULT 'page',
    receipt TEXT,
    delivered_at REAL
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
# Versions after 3 (the first versioned this way): the statements that bring a store of
# the version before up to it (a column added, a row rewritten), before SCHEMA creates
# what is new; a version that only adds tables or indexes needs none (4: steps, which
# an older store has none of: the protocol came with the table). A store older than 3
# gets the columns it lacks (`_missing_columns`).
MIGRATIONS: dict[int, tuple[str, ...]] = {}
FIRST_MIGRATED = 3


def unavailable(path: str, error: Exception) -> StoreUnavailable:
    # SQLite says "unable to open database file", without the path or the reason
    where = os.path.abspath(path)
    why = store_problem(path, f"user {User.current().name}")
    return StoreUnavailable(f"cannot open the store {where}: "
                            + (f"{why} (SQLite: {error})" if why else str(error)), path=where)


class SQLiteBackend:
    errors: tuple[type[Exception], ...] = (aiosqlite.Error, OSError)

    def __init__(self, db: aiosqlite.Connection, path: str, busy_timeout_ms: int) -> None:
        self._db = db
        self.where = path
        self._busy_timeout_ms = busy_timeout_ms
        self._apart: aiosqlite.Connection | None = None  # see `apart`
        # the writer: a connection of its own, used only in its own thread (`commit`)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
        self._write_db: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: str, *, busy_timeout_ms: int) -> SQLiteBackend:
        """The store at `path`, created if new, migrated if older; StoreUnavailable, naming
        the path and why, if it cannot be opened (a missing directory, no permission, a full
        disk), SchemaTooNew if a newer boothwatch wrote it."""
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
            await _migrate(db, path)
        except (sqlite3.Error, OSError) as exc:
            if db is not None:
                with contextlib.suppress(sqlite3.Error, OSError):
                    await db.close()
            raise unavailable(path, exc) from exc
        except BaseException:
            if db is not None:
                await db.close()
            raise
        return cls(db, path, busy_timeout_ms)

    async def close(self) -> None:
        if self._write_db is not None:
            await asyncio.get_running_loop().run_in_executor(self._writer, self._write_db.close)
            self._write_db = None
        self._writer.shutdown(wait=False)
        if self._apart is not None:
            await self._apart.close()
        await self._db.close()

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        async with self._db.execute(sql, args) as cur:
            return [tuple(row) for row in await cur.fetchall()]

    async def apart(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        """On a connection of its own, committed now, whatever the writer is doing."""
        if self._apart is None:
            self._apart = await aiosqlite.connect(self.where, isolation_level=None)
            await self._apart.execute("PRAGMA synchronous=FULL")
            await self._apart.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        db = self._apart
        await db.execute("BEGIN IMMEDIATE")
        try:
            counts = [(await db.execute(sql, args)).rowcount for sql, args in statements]
            await db.execute("COMMIT")
        except BaseException:
            await _rollback(db)
            raise
        return counts

    async def commit(self, b: Batch) -> None:
        """The batch in one transaction, on the writer's connection and thread: one hand-off
        each way per commit. Each statement on the event loop's side was a round trip
        through the loop and the GIL, and under load each cost more than its SQL
        (docs/architecture/ingest.md)."""
        steps = _steps(b)
        await asyncio.get_running_loop().run_in_executor(self._writer, self._run, steps, b.mark)

    def _connect_writer(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.where, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA synchronous=FULL")  # a committed event survives power loss
            db.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        except BaseException:
            db.close()
            raise
        return db

    def _run(self, steps: list[tuple[str, Any, bool]], mark: Mark | None) -> None:
        """In the writer's thread: the mark, then the statements, in one transaction."""
        if self._write_db is None:
            self._write_db = self._connect_writer()
        db = self._write_db
        _rollback_now(db)  # never commit on top of what an earlier failure left open
        db.execute("BEGIN IMMEDIATE")
        try:
            if mark is not None and db.execute(*mark_statement(mark)).rowcount != 1:
                raise MarkMoved(mark.key)
            for sql, args, many in steps:
                if many:
                    db.executemany(sql, args)
                else:
                    db.execute(sql, args)
            db.execute("COMMIT")
        except BaseException:
            _rollback_now(db)
            raise


def _rows(columns: int) -> str:
    """``SELECT`` of a JSON array of rows (the one parameter), one column per element."""
    picks = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(columns))
    return f" SELECT {picks} FROM json_each(?) WHERE true"


def _steps(b: Batch) -> list[tuple[str, Any, bool]]:
    """The statements that store batch ``b``: each table's rows as one JSON array, one
    statement (`Store.run_writer` made the rows, a slice of the loop at a time)."""
    steps: list[tuple[str, Any, bool]] = []

    def one(sql: str, args: Sequence[Any]) -> None:
        steps.append((sql, args, False))

    def many(sql: str, rows: Sequence[Sequence[Any]]) -> None:
        steps.append((sql, rows, True))

    def table(insert: str, rows: Sequence[Sequence[Any]], conflict: str = "") -> None:
        if rows:
            one(insert + _rows(len(rows[0])) + conflict, (dumps(rows),))

    # one statement per table, its rows in one JSON parameter: sqlite3 lets the GIL go
    # around every step of a statement, so each row of an executemany made the writer
    # thread and the event loop trade the GIL; with the loop busy (a burst of incidents)
    # every trade waited for it, and a commit of 2,000 rows took most of a second
    table("INSERT OR IGNORE INTO events(booth, kind, event_id, device, ts, received_at,"
          " payload)", b.event_rows())
    table("INSERT INTO booths(id, view, updated_at)", b.booth_rows(),
          " ON CONFLICT(id) DO UPDATE SET view=excluded.view, updated_at=excluded.updated_at")
    table("INSERT INTO sessions(booth, started_at, ended_at)", b.sessions,
          " ON CONFLICT(booth, started_at) DO UPDATE SET ended_at=excluded.ended_at")
    table("INSERT INTO incidents(id, booth, priority, state, triggers, level, max_level,"
          " raised_at, acknowledged_at, acknowledged_by, presence_at, resolved_at,"
          " resolved_by, outcome, view)", b.incident_rows(),
          " ON CONFLICT(id) DO UPDATE SET priority=excluded.priority,"
          " state=excluded.state, triggers=excluded.triggers, level=excluded.level,"
          " max_level=excluded.max_level, acknowledged_at=excluded.acknowledged_at,"
          " acknowledged_by=excluded.acknowledged_by,"
          " presence_at=excluded.presence_at, resolved_at=excluded.resolved_at,"
          " resolved_by=excluded.resolved_by, outcome=excluded.outcome,"
          " view=excluded.view")
    table("INSERT INTO timeline(incident, at, kind, detail)", b.timeline_rows())
    table("INSERT INTO steps(incident, at, step, responder, count, note, via)",
          b.step_rows())
    table("INSERT INTO pages(id, incident, responder, channel, level, payload, status,"
          " attempts, last_error, created_at, updated_at, sent_at, latency, kind, receipt,"
          " delivered_at)", b.page_rows(),
          " ON CONFLICT(id) DO UPDATE SET status=excluded.status,"
          " channel=excluded.channel,"
          " attempts=excluded.attempts, last_error=excluded.last_error,"
          " updated_at=excluded.updated_at,"
          " sent_at=coalesce(excluded.sent_at, pages.sent_at),"
          " latency=coalesce(excluded.latency, pages.latency),"
          " receipt=coalesce(excluded.receipt, pages.receipt),"
          " delivered_at=coalesce(excluded.delivered_at, pages.delivered_at)")
    table("INSERT OR REPLACE INTO page_attempts(page, number, channel, ok, error, latency,"
          " receipt, at)", b.attempt_rows())
    table("INSERT INTO duty(responder, snapshot, updated_at)", b.duty_rows(),
          " ON CONFLICT(responder) DO UPDATE SET snapshot=excluded.snapshot,"
          " updated_at=excluded.updated_at")
    if b.receipts:  # in order: a later report of the same receipt wins
        many(
            "UPDATE pages SET status = CASE WHEN status = 'acknowledged' THEN status"
            " ELSE ? END, delivered_at = coalesce(delivered_at, ?), updated_at = ?"
            " WHERE receipt = ?",
            b.receipt_rows(),
        )
    table("INSERT INTO audit(at, kind, subject, detail)", b.audit_rows())
    table("INSERT INTO devices(id, booth, online, last_seen, battery, snapshot, updated_at)",
          b.device_rows(),
          " ON CONFLICT(id) DO UPDATE SET booth=excluded.booth, online=excluded.online,"
          " last_seen=excluded.last_seen, battery=excluded.battery,"
          " snapshot=excluded.snapshot, updated_at=excluded.updated_at")
    table("INSERT INTO meta(key, value)", list(b.meta.items()),
          " ON CONFLICT(key) DO UPDATE SET value=excluded.value")
    return steps


def _rollback_now(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        # see _rollback
        with contextlib.suppress(sqlite3.Error, OSError):
            db.execute("ROLLBACK")


async def _rollback(db: aiosqlite.Connection) -> None:
    if db.in_transaction:
        # SQLITE_FULL may have rolled it back already (then ROLLBACK itself fails); the
        # error that matters is the one being raised
        with contextlib.suppress(aiosqlite.Error, OSError):
            await db.execute("ROLLBACK")


_SCHEMA_NAMES = re.findall(r"CREATE (?:UNIQUE )?(?:TABLE|INDEX) IF NOT EXISTS (\w+)", SCHEMA)
# the columns of pages added since version 1 (a store made before lacks them)
_PAGES_COLUMNS = (("kind", "TEXT NOT NULL DEFAULT 'page'"), ("receipt", "TEXT"),
                  ("delivered_at", "REAL"))


async def _version(db: aiosqlite.Connection) -> int | None:
    """The store's schema version; None for a new store (no meta table yet)."""
    async with db.execute("SELECT name FROM sqlite_master WHERE name = 'meta'") as cur:
        if await cur.fetchone() is None:
            return None
    async with db.execute("SELECT value FROM meta WHERE key = 'schema_version'") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row is not None else None


async def _migrate(db: aiosqlite.Connection, path: str) -> None:
    """Bring the store to SCHEMA_VERSION in one transaction, writing nothing when it is
    there already (every table, index and column of this version present)."""
    found = await _version(db)
    versions = pending_migrations(found, path, FIRST_MIGRATED)
    async with db.execute("SELECT name FROM sqlite_master") as cur:
        have = {row[0] for row in await cur.fetchall()}
    missing = await _missing_columns(db) if "pages" in have else []
    if found == SCHEMA_VERSION and set(_SCHEMA_NAMES) <= have and not missing:
        return
    statements = [f"ALTER TABLE pages ADD COLUMN {column} {decl};" for column, decl in missing]
    statements += [statement for v in versions for statement in MIGRATIONS.get(v, ())]
    # one script, its own transaction: executescript commits whatever is open first
    await db.executescript("BEGIN IMMEDIATE;\n" + "\n".join(statements) + SCHEMA
                           + "INSERT INTO meta(key, value) VALUES ('schema_version', "
                           f"'{SCHEMA_VERSION}') ON CONFLICT(key) DO UPDATE SET "
                           "value = excluded.value;\nCOMMIT;")


async def _missing_columns(db: aiosqlite.Connection) -> list[tuple[str, str]]:
    """The columns of `pages` added since version 1, that a store made before lacks."""
    async with db.execute("PRAGMA table_info(pages)") as cur:
        have = {row[1] for row in await cur.fetchall()}
    return [(column, decl) for column, decl in _PAGES_COLUMNS if column not in have]


def schema_version(path: str) -> int | None:
    """The schema version of the store at `path`, read-only; None for none yet, or a file
    this process cannot read (`monitor.access` says why)."""
    file = Path(path)
    if not file.is_file() or file.stat().st_size == 0:
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro",
                                                uri=True)) as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except (sqlite3.Error, OSError):
        return None
    return int(row[0]) if row is not None else None


class Reader:
    """The store opened read-only for `boothwatch report` (the service may be writing it:
    WAL lets both run)."""

    errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def __init__(self, db: sqlite3.Connection, path: str) -> None:
        self._db = db
        self.where = path

    @classmethod
    def open(cls, path: str) -> Reader:
        file = Path(path)
        if not file.is_file():
            raise StoreUnavailable(f"{path}: no such file")
        try:
            db = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True)
            db.execute("PRAGMA busy_timeout=5000")
            db.execute("SELECT id, raised_at, view FROM incidents LIMIT 0")
            db.execute("SELECT incident, status FROM pages LIMIT 0")
        except sqlite3.DatabaseError as exc:
            raise StoreUnavailable(f"{path}: not a boothwatch store ({exc})") from None
        return cls(db, path)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, args)

    def has(self, table: str) -> bool:
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'"
                                " AND name = ?", (table,)).fetchone() is not None

    def json_field(self, column: str, key: str | int) -> str:
        """SQL for the value at `key` of the JSON in `column` (true is 1)."""
        return f"json_extract({column}, '$[{key}]')" if isinstance(key, int) else (
            f"json_extract({column}, '$.{key}')")

    def close(self) -> None:
        self._db.close()
