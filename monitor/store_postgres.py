"""The PostgreSQL backend of the store (``[store] url``): psycopg 3 and its pool.

Everything PostgreSQL-specific of the store is here: the schema and its migrations,
the commit of a batch, the connections; `monitor.store` holds the rest.

Why psycopg 3 (not asyncpg): it is libpq, so the URL, a service file
(``PGSERVICEFILE``), a password file (``~/.pgpass``, ``PGPASSFILE``), TLS
(``sslmode``, ``sslrootcert``) and a list of hosts with
``target_session_attrs=read-write`` (the primary after a failover) all work as
every PostgreSQL tool does; it has an asyncio API, a pool that replaces broken
connections, and pipeline mode, which sends a whole batch in one round trip.

A batch is one transaction, sent as one pipeline: one statement per table, each
taking its rows as one JSON parameter (as the SQLite backend does), so a burst of
a thousand events is one INSERT. PostgreSQL's own durability holds the guarantee:
with ``synchronous_commit`` on (its default), a commit returns once the WAL is
flushed, and only then is the MQTT message acknowledged.

Connections: a pool of a few (the writer, the ack links, reads from HTTP); a
broken one is replaced, so a restarted server costs failed commits (held and
retried by `monitor.store`), not the service. Where the URL says nothing, libpq
is told to give up on a dead server or network in seconds (``DEFAULTS``) rather
than hang the writer for the kernel's TCP timeout.

Migrations run at start under an advisory lock, in one transaction (PostgreSQL's
DDL is transactional), so several processes starting together migrate once.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from monitor.lease import FENCED, MEMBERS, LeaseLost
from monitor.lease import SCHEMA as LEASE_SCHEMA
from monitor.store_base import (
    DB_PASSWORD_ENV,
    SCHEMA_VERSION,
    Batch,
    MarkMoved,
    Row,
    StoreUnavailable,
    dumps,
    mark_statement,
    pending_migrations,
)

POOL_SIZE = 4  # the writer, the ack links, reads for HTTP and the self-watch at once
# libpq's settings where the URL sets none: connecting, and noticing a dead peer, in
# seconds (tcp_user_timeout bounds a write to a server that vanished)
DEFAULTS = {"connect_timeout": "5", "keepalives_idle": "5", "keepalives_interval": "2",
            "keepalives_count": "3", "tcp_user_timeout": "10000",
            "application_name": "boothwatch"}
# pg_advisory_xact_lock key held while migrating: "bw" "sc" in ASCII
MIGRATION_LOCK = 0x6277_7363

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    booth text NOT NULL,
    kind text NOT NULL,
    event_id text,
    device text,
    ts double precision,
    received_at double precision NOT NULL,
    payload text NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_booth_id ON events(booth, event_id)
    WHERE event_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_received ON events(received_at);
CREATE TABLE IF NOT EXISTS booths (
    id text PRIMARY KEY,
    view text NOT NULL,
    updated_at double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    booth text NOT NULL,
    started_at double precision NOT NULL,
    ended_at double precision,
    UNIQUE (booth, started_at)
);
CREATE TABLE IF NOT EXISTS incidents (
    id text PRIMARY KEY,
    booth text NOT NULL,
    priority text NOT NULL,
    state text NOT NULL,
    triggers text NOT NULL,
    level integer NOT NULL,
    max_level integer NOT NULL,
    raised_at double precision NOT NULL,
    acknowledged_at double precision,
    acknowledged_by text,
    presence_at double precision,
    resolved_at double precision,
    resolved_by text,
    outcome text,
    view text NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_state ON incidents(state);
CREATE INDEX IF NOT EXISTS incidents_raised ON incidents(raised_at);
CREATE TABLE IF NOT EXISTS timeline (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident text NOT NULL,
    at double precision NOT NULL,
    kind text NOT NULL,
    detail text NOT NULL
);
CREATE INDEX IF NOT EXISTS timeline_incident ON timeline(incident);
CREATE TABLE IF NOT EXISTS steps (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident text NOT NULL,
    at double precision NOT NULL,
    step text NOT NULL,
    responder text NOT NULL,
    count integer,
    note text,
    via text NOT NULL
);
CREATE INDEX IF NOT EXISTS steps_incident ON steps(incident, step, at);
CREATE TABLE IF NOT EXISTS pages (
    id text PRIMARY KEY,
    incident text NOT NULL,
    responder text NOT NULL,
    channel text NOT NULL,
    level integer NOT NULL,
    payload text NOT NULL,
    status text NOT NULL,
    attempts integer NOT NULL,
    last_error text,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    sent_at double precision,
    latency double precision,
    kind text NOT NULL DEFAULT 'page',
    receipt text,
    delivered_at double precision
);
CREATE INDEX IF NOT EXISTS pages_incident ON pages(incident);
CREATE INDEX IF NOT EXISTS pages_status ON pages(status);
CREATE INDEX IF NOT EXISTS pages_receipt ON pages(receipt) WHERE receipt IS NOT NULL;
CREATE TABLE IF NOT EXISTS page_attempts (
    page text NOT NULL,
    number integer NOT NULL,
    channel text NOT NULL,
    ok boolean NOT NULL,
    error text,
    latency double precision NOT NULL,
    receipt text,
    at double precision NOT NULL,
    PRIMARY KEY (page, number)
);
CREATE TABLE IF NOT EXISTS duty (
    responder text PRIMARY KEY,
    snapshot text NOT NULL,
    updated_at double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at double precision NOT NULL,
    kind text NOT NULL,
    subject text NOT NULL,
    detail text NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_at ON audit(at);
CREATE INDEX IF NOT EXISTS audit_kind ON audit(kind, at);
CREATE TABLE IF NOT EXISTS used_ack_links (
    digest text PRIMARY KEY,
    incident text NOT NULL,
    responder text NOT NULL,
    used_at double precision NOT NULL,
    via text NOT NULL,
    signed_at double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS used_ack_links_used ON used_ack_links(used_at);
CREATE TABLE IF NOT EXISTS devices (
    id text PRIMARY KEY,
    booth text NOT NULL,
    online boolean NOT NULL,
    last_seen double precision,
    battery integer,
    snapshot text NOT NULL,
    updated_at double precision NOT NULL
);
"""
# Versions after 3, the first on PostgreSQL: the statements that bring a store of the
# version before up to it (a column added, a row rewritten), before SCHEMA creates what
# is new; a version that only adds tables or indexes needs none (4 added steps).
MIGRATIONS: dict[int, tuple[str, ...]] = {}
FIRST_MIGRATED = 3
# the site's lease (`monitor.lease`) is PostgreSQL's alone: one SQLite file has one process
_STATEMENTS = [s.strip() for s in SCHEMA.split(";") if s.strip()] + [*LEASE_SCHEMA, MEMBERS]
_SCHEMA_NAMES = frozenset(
    re.findall(r"CREATE (?:UNIQUE )?(?:TABLE|INDEX) IF NOT EXISTS (\w+)",
               SCHEMA + LEASE_SCHEMA[0] + MEMBERS))


def display(url: str) -> str:
    """The URL without a password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}@{host}"))


def conninfo(url: str, password: str | None) -> str:
    """libpq's connection string: the URL, `password` (BOOTHWATCH_DB_PASSWORD) if set,
    else libpq finds one (PGPASSWORD, a password file, a service file), and DEFAULTS
    where the URL sets nothing."""
    params: dict[str, Any] = {**DEFAULTS, **conninfo_to_dict(url)}
    if password:
        params["password"] = password
    return make_conninfo(**params)


@functools.lru_cache(maxsize=256)
def pg_sql(sql: str) -> str:
    """The store's portable SQL (``?`` parameters) in psycopg's (``%s``)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _from_json(columns: str) -> str:
    """SELECT the typed columns ``"name type, ..."`` from one parameter, a JSON array of
    rows in that order (`Batch`'s ``*_rows``). jsonb, not json: the array is parsed once,
    where json would parse each row again for every column taken from it (a thousand-event
    commit took about a fifth less time here)."""
    typed = [column.split() for column in columns.split(",")]
    values = ", ".join(f"(r->>{n})::{kind}" for n, (_, kind) in enumerate(typed))
    names = ", ".join(name for name, _ in typed)
    return f"({names}) SELECT {values} FROM jsonb_array_elements(%s::jsonb) AS r"


def _update(*columns: str) -> str:
    return ", ".join(f"{c} = excluded.{c}" for c in columns)


_EVENTS = ("INSERT INTO events" + _from_json(
    "booth text, kind text, event_id text, device text, ts float8, received_at float8,"
    " payload text") + " ON CONFLICT DO NOTHING")
_BOOTHS = ("INSERT INTO booths" + _from_json("id text, view text, updated_at float8")
           + " ON CONFLICT (id) DO UPDATE SET " + _update("view", "updated_at"))
_SESSIONS = ("INSERT INTO sessions" + _from_json("booth text, started_at float8, ended_at float8")
             + " ON CONFLICT (booth, started_at) DO UPDATE SET " + _update("ended_at"))
_INCIDENTS = ("INSERT INTO incidents" + _from_json(
    "id text, booth text, priority text, state text, triggers text, level int4,"
    " max_level int4, raised_at float8, acknowledged_at float8, acknowledged_by text,"
    " presence_at float8, resolved_at float8, resolved_by text, outcome text, view text")
    + " ON CONFLICT (id) DO UPDATE SET " + _update(
        "priority", "state", "triggers", "level", "max_level", "acknowledged_at",
        "acknowledged_by", "presence_at", "resolved_at", "resolved_by", "outcome", "view"))
_TIMELINE = ("INSERT INTO timeline"
             + _from_json("incident text, at float8, kind text, detail text"))
_PAGES = ("INSERT INTO pages" + _from_json(
    "id text, incident text, responder text, channel text, level int4, payload text,"
    " status text, attempts int4, last_error text, created_at float8, updated_at float8,"
    " sent_at float8, latency float8, kind text, receipt text, delivered_at float8")
    + " ON CONFLICT (id) DO UPDATE SET "
    + _update("status", "channel", "attempts", "last_error", "updated_at")
    + ", sent_at = coalesce(excluded.sent_at, pages.sent_at),"
    " latency = coalesce(excluded.latency, pages.latency),"
    " receipt = coalesce(excluded.receipt, pages.receipt),"
    " delivered_at = coalesce(excluded.delivered_at, pages.delivered_at)")
_ATTEMPTS = ("INSERT INTO page_attempts" + _from_json(
    "page text, number int4, channel text, ok boolean, error text, latency float8,"
    " receipt text, at float8")
    + " ON CONFLICT (page, number) DO UPDATE SET "
    + _update("channel", "ok", "error", "latency", "receipt", "at"))
_DUTY = ("INSERT INTO duty" + _from_json("responder text, snapshot text, updated_at float8")
         + " ON CONFLICT (responder) DO UPDATE SET " + _update("snapshot", "updated_at"))
_STEPS = ("INSERT INTO steps" + _from_json(
    "incident text, at float8, step text, responder text, count int4, note text, via text"))
_AUDIT = "INSERT INTO audit" + _from_json("at float8, kind text, subject text, detail text")
_DEVICES = ("INSERT INTO devices" + _from_json(
    "id text, booth text, online boolean, last_seen float8, battery int4, snapshot text,"
    " updated_at float8") + " ON CONFLICT (id) DO UPDATE SET " + _update(
        "booth", "online", "last_seen", "battery", "snapshot", "updated_at"))
_META = ("INSERT INTO meta" + _from_json("key text, value text")
         + " ON CONFLICT (key) DO UPDATE SET " + _update("value"))
_RECEIPT = ("UPDATE pages SET status = CASE WHEN status = 'acknowledged' THEN status"
            " ELSE %s END, delivered_at = coalesce(delivered_at, %s), updated_at = %s"
            " WHERE receipt = %s")


_LEASE_CHECK = "SELECT lease_check(%s, %s, %s)"


def _last_per_key(rows: Iterable[Row], width: int) -> list[Row]:
    """One row per key (its first `width` values), the last given: an INSERT ... ON
    CONFLICT DO UPDATE may not touch a row twice, and the last one is what statements
    in turn would have left."""
    return list({row[:width]: row for row in rows}.values())


SERVER_KEEPALIVES = {"tcp_keepalives_idle": 10, "tcp_keepalives_interval": 5,
                     "tcp_keepalives_count": 3}


def idle_in_transaction_ms(lock_timeout_ms: int) -> int:
    """How long a session of ours may sit idle inside a transaction before the server ends
    it: twice the lock timeout (at least 2 s), so that a retried commit waiting for a dead
    session's lock fails at most twice before that lock goes."""
    return max(2 * int(lock_timeout_ms), 2000)


class PostgresBackend:
    errors: tuple[type[Exception], ...] = (psycopg.Error, OSError)

    def __init__(self, pool: AsyncConnectionPool, where: str) -> None:
        self._pool = pool
        self.where = where
        # (site, holder, epoch) of this process's lease once it owns the site: every write
        # checks it first, in its own transaction (`monitor.lease`, fencing)
        self.fence: tuple[str, str, int] | None = None

    @classmethod
    async def open(cls, url: str, password: str | None, *,
                   lock_timeout_ms: int) -> PostgresBackend:
        """The store at `url`, its schema created or migrated; StoreUnavailable naming the
        URL and libpq's reason if it cannot be reached, SchemaTooNew if a newer boothwatch
        migrated it."""
        where, info = display(url), conninfo(url, password)
        try:
            # one connection first: its error says why (a pool's says only "timed out")
            async with await psycopg.AsyncConnection.connect(info, autocommit=True) as conn:
                await _migrate(conn, where)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot open the store {where}: {_reason(exc)}",
                                   url=where) from exc

        async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
            # a commit blocked by someone's lock fails (and is retried) instead of hanging
            await conn.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
            # a session of ours idle inside a transaction is one whose connection broke
            # mid-commit (ours never wait between statements): the server ends it, freeing
            # its locks (the mark's row among them), instead of holding them until TCP
            # keepalive notices, hours later
            await conn.execute("SET idle_in_transaction_session_timeout = "
                               f"{idle_in_transaction_ms(lock_timeout_ms)}")
            # and a connection cut without a word (a network gone) found dead by the server
            # in about 25 s, not the system's default two hours: its locks go with it
            for name, seconds in SERVER_KEEPALIVES.items():
                await conn.execute(f"SET {name} = {seconds}")

        pool = AsyncConnectionPool(
            info, min_size=1, max_size=POOL_SIZE, open=False, name="boothwatch",
            kwargs={"autocommit": True}, configure=configure,
            check=AsyncConnectionPool.check_connection,
            # the server may be away for longer than the pool's default 5 minutes: a
            # connection is tried again each time one is needed, for as long as it takes;
            # one not had within the lock timeout (at least a second) fails the commit, so
            # a server that is down is reported (and the batch held) as soon as a lock
            # held too long would be. `check` costs a round trip per use: a connection
            # broken while idle is replaced before a commit fails on it
            reconnect_timeout=0, timeout=max(lock_timeout_ms / 1000, 1.0))
        try:
            await pool.open(wait=True, timeout=10)
        except psycopg.Error as exc:
            await pool.close()
            raise StoreUnavailable(f"cannot open the store {where}: {_reason(exc)}",
                                   url=where) from exc
        return cls(pool, where)

    async def close(self) -> None:
        await self._pool.close()

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(pg_sql(sql), args)
            return [tuple(row) for row in await cur.fetchall()]

    async def apart(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        with self._fenced():
            async with self._pool.connection() as conn, conn.transaction():
                if self.fence is not None:
                    await conn.execute(_LEASE_CHECK, self.fence)
                return [(await conn.execute(pg_sql(sql), args)).rowcount
                        for sql, args in statements]

    async def commit(self, b: Batch) -> None:
        with self._fenced():
            await self._commit(b)

    @contextlib.contextmanager
    def _fenced(self) -> Iterator[None]:
        """A write refused because the lease is another process's now: `LeaseLost`, which
        the store does not retry (the process stands down)."""
        try:
            yield
        except psycopg.Error as exc:
            if exc.sqlstate != FENCED or self.fence is None:
                raise
            site, _holder, epoch = self.fence
            raise LeaseLost(f"a write for site {site} was refused: its lease is no longer "
                            f"ours (epoch {epoch}): standing down", site=site) from exc

    async def _commit(self, b: Batch) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await self._rows(conn, b)
            # a plain round trip last, outside the pipeline: a pipeline's flush requests leave
            # the server's idle-in-transaction timer disarmed (measured: a session idle after
            # them was still there after twice the timeout), so a session whose COMMIT never
            # came would hold its locks (the mark's row, the lease's) until found dead
            await conn.execute("SELECT 1")

    async def _rows(self, conn: psycopg.AsyncConnection[Any], b: Batch) -> None:
        async with conn.pipeline() as pipeline:
            cur = conn.cursor()
            if self.fence is not None:
                await cur.execute(_LEASE_CHECK, self.fence)
            if b.mark is not None:
                # the mark first, and its answer before the rows are sent (a round trip of
                # its own, the transaction still open: a Sync ends no BEGIN ... block)
                sql, args = mark_statement(b.mark)
                marked = conn.cursor()
                await marked.execute(pg_sql(sql), args)
                await pipeline.sync()
                if marked.rowcount != 1:
                    raise MarkMoved(b.mark.key)
            for statement, rows in (
                (_EVENTS, b.event_rows()), (_BOOTHS, b.booth_rows()),
                (_SESSIONS, _last_per_key(b.sessions, 2)), (_INCIDENTS, b.incident_rows()),
                (_TIMELINE, b.timeline_rows()), (_STEPS, b.step_rows()),
                (_PAGES, b.page_rows()),
                (_ATTEMPTS, _last_per_key(b.attempt_rows(), 2)), (_DUTY, b.duty_rows()),
                (_AUDIT, b.audit_rows()), (_DEVICES, b.device_rows()),
                (_META, list(b.meta.items())),
            ):
                if rows:
                    await cur.execute(statement, (dumps(rows),))
            if b.receipts:  # in order: a later report of the same receipt wins
                await cur.executemany(_RECEIPT, b.receipt_rows())


async def _migrate(conn: psycopg.AsyncConnection[Any], where: str) -> None:
    """Bring the store to SCHEMA_VERSION: read first (a current store is not written),
    then under the migration lock, in one transaction."""
    found, have = await _schema(conn)
    if found == SCHEMA_VERSION and _SCHEMA_NAMES <= have:
        return
    pending_migrations(found, where, FIRST_MIGRATED)  # a newer store: refused unlocked
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        found, have = await _schema(conn)  # another process may have migrated meanwhile
        if found == SCHEMA_VERSION and _SCHEMA_NAMES <= have:
            return
        for version in pending_migrations(found, where, FIRST_MIGRATED):
            for statement in MIGRATIONS.get(version, ()):
                await conn.execute(statement)
        for statement in _STATEMENTS:
            await conn.execute(statement)
        await conn.execute(
            "INSERT INTO meta(key, value) VALUES ('schema_version', %s)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(SCHEMA_VERSION),))


async def _schema(conn: psycopg.AsyncConnection[Any]) -> tuple[int | None, set[str]]:
    """The store's schema version (None: a new store) and the tables and indexes it has,
    in the schema that the connection's search_path creates in."""
    cur = await conn.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = to_regnamespace(current_schema())"
        " AND relkind IN ('r', 'i')")
    have = {row[0] for row in await cur.fetchall()}
    if "meta" not in have:
        return None, have
    cur = await conn.execute("SELECT value FROM meta WHERE key = 'schema_version'")
    row = await cur.fetchone()
    return (int(row[0]) if row is not None else None), have


def _reason(exc: psycopg.Error) -> str:
    """libpq's message on one line (it ends with newlines and may span several), with
    what to do when it is ours to say."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if "no password supplied" in reason:
        reason += (f" (set {DB_PASSWORD_ENV} in the service's environment, or name a libpq "
                   "password file there with PGPASSFILE)")
    return reason


def schema_version(url: str, password: str | None, env: Mapping[str, str]) -> int | None:
    """The schema version of the store at `url` (None: an empty database, which `run`
    makes a store of), connecting with libpq's variables of `env` (PGPASSFILE...) as the
    service will; StoreUnavailable if it cannot connect."""
    with _libpq_environment(env):
        reader = Reader.open(url, password, check=False)
    with contextlib.closing(reader):
        rows = (reader.execute("SELECT value FROM meta WHERE key = 'schema_version'")
                .fetchall() if reader.has("meta") else [])
    return int(rows[0][0]) if rows else None


@contextlib.contextmanager
def _libpq_environment(env: Mapping[str, str]) -> Iterator[None]:
    """libpq's variables (PG...) exactly as in `env`, inside the block."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("PG")}
    for key in saved:
        del os.environ[key]
    os.environ.update({k: v for k, v in env.items() if k.startswith("PG")})
    try:
        yield
    finally:
        for key in [k for k in os.environ if k.startswith("PG")]:
            del os.environ[key]
        os.environ.update(saved)


class Reader:
    """The store on a read-only connection for `boothwatch report`."""

    errors: tuple[type[Exception], ...] = (psycopg.Error,)

    def __init__(self, conn: psycopg.Connection[Any], where: str) -> None:
        self._conn = conn
        self.where = where
        self._names: Iterator[int] = itertools.count()

    @classmethod
    def open(cls, url: str, password: str | None, *, check: bool = True) -> Reader:
        """Connected; with `check`, to a database with boothwatch's tables."""
        where = display(url)
        try:
            conn = psycopg.connect(conninfo(url, password))
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot connect to {where}: {_reason(exc)}") from None
        conn.read_only = True
        if not check:
            return cls(conn, where)
        try:
            conn.execute("SELECT id, raised_at, view FROM incidents LIMIT 0")
            conn.execute("SELECT incident, status FROM pages LIMIT 0")
        except psycopg.Error as exc:
            conn.close()
            raise StoreUnavailable(f"{where}: not a boothwatch store ({_reason(exc)})") from None
        return cls(conn, where)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> psycopg.ServerCursor[Any]:
        # a server-side cursor: a report over years of incidents reads them in chunks
        cur = self._conn.cursor(name=f"report_{next(self._names)}")
        cur.execute(pg_sql(sql), args)
        return cur

    def has(self, table: str) -> bool:
        cur = self._conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
        row = cur.fetchone()
        return bool(row and row[0])

    def json_field(self, column: str, key: str | int) -> str:
        """SQL for the value at `key` of the JSON in `column` (true is True)."""
        path = key if isinstance(key, int) else f"'{key}'"
        return f"({column}::jsonb -> {path})"

    def close(self) -> None:
        self._conn.close()
