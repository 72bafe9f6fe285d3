"""Who watches a site when several `boothwatch run` share one PostgreSQL store: a lease.

Each site has one row in its store's ``lease`` table: the holder (a process), an epoch
(bumped at every change of holder) and an expiry in the database's clock. The owner
renews it every ``ttl / 3``; a standby tries to take it every ``ttl / 6`` and succeeds
only once it has expired. Only the owner subscribes to the site's topics, runs its
timers, pages and publishes (`monitor.runtime`); a standby keeps its config loaded and
its store open, and answers ``/readyz`` with 503 ``standby``.

Why a row and not an advisory lock: an advisory lock lives as long as its session, and a
session of a frozen or cut-off owner lives until TCP gives up on it (the keepalives of
`monitor.store_postgres`, seconds to a minute, or longer where a proxy sits between), so
the time to notice a dead owner would be whatever the network makes it. A row with an
expiry in one clock, the database's, bounds it at ``ttl`` whatever happens to the owner
and its connections, and its epoch is what fences the owner's writes.

**Fencing.** An owner acts only while its lease is good on its own monotonic clock:
`Standing` counts ``ttl`` (less a margin) from the moment a successful renewal was
*sent*, so the owner's permission ends before the row's expiry, which the database counts
from when it *ran* the renewal. Every page is sent only with that permission (the
dispatcher asks `Standing.permit` before each attempt), and every commit checks the row
in its own transaction (``lease_check``, ``FOR SHARE``): a takeover waits for a commit
under way, and a commit after it fails. So an owner frozen for longer than ``ttl``
(SIGSTOP, a VM paused, swap) that wakes up sends nothing: its first page waits for one
renewal, which finds the lease taken, and the process stands down (exit 75, systemd
restarts it as a standby). Nothing it had not stored is lost: the broker keeps every
event it had not acknowledged for the site's persistent session, which the new owner
takes over with the same client id.

**The store away.** When the renewal cannot reach the database at all (a restart, a
failover of PostgreSQL), nobody can take the lease either. The owner keeps paging from
memory, as it does through any store trouble (the batch is held and retried): once its
permission has run out, an answer "unreachable" to a renewal *sent after that* opens the
gate again. A partition that cuts the owner off from the database but not the standby
may then let both page for a while: page twice rather than not at all. The first
renewal that reaches the database settles it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from monitor.exits import OperatorError

if TYPE_CHECKING:
    import psycopg

# psycopg is imported by the methods that talk to the database: this module's lease
# errors and gauges serve every runtime, and a SQLite site (no lease) starts ~40 ms
# sooner without it (bench/restart.py)

log = structlog.get_logger(__name__)

DEFAULT_TTL = 3.0
MARGIN = 0.1  # of the ttl: the owner's own count of its lease ends this much earlier
TEMPFAIL = 75  # EX_TEMPFAIL: the lease went to another process; systemd restarts us
ERROR_LOG_EVERY = 30.0

# the lease of a site, in the site's own schema (created with the store's other tables)
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS lease (site TEXT PRIMARY KEY, holder TEXT NOT NULL,"
    " epoch BIGINT NOT NULL, expires_at TIMESTAMPTZ NOT NULL,"
    " taken_at TIMESTAMPTZ NOT NULL)",
    # every commit of an owner begins with it: refused (SQLSTATE BW001) once the lease
    # has another holder or epoch; FOR SHARE makes a takeover wait for the commit
    "CREATE OR REPLACE FUNCTION lease_check(p_site TEXT, p_holder TEXT, p_epoch BIGINT)"
    " RETURNS void LANGUAGE plpgsql AS $$ BEGIN"
    " PERFORM 1 FROM lease WHERE site = p_site AND holder = p_holder AND epoch = p_epoch"
    " FOR SHARE;"
    " IF NOT FOUND THEN RAISE EXCEPTION 'the lease of site % is no longer % epoch %',"
    " p_site, p_holder, p_epoch USING ERRCODE = 'BW001'; END IF; END $$",
)
FENCED = "BW001"
# the processes that serve the site (owner and standbys): each one's last sign of life,
# for a fair share of many sites among several processes (`Share`)
MEMBERS = ("CREATE TABLE IF NOT EXISTS lease_members (holder TEXT PRIMARY KEY,"
           " seen_at TIMESTAMPTZ NOT NULL)")

_ACQUIRE = (
    "INSERT INTO lease AS l (site, holder, epoch, expires_at, taken_at)"
    " VALUES (%(site)s, %(holder)s, 1, now() + %(ttl)s * interval '1 second', now())"
    " ON CONFLICT (site) DO UPDATE SET holder = excluded.holder, epoch = l.epoch + 1,"
    " expires_at = excluded.expires_at, taken_at = now()"
    " WHERE l.expires_at < now() - %(grace)s * interval '1 second' RETURNING epoch")
_RENEW = (
    "UPDATE lease SET expires_at = now() + %(ttl)s * interval '1 second'"
    " WHERE site = %(site)s AND holder = %(holder)s AND epoch = %(epoch)s RETURNING epoch")
_RELEASE = (
    "UPDATE lease SET expires_at = now() - interval '1 second'"
    " WHERE site = %(site)s AND holder = %(holder)s AND epoch = %(epoch)s")
_WHO = "SELECT holder, epoch, expires_at > now() FROM lease WHERE site = %(site)s"
# here, and how many processes serve the site (this one included); members silent for an
# hour are forgotten
_SEEN = (
    "WITH seen AS (INSERT INTO lease_members (holder, seen_at) VALUES (%(holder)s, now())"
    " ON CONFLICT (holder) DO UPDATE SET seen_at = now()),"
    " gone AS (DELETE FROM lease_members WHERE seen_at < now() - interval '1 hour')"
    " SELECT count(*) FILTER (WHERE holder <> %(holder)s) + 1 FROM lease_members"
    " WHERE seen_at > now() - %(ttl)s * interval '1 second'")


def holder_name() -> str:
    """This process, as the lease table and the logs name it: host, pid, and a few random
    characters (a pid is reused after a restart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


class Handover(Exception):
    """This process owns more than its share of the sites: it gives one back (cleanly:
    drained, released) and stands by for it."""


class Share:
    """One process's fair share of the sites it is configured for, among the processes
    that serve them (`boothwatch run --config DIR`): with M sites and P processes alive,
    ``ceil(M / P)`` each.

    A process below its share takes an expired lease at once; one at or above it only
    after the lease has stayed expired for half a ttl (nobody below their share took it:
    a site is never left unwatched for fairness). A process above its share gives back
    the site it took last, one at a time."""

    def __init__(self, sites: int) -> None:
        self.sites = sites
        self.holder = holder_name()  # the process, in every site's lease table
        self.owned: dict[str, float] = {}  # site -> when taken (monotonic)
        self.members: dict[str, int] = {}  # site -> processes that serve it, as last read

    def fair(self) -> int:
        return math.ceil(self.sites / max(1, max(self.members.values(), default=1)))

    def grace(self, ttl: float) -> float:
        return 0.0 if len(self.owned) < self.fair() else ttl / 2

    def surplus(self, site: str) -> bool:
        """Should `site` be given back now?"""
        if len(self.owned) <= self.fair() or site not in self.owned:
            return False
        return site == max(self.owned, key=lambda s: self.owned[s])


class LeaseLost(OperatorError):
    """The site's lease went to another process: stand down (exit 75; systemd restarts
    the service, which comes back as a standby)."""

    status = TEMPFAIL


class Standing:
    """Whether the owner may act now, from what its renewals answered (pure: the caller
    gives the monotonic time)."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.epoch: int | None = None
        self.valid_until = -math.inf  # monotonic
        self.lost = False
        self._unreachable = False  # a renewal sent after valid_until could not be answered

    def renewed(self, sent: float, epoch: int) -> None:
        self.epoch = epoch
        self.valid_until = max(self.valid_until, sent + self.ttl * (1 - MARGIN))
        self._unreachable = False

    def refused(self) -> None:
        self.lost = True

    def unreachable(self, sent: float) -> None:
        if sent >= self.valid_until:
            self._unreachable = True

    def permit(self, now: float) -> bool:
        """May the owner page and publish at `now`?"""
        if self.lost or self.epoch is None:
            return False
        return now < self.valid_until or self._unreachable


class SiteLease:
    """The lease of one site in its PostgreSQL store: taken, held, given back.

    One connection of its own (not the store's pool: a commit waiting on a lock must not
    delay a renewal), reopened when it breaks."""

    def __init__(self, conninfo: str, site: str, *, ttl: float = DEFAULT_TTL,
                 holder: str | None = None, share: Share | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._conninfo = conninfo
        self.site = site
        self.holder = holder or (share.holder if share is not None else holder_name())
        self.ttl = ttl
        self.standing = Standing(ttl)
        self._monotonic = monotonic
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._kick = asyncio.Event()  # renew now: a page waits for permission
        self._changed = asyncio.Event()  # a renewal answered
        self._logged_at = -math.inf
        self.owner: tuple[str, int] | None = None  # who holds it, as last read (standby)
        self.share = share

    @property
    def epoch(self) -> int | None:
        return self.standing.epoch

    @property
    def held(self) -> bool:
        return self.standing.epoch is not None and not self.standing.lost

    # --- the gate: pages and publishes ---------------------------------------------------

    def permit(self) -> bool:
        return self.standing.permit(self._monotonic())

    async def settle(self) -> bool:
        """Wait until this process may act (True) or has lost the lease (False): a page
        due when the count ran out (the process was frozen) waits for one renewal."""
        while not self.permit():
            if self.standing.lost:
                return False
            self._changed.clear()
            self._kick.set()
            await self._changed.wait()
        return True

    # --- taking, holding, giving back ----------------------------------------------------

    async def acquire(self, every: float | None = None) -> int:
        """Try every ``ttl / 6`` until the lease is ours; its epoch."""
        import psycopg

        every = self.ttl / 6 if every is None else every
        while True:
            sent = self._monotonic()
            try:
                await self._seen()
                grace = 0.0 if self.share is None else self.share.grace(self.ttl)
                row = await self._one(_ACQUIRE, {"site": self.site, "holder": self.holder,
                                                 "ttl": self.ttl, "grace": grace})
            except (psycopg.Error, OSError) as exc:
                self._trouble("lease_acquire_failed", exc)
            else:
                if row is not None:
                    self.standing.renewed(sent, int(row[0]))
                    if self.share is not None:
                        self.share.owned[self.site] = self._monotonic()
                    log.info("lease_taken", site=self.site, holder=self.holder,
                             epoch=row[0])
                    return int(row[0])
                await self._read_owner()
            await asyncio.sleep(every)

    async def hold(self) -> None:
        """Renew every ``ttl / 3`` (at once when a page waits) until the lease is lost,
        then raise `LeaseLost`."""
        assert self.standing.epoch is not None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.ttl / 3):
                    await self._kick.wait()
            self._kick.clear()
            await self.renew()
            if self.standing.lost:
                await self._read_owner()
                holder, epoch = self.owner or ("nobody", 0)
                raise LeaseLost(f"the lease of site {self.site} went to {holder} "
                                f"(epoch {epoch}): standing down", site=self.site,
                                epoch=self.standing.epoch)

    async def renew(self) -> None:
        import psycopg

        sent = self._monotonic()
        epoch = self.standing.epoch
        try:
            async with asyncio.timeout(max(self.ttl / 3, 0.5)):
                await self._seen()
                row = await self._one(_RENEW, {"site": self.site, "holder": self.holder,
                                               "epoch": epoch, "ttl": self.ttl})
        except (psycopg.Error, OSError, TimeoutError) as exc:
            self.standing.unreachable(sent)
            self._trouble("lease_renew_failed", exc)
        else:
            if row is None:
                self.lose()
                log.critical("lease_lost", site=self.site, holder=self.holder, epoch=epoch)
            else:
                self.standing.renewed(sent, int(row[0]))
        self._changed.set()

    def lose(self) -> None:
        """The lease is another's (a commit was refused): nothing more is sent."""
        self.standing.refused()
        self._changed.set()

    async def release(self) -> None:
        """Give the lease back at a clean stop: a standby takes it at its next try instead
        of after ``ttl``."""
        import psycopg

        if not self.held:
            return
        epoch, self.standing.epoch = self.standing.epoch, None
        try:
            async with asyncio.timeout(2):
                await self._one(_RELEASE, {"site": self.site, "holder": self.holder,
                                           "epoch": epoch}, rows=False)
            log.info("lease_released", site=self.site, epoch=epoch)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            self._trouble("lease_release_failed", exc)

    async def close(self) -> None:
        import psycopg

        if self._conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await self._conn.close()
            self._conn = None

    # --- the connection --------------------------------------------------------------------

    async def _one(self, sql: str, args: dict[str, Any], *, rows: bool = True) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, connect_timeout=max(int(self.ttl), 1))
        try:
            cur = await self._conn.execute(sql, args)
            return await cur.fetchone() if rows else None
        except (psycopg.OperationalError, OSError):
            with contextlib.suppress(psycopg.Error, OSError):
                await self._conn.close()
            self._conn = None
            raise

    async def _seen(self) -> None:
        if self.share is not None:
            row = await self._one(_SEEN, {"holder": self.holder, "ttl": self.ttl})
            self.share.members[self.site] = int(row[0])

    def gone(self) -> None:
        """This process no longer owns the site (stopped, lost or handed over)."""
        if self.share is not None:
            self.share.owned.pop(self.site, None)

    async def _read_owner(self) -> None:
        import psycopg

        with contextlib.suppress(psycopg.Error, OSError):
            row = await self._one(_WHO, {"site": self.site})
            self.owner = None if row is None else (str(row[0]), int(row[1]))

    def _trouble(self, what: str, exc: BaseException) -> None:
        now = self._monotonic()
        if now - self._logged_at >= ERROR_LOG_EVERY:
            self._logged_at = now
            log.warning(what, site=self.site, error=" ".join(str(exc).split())
                        or type(exc).__name__)

    # --- metrics ---------------------------------------------------------------------------

    def gauges(self) -> Iterable[Metric]:
        return lease_gauges(self.site, owner=self.held, epoch=self.standing.epoch)


def lease_gauges(site: str, *, owner: bool, epoch: int | None) -> Iterable[Metric]:
    """``boothwatch_site_owner`` and ``boothwatch_lease_epoch``, per site: which process
    watches which site (a SQLite store has no lease: its one process owns the site)."""
    own = GaugeMetricFamily("boothwatch_site_owner",
                            "1 while this process owns the site (watches it and pages); "
                            "0 on a standby", labels=["site"])
    own.add_metric([site], 1.0 if owner else 0.0)
    yield own
    if epoch is not None:
        ep = GaugeMetricFamily("boothwatch_lease_epoch",
                               "The epoch of this process's lease of the site (bumped at "
                               "every change of owner)", labels=["site"])
        ep.add_metric([site], float(epoch))
        yield ep
