"""The runtime: builds the parts around the pure core and runs their loops.

The path of a booth event, file by file::

    devices/mqtt.py        paho on the event loop; acknowledges only when told
    monitor/ingest.py      topic -> decoder -> flood gate -> dedupe -> event
    monitor/driver.py      core.handle(event, now) -> commands -> ports
    monitor/core/site.py   the decision: an incident, a page to the nurse on duty
    monitor/paging.py      the page stored as queued, handed to the dispatcher
    alerts/                the channels, tried in order, retried with backoff
    monitor/store.py       the batch commits; ingest acknowledges the MQTT message

Every long-lived loop is a named task under one TaskGroup, started here and nowhere
else: the store writer, the MQTT link, the core's timers, the garbage collector's
full collections (timed between deadlines), the self-watch, the clock watch, the
systemd watchdog, Pushover receipts and HTTP. When one of them fails,
the others stop and the service exits, for systemd to restart it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import secrets
from collections.abc import Callable, Mapping

import aiohttp
import structlog
from ulid import ULID

from alerts.delivery import after_pages
from alerts.http import client_session
from alerts.tokens import AckTokens, UsedLinks
from devices.mqtt import MqttLink
from monitor import i18n, startup
from monitor.api import TOKEN_ENV, Api
from monitor.board.feed import BoardFeed
from monitor.clock import ServiceClock
from monitor.codec import booth_json, incident_json
from monitor.core.booth import BoothView
from monitor.core.fatigue import DEFAULT_RUN
from monitor.core.incident import IncidentView
from monitor.core.settings import Config
from monitor.core.site import SiteCore
from monitor.driver import Driver
from monitor.health import Health
from monitor.http import serve
from monitor.ingest import DEDUPE_MEMORY, DEDUPE_WINDOW, RECEIVE_MAXIMUM, Ingest
from monitor.lease import Handover, LeaseLost, Share, SiteLease, lease_gauges
from monitor.logs import protect
from monitor.metrics import (
    Metrics,
    Observer,
    board_gauges,
    core_gauges,
    precreate,
    process_gauges,
    store_gauges,
)
from monitor.paging import Paging
from monitor.sdnotify import Notifier
from monitor.selftests import SelfTestRunner
from monitor.standby import stand_by
from monitor.station import PASSWORD_ENV as STATION_PASSWORD_ENV
from monitor.station import Stations
from monitor.store import ROSTER_SHIFTS, SITE_TIMEZONE, Store, dumps
from monitor.timers import (
    collect_garbage,
    deadline_loop,
    full_collections_timed,
    start_clock,
    watch_clock,
)
from monitor.topics import Topics

log = structlog.get_logger(__name__)

REPUBLISH_SLICE = 250  # booth states published on connect per loop turn (~8 ms of the loop)


class Publisher:
    """The driver's publish port: a booth's retained state, an incident's change, duty.

    Each goes on MQTT and to the station boards, encoded once for both, once the pages of
    the same turn are out (`after_pages`); every publish takes that one path, so they keep
    their order.
    """

    def __init__(self, link: MqttLink, topics: Topics, config: Config, board: BoardFeed) -> None:
        self._link = link
        self._topics = topics
        self._names = {b.id: b.name for b in config.booths}
        self._board = board

    def booth(self, view: BoothView) -> None:
        after_pages(self._booth, view)

    def incident(self, view: IncidentView) -> None:
        after_pages(self._incident, view)

    def _booth(self, view: BoothView) -> None:
        # retained state at QoS 0: it is a snapshot, republished in full on every reconnect,
        # and a PUBACK per event would cost the ingest path more than it buys
        payload = dumps(booth_json(view)).encode()
        self._link.publish(self._topics.state(view.id), payload, qos=0, retain=True)
        self._board.send(b"booth", payload)

    def _incident(self, view: IncidentView) -> None:
        payload = dumps(incident_json(view, self._names.get(view.booth, view.booth))).encode()
        self._link.publish(self._topics.incident(view.id), payload)
        self._board.send(b"incident", payload)

    def duty(self) -> None:
        after_pages(self._board.duty)  # duty has no MQTT topic; in order with the rest


class Runtime:
    def __init__(
        self,
        config: Config,
        *,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] | None = None,
        retry_delays: tuple[float, ...] = (0.5, 1, 2, 4, 8),
        share: Share | None = None,
    ) -> None:
        """`share`: this process serves several sites (`monitor.sites`), each a Runtime."""
        self.config = config
        self._share = share
        self.env = os.environ if env is None else env
        protect(config, self.env)  # what the logs must never show
        # the service clock unless a test brings its own
        self.clock: Callable[[], float] = ServiceClock() if clock is None else clock
        self.topics = Topics(config.site.id)
        self.metrics = Metrics()
        precreate(self.metrics, config)
        self.core = SiteCore(config, new_id=lambda: str(ULID()), restoring=True)  # in run
        # the config's check loaded it already, moments ago
        self.language = i18n.load(config.site.language, config.site.catalogs)
        self.used_links = UsedLinks(config.http.ack_link_ttl)  # ack links are single use
        self.notifier = Notifier(self.env)  # systemd: READY, WATCHDOG, STATUS, STOPPING
        self._retry_delays = retry_delays
        self.started = asyncio.Event()
        self.lease: SiteLease | None = None
        self._holding: asyncio.Task[None] | None = None  # the lease's renewals
        startup.mark("runtime_built")

    async def run(self, *, http: bool = True) -> None:
        """Run until cancelled; shut down cleanly (status offline, store flushed)."""
        cfg = self.config
        began = self.clock()  # nothing is watched from here until the link is up
        self.notifier.status("starting: opening the store")
        store = self.store = await Store.open(cfg.store.where, password=cfg.store.password,
                                              writer=cfg.site.id)
        startup.mark("store_open")
        lease = self.lease = self._site_lease()
        try:
            if lease is not None:
                # several processes share this store: stand by until the site is ours
                self.notifier.ready(f"standby: site {cfg.site.id} is watched by another "
                                    "process")
                self.metrics.watch(lease.gauges)
                collecting = gc.isenabled()
                gc.enable()  # standing by may last days: `boothwatch run` started with it off
                await self._stand_by(lease, http)
                if not collecting:
                    gc.disable()  # the restore, as on a start (monitor/cli.py)
                startup.mark("standby")  # the site watched by another process meanwhile
                # renewed from now on, not once restored: a restore longer than the ttl
                # (a day's event ids to load) would let the next standby take the site
                self._holding = asyncio.create_task(lease.hold(), name="lease")
                store.fence(cfg.site.id, lease.holder, lease.standing.epoch)
                await store.load_sessions()  # as the owner before us left them
                began = self.clock()  # watched by another process until now
                self.notifier.status(f"taking over site {cfg.site.id}: restoring")
            else:
                self.metrics.watch(lambda: lease_gauges(cfg.site.id, owner=True, epoch=None))
            if isinstance(self.clock, ServiceClock):
                start_clock(self.clock, await store.latest_time())
            # `boothwatch report` without a config: times in the site's zone, its shifts
            store.remember(SITE_TIMEZONE, cfg.site.timezone)
            store.remember(ROSTER_SHIFTS, dumps(sorted(
                {s.text for r in cfg.responders for s in r.shifts})))
            secret = self.env.get("BOOTHWATCH_SECRET") or await store.secret(
                "ack_secret", secrets.token_hex(32))
            self.tokens = AckTokens(secret, cfg.http.ack_link_ttl)
            self.stations = Stations(secret, self.env.get(STATION_PASSWORD_ENV))
            now = self.clock()
            self.used_links.load(await store.used_ack_links(now - cfg.http.ack_link_ttl))
            booths, incidents = await store.load_booths(), await store.load_open_incidents()
            devices, duty = await store.load_devices(), await store.load_duty()
            startup.mark("store_loaded")
            self.core.restore(booths=booths, incidents=incidents, devices=devices, duty=duty,
                              now=now)
            self.core.start(now)
            startup.mark("restored")
            # what start-up built (the config, the booths, the imported modules) lives as
            # long as the process: out of the collector's sight, every collection on the
            # ingest path walks only what events make (bench/ingest.py: ~5% more events/s).
            # Frozen without a collection first: its garbage is ~2,000 objects the imports
            # left, and at 10,000 booths a full collection walked 10^6 objects for 90 ms
            # of the start (bench/restart.py).
            gc.freeze()
            gc.enable()  # `boothwatch run` starts with it off (monitor/cli.py)
            async with client_session() as session:
                with full_collections_timed():
                    await self._serve(store, session, http, began)
        finally:
            if self._holding is not None:
                self._holding.cancel()
                with contextlib.suppress(asyncio.CancelledError, LeaseLost):
                    await self._holding
            if self._fenced():
                # another process owns the site: this one writes nothing more; the broker
                # keeps every event it did not acknowledge for the new owner
                log.warning("store_not_drained", reason="lease lost", pending=store.pending())
            else:
                try:
                    await asyncio.wait_for(store.drain(), 5)
                except Exception:
                    # the broker still holds every unacknowledged event: nothing is lost
                    log.exception("store_drain_failed")
            if lease is not None:
                if not self._fenced():
                    await lease.release()  # the standby takes over now, not in `ttl`
                lease.gone()
                await lease.close()
            await store.close()
            self.notifier.close()
            gc.unfreeze()  # collectable again (tests run many runtimes in one process)
            gc.enable()  # also when start-up failed before it was enabled
            log.info("stopped")

    def _site_lease(self) -> SiteLease | None:
        """The site's lease when the store is PostgreSQL (several processes may share it);
        None for SQLite, whose one process owns the site."""
        cfg = self.config.store
        if cfg.url is None:
            return None
        from monitor.store_postgres import conninfo

        return SiteLease(conninfo(cfg.url, cfg.password), self.config.site.id, ttl=cfg.lease,
                         share=self._share)

    async def _balance(self, lease: SiteLease) -> None:
        """Give the site back when this process owns more than its share (`Share`)."""
        while True:
            await asyncio.sleep(lease.ttl)
            if lease.share is not None and lease.share.surplus(lease.site):
                log.info("site_handed_over", site=lease.site, owned=len(lease.share.owned),
                         fair=lease.share.fair())
                raise Handover(lease.site)

    async def _stand_by(self, lease: SiteLease, http: bool) -> None:
        """Hot standby until the lease is ours: /healthz 200, /readyz 503 standby; systemd's
        watchdog kept fed."""
        watchdog = None
        if self.notifier.watchdog_interval is not None:
            interval = self.notifier.watchdog_interval

            async def feed() -> None:
                while True:
                    self.notifier.watchdog(f"standby: site {self.config.site.id}")
                    await asyncio.sleep(interval)

            watchdog = asyncio.create_task(feed(), name="sd-watchdog-standby")
        try:
            await stand_by(lease, self.config.http if http else None,
                           self.metrics.render_async, self.config.mqtt)
        finally:
            if watchdog is not None:
                watchdog.cancel()

    @staticmethod
    async def _held(holding: asyncio.Task[None]) -> None:
        """The lease's renewals, running since the takeover: LeaseLost stops the service."""
        await holding

    def _fenced(self) -> bool:
        """Has this process lost the site to another (it must write and send nothing)?"""
        return self.lease is not None and self.lease.standing.lost

    async def _serve(self, store: Store, session: aiohttp.ClientSession, http: bool,
                     began: float) -> None:
        """Build the parts on the open store, run them, and stop them in order."""
        cfg = self.config
        link = self.mqtt = MqttLink(cfg.mqtt, will=(self.topics.status, b"offline"),
                                    receive_maximum=RECEIVE_MAXIMUM)
        # paging reports back to the core through the driver, which pages through paging:
        # the lambda closes that loop once both exist
        paging = Paging(cfg, store=store, link=link, tokens=self.tokens, metrics=self.metrics,
                        clock=self.clock, session=session,
                        tell=lambda event, now: self.driver.handle(event, now),
                        retry_delays=self._retry_delays, language=self.language,
                        gate=self.lease)
        # the boards read duty through the Api, built below: the lambda waits for it
        board = self.board = BoardFeed(lambda: self.api.responders(channels=False))
        publisher = Publisher(link, self.topics, cfg, board)
        observer = Observer(self.metrics)
        observer.seed(await store.recent_outcomes(DEFAULT_RUN))
        self.driver = driver = Driver(self.core, store=store, publish=publisher, pages=paging,
                                      observe=observer)
        ingest = self.ingest = Ingest(cfg, driver, store, link, self.metrics, self.clock)
        ingest.remember(await store.event_ids_since(self.clock() - DEDUPE_WINDOW, DEDUPE_MEMORY))
        health = self.health = Health(cfg, core=self.core, link=link, store=store,
                                      paging=paging, notifier=self.notifier, clock=self.clock,
                                      down_since=began)
        await health.resume()
        selftests = self.selftests = SelfTestRunner(
            cfg, roster=self.core.roster, store=store, paging=paging, metrics=self.metrics,
            clock=self.clock)
        await paging.load_deliveries()
        await selftests.resume()
        self.api = Api(cfg, self.core, driver, store, paging, health, self.metrics,
                       self.tokens, self.used_links, self.clock,
                       self.env.get(TOKEN_ENV) or None,
                       self.stations, board, selftests)
        link.attach(subscriptions=ingest.subscriptions, on_message=ingest.on_message,
                    order=ingest.order,
                    on_connected=lambda _present: self._connected(publisher),
                    on_link=health.on_link)
        store.on_failed = ingest.store_failed
        for gauges in (lambda: core_gauges(self.core, self.clock, self.metrics.per_booth),
                       lambda: process_gauges(self.clock), health.gauges, ingest.gauges,
                       lambda: store_gauges(store),
                       lambda: board_gauges(board, cfg, self.clock), selftests.gauges):
            self.metrics.watch(gauges)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(store.run_writer(), name="store-writer")
                if self.lease is not None:
                    assert self._holding is not None  # since the takeover
                    tg.create_task(self._held(self._holding), name="lease")
                    if self._share is not None:
                        tg.create_task(self._balance(self.lease), name="balance")
                tg.create_task(link.run(), name="mqtt")
                tg.create_task(deadline_loop(self.clock, driver.next_deadline, driver.wake,
                                             driver.fire_some, "timer"), name="timers")
                tg.create_task(collect_garbage(self.clock, self.core.next_deadline), name="gc")
                if isinstance(self.clock, ServiceClock):
                    tg.create_task(watch_clock(self.clock, self.metrics), name="clock")
                tg.create_task(health.watch(), name="selfwatch")
                if selftests.plan is not None:
                    tg.create_task(selftests.run(), name="self-tests")
                if self.notifier.watchdog_interval is not None:
                    tg.create_task(health.watchdog(self.notifier.watchdog_interval),
                                   name="sd-watchdog")
                if paging.receipts is not None:
                    await paging.watch_receipts()
                    tg.create_task(paging.receipts.run(), name="pushover-receipts")
                if http:
                    tg.create_task(serve(self.api), name="http")
                    tg.create_task(board.watch_duty(), name="board-duty")
                await paging.resend_unsent()
                driver.wake.set()  # fire whatever fell due while we were down
                startup.mark("serving")
                log.info("started", site=cfg.site.id, booths=len(cfg.booths),
                         open_incidents=len(self.core.incidents))
                if phases := startup.phases():
                    log.info("startup", phases_ms=phases)
                self.started.set()
                health.serving()
        except* LeaseLost:
            # from the renewal or from a commit the database refused: pages stop at once
            assert self.lease is not None
            self.lease.lose()
            raise
        finally:
            health.stopping = True
            # what the link read and has not handled yet, handled now, while pages can
            # still go out (a QoS 0 message is not sent again); nothing if fenced
            link.stop_reading(handle=not self._fenced())
            self.notifier.stopping(
                f"stopping: {len(self.core.incidents)} open incident(s) kept in the store")
            await paging.dispatcher.drain(2.0)
            await paging.dispatcher.close()
            # publishes wait two loop turns behind the pages (after_pages): let the last
            # ones reach the link before it closes
            for _ in range(3):
                await asyncio.sleep(0)
            # the new owner's "online" must stand: a process that lost the site says nothing
            await link.close(final=None if self._fenced() else (self.topics.status, b"offline"))

    def _connected(self, publisher: Publisher) -> None:
        if self.mqtt.generation > 1:
            self.metrics.broker_reconnects.inc()
        self.mqtt.publish(self.topics.status, b"online", retain=True)
        # every booth's state (QoS 0: whatever a broken link lost, send again), a slice a
        # loop turn: at 10,000 booths all at once held the loop for 0.4 s, and with it the
        # subscription's acknowledgement (/readyz), pages and the events kept for us
        self._republish(publisher, self.mqtt.generation, list(self.core.booths), 0)

    def _republish(self, publisher: Publisher, generation: int, booths: list[str],
                   start: int) -> None:
        if generation != self.mqtt.generation:
            return  # connected again meanwhile: that connection sends them all
        # as they are now: a booth changed since is newer; after a restart, each view is
        # built here, a slice at a time, not all by the restore (`SiteCore.restore`)
        for view in self.core.booth_views(booths[start:start + REPUBLISH_SLICE]):
            publisher.booth(view)
        if start + REPUBLISH_SLICE < len(booths):
            asyncio.get_running_loop().call_soon(self._republish, publisher, generation,
                                                 booths, start + REPUBLISH_SLICE)

    # what tests and the demo read of a running service
    def booths_json(self) -> list[dict[str, object]]:
        return self.api.booths()

    async def incidents_json(self, open_only: bool, limit: int = 500
                             ) -> tuple[list[dict[str, object]], int]:
        return await self.api.incidents(open_only, limit)
