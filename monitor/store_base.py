"""What the store (`monitor.store`) and its backends (`monitor.store_sqlite`,
`monitor.store_postgres`) share: the rows and the batch a commit writes, the schema
version and what a store that cannot be used raises, and what the store asks of a
backend (`Backend`) and of a report's connection (`Reader`). The backends import this
module, never `monitor.store`, which picks one of them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import orjson

from monitor.codec import booth_record, incident_record
from monitor.core.booth import BoothView
from monitor.core.incident import IncidentView, TimelineEntry
from monitor.exits import CANTCREAT, OperatorError

SCHEMA_VERSION = 4  # 3: used_ack_links; 4: steps
URL_SCHEMES = ("postgresql://", "postgres://")  # libpq's own two
DB_PASSWORD_ENV = "BOOTHWATCH_DB_PASSWORD"  # [store] url's password, never in the file


def is_url(where: str) -> bool:
    """A PostgreSQL URL (``[store] url``), not a SQLite file (``[store] path``)."""
    return where.startswith(URL_SCHEMES)


class StoreUnavailable(OperatorError):
    """The store cannot be opened or created: the message names it and why."""

    status = CANTCREAT


class SchemaTooNew(StoreUnavailable):
    """The store was brought to a newer schema by a newer boothwatch: never written here."""

    @classmethod
    def found(cls, where: str, version: int) -> SchemaTooNew:
        return cls(f"the store {where} has schema version {version}, newer than this "
                   f"boothwatch knows ({SCHEMA_VERSION}): a newer boothwatch wrote it; run "
                   "that version again (or restore the backup taken before the upgrade)",
                   store=where)


def pending_migrations(found: int | None, where: str, first: int) -> range:
    """The versions to migrate through from `found` (None: a new store, which its SCHEMA
    makes at once); SchemaTooNew if `found` is newer than this code. `first` is the oldest
    version a backend's MIGRATIONS start from (older ones are brought up otherwise)."""
    if found is None:
        return range(0)
    if found > SCHEMA_VERSION:
        raise SchemaTooNew.found(where, found)
    return range(max(found, first) + 1, SCHEMA_VERSION + 1)


class EventRow(NamedTuple):
    """One row of the events table, made for every message stored: a named tuple is made in
    half the time of a frozen dataclass (bench/ingest.py), and is as unchangeable."""

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


Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Mark:
    """A writer's mark in `meta`, set by each of its commits: from `expected` (its value as
    the writer last knew it, None for none) to `value`, or the commit does not happen."""

    key: str
    expected: str | None
    value: str


class MarkMoved(Exception):
    """The mark was not what the commit expected: another commit set it since (one of ours
    whose answer was lost, or an earlier writer's). Nothing of the batch was written."""


def mark_statement(mark: Mark) -> tuple[str, tuple[str, ...]]:
    """The statement (``?`` parameters) that sets `mark`; it changes one row, or none if the
    mark moved. Run first in a commit's transaction, it takes the mark's row lock, so a
    commit whose session is still open holds up the next until it is over, committed or
    not: a commit can never land behind a later one's look at the mark."""
    if mark.expected is None:
        return ("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING",
                (mark.key, mark.value))
    return ("UPDATE meta SET value = ? WHERE key = ? AND value = ?",
            (mark.value, mark.key, mark.expected))


@dataclass(slots=True)
class Batch:
    """What one commit writes. Its ``*_rows`` give each table's rows in the order of the
    columns both backends' statements name, so the values are made in one place."""

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
    encoded: dict[str, list[Row]] | None = None  # each table's rows, once `encode` made them
    # the mark this commit sets, first thing in its transaction, and every mark its commits
    # set so far: a commit that failed may have landed all the same (`Store._attempt`)
    mark: Mark | None = None
    marks: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return (
            len(self.events) + len(self.booths) + len(self.sessions) + len(self.incidents)
            + len(self.timeline) + len(self.pages) + len(self.devices) + len(self.attempts)
            + len(self.duty) + len(self.audit) + len(self.receipts) + len(self.meta)
        )

    # (booth, kind, event_id, device, ts, received_at, payload)
    def event_rows(self) -> list[Row]:
        return self._rows("events")

    # (id, view, updated_at)
    def booth_rows(self) -> list[Row]:
        return self._rows("booths")

    # (id, booth, priority, state, triggers, level, max_level, raised_at, acknowledged_at,
    #  acknowledged_by, presence_at, resolved_at, resolved_by, outcome, view)
    def incident_rows(self) -> list[Row]:
        return self._rows("incidents")

    # (incident, at, kind, detail)
    def timeline_rows(self) -> list[Row]:
        return self._rows("timeline")

    # (id, incident, responder, channel, level, payload, status, attempts, last_error,
    #  created_at, updated_at, sent_at, latency, kind, receipt, delivered_at)
    def page_rows(self) -> list[Row]:
        return self._rows("pages")

    # (page, number, channel, ok, error, latency, receipt, at)
    def attempt_rows(self) -> list[Row]:
        return self._rows("attempts")

    # (responder, snapshot, updated_at)
    def duty_rows(self) -> list[Row]:
        return self._rows("duty")

    # (incident, at, step, responder, count, note, via): protocol steps also in a table
    # of their own, for reports to query
    def step_rows(self) -> list[Row]:
        return [(iid, e.at, e.detail["step"], e.detail["responder"], e.detail.get("count"),
                 e.detail.get("note"), e.detail["via"])
                for iid, e in self.timeline if e.kind == "step"]

    # (at, kind, subject, detail)
    def audit_rows(self) -> list[Row]:
        return self._rows("audit")

    # (id, booth, online, last_seen, battery, snapshot, updated_at)
    def device_rows(self) -> list[Row]:
        return self._rows("devices")

    # (status, at, at, receipt): the statement's parameters, in its order
    def receipt_rows(self) -> list[Row]:
        return [(status, at, at, receipt) for receipt, status, at in self.receipts]

    def encode(self) -> Iterator[None]:
        """Make every table's rows (the JSON of views, payloads and snapshots: most of a
        commit's time on the event loop), one at a time, yielding after each so the
        caller can let the loop turn in between (`Store.run_writer`). The ``*_rows``
        methods then return what this made; a change to the batch (`absorb`) drops it."""
        encoded: dict[str, list[Row]] = {}
        for table, (items, make) in self._tables().items():
            rows: list[Row] = []
            for item in items:
                rows.append(make(item))
                yield
            encoded[table] = rows
        self.encoded = encoded

    def _rows(self, table: str) -> list[Row]:
        if self.encoded is not None:
            return self.encoded[table]
        items, make = self._tables()[table]
        return [make(item) for item in items]

    def _tables(self) -> dict[str, tuple[Iterable[Any], Callable[[Any], Row]]]:
        """Each table's items in the batch, and how one becomes a row."""
        return {
            "events": (self.events, _event_row),
            "booths": (self.booths.items(), _booth_row),
            "incidents": (self.incidents.values(), _incident_row),
            "timeline": (self.timeline, _timeline_row),
            "pages": (self.pages.values(), _page_row),
            "attempts": (self.attempts, _attempt_row),
            "duty": (self.duty.items(), _duty_row),
            "audit": (self.audit, _audit_row),
            "devices": (self.devices.items(), _device_row),
        }


def _event_row(e: EventRow) -> Row:
    return tuple(e)  # a plain tuple: orjson writes no tuple subclass


def _booth_row(item: tuple[str, tuple[BoothView, float]]) -> Row:
    bid, (view, at) = item
    return (bid, booth_text(view), at)


def booth_text(view: BoothView) -> str:
    """`booth_record(view)` as JSON. orjson writes the frozen dataclass itself: every field
    in order, the incident's as an object, which is that record's document (a test holds
    the two equal), in two thirds of the time of the dict made first and then encoded
    (one per booth change, bench/ingest.py); what orjson refuses goes `dumps`' way."""
    try:
        return orjson.dumps(view).decode()
    except TypeError:
        return dumps(booth_record(view))


def _incident_row(v: IncidentView) -> Row:
    return (v.id, v.booth, v.priority, v.state, dumps(v.triggers), v.level, v.max_level,
            v.raised_at, v.acknowledged_at, v.acknowledged_by, v.presence_at,
            v.resolved_at, v.resolved_by, v.outcome, dumps(incident_record(v)))


def _timeline_row(item: tuple[str, TimelineEntry]) -> Row:
    iid, e = item
    return (iid, e.at, e.kind, dumps(e.detail))


def _page_row(p: PageRow) -> Row:
    return (p.id, p.incident, p.responder, p.channel, p.level, dumps(p.payload), p.status,
            p.attempts, p.last_error, p.created_at, p.updated_at, p.sent_at, p.latency,
            p.kind, p.receipt, p.delivered_at)


def _attempt_row(a: AttemptRow) -> Row:
    return (a.page, a.number, a.channel, a.ok, a.error, a.latency, a.receipt, a.at)


def _duty_row(item: tuple[str, tuple[dict[str, Any], float]]) -> Row:
    rid, (snap, at) = item
    return (rid, dumps(snap), at)


def _audit_row(item: tuple[float, str, str, dict[str, Any]]) -> Row:
    at, kind, subject, detail = item
    return (at, kind, subject, dumps(detail))


def _device_row(item: tuple[str, tuple[str, dict[str, Any], float]]) -> Row:
    did, (booth, snap, at) = item
    return (did, booth, bool(snap["online"]), snap["last_seen"], snap["battery"], dumps(snap),
            at)


def dumps(value: Any) -> str:
    """Compact JSON: orjson, a tenth of json's time on the ingest path (each event's
    booth view is encoded to publish and to store); what orjson refuses (an integer past
    64 bits, a key that is not a string) goes json's way."""
    try:
        return orjson.dumps(value, default=_default).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__}")


class Backend(Protocol):
    """What `Store` needs of a database (monitor/store_sqlite.py, monitor/store_postgres.py)."""

    where: str  # the path, or the URL without a password: for messages and logs
    errors: tuple[type[Exception], ...]  # a store in trouble raises these: retried, no bug

    async def commit(self, batch: Batch) -> None:
        """Write the batch in one transaction, its `mark` first (`mark_statement`: none of it
        and `MarkMoved` if the mark is not what the batch expects); on an error nothing of it
        is kept, or, when the connection broke during the COMMIT, all of it may have been."""

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        """The rows of a query in the SQL both backends run (``?`` parameters)."""

    async def apart(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        """Run the statements in a transaction of their own, beside the writer's, committed
        when this returns; each one's row count."""

    async def close(self) -> None: ...


class Rows(Protocol):
    """A cursor of a `Reader` (sqlite3's, psycopg's)."""

    def fetchone(self) -> Any: ...
    def fetchmany(self, size: int) -> list[Any]: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...
    def close(self) -> None: ...


class Reader(Protocol):
    """The store on a read-only, blocking connection, for `boothwatch report`: the same
    portable SQL as `Store`'s reads, and a backend's JSON function where one is needed."""

    where: str
    errors: tuple[type[Exception], ...]

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Rows: ...
    def has(self, table: str) -> bool:
        """The store has this table (one made by an older boothwatch may not)."""
    def json_field(self, column: str, key: str | int) -> str:
        """SQL for the value at `key` (an index or a name) of the JSON in `column`."""
    def close(self) -> None: ...


def settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
