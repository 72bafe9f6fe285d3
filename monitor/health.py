"""Health: is the service watching the booths? The broker link, systemd, and /readyz.

The link to the broker is watched by the pure `SelfWatch` (monitor/core/selfwatch.py):
cut off for ``outage_page_after``, the people on duty are paged, through channels
that need no broker, that monitoring is down; once the link has held again for
`OUTAGE_SETTLE`, they hear it is restored. The page survives a restart: the audit
log keeps the outage, and a restart mid-outage carries it on (`resume`), so nobody
is paged twice and the restored message reaches those who were told.

systemd hears READY=1 once the service serves (started and subscribed), WATCHDOG=1
from a task on the event loop (a stuck loop stops the pings, and systemd restarts
us), and a STATUS line a technician reads in ``systemctl status``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from prometheus_client.core import Metric
from ulid import ULID

from devices.mqtt import MqttLink
from monitor.codec import iso
from monitor.core.durations import format_duration
from monitor.core.selfwatch import (
    MonitoringDown,
    MonitoringRestored,
    Notice,
    Recipient,
    SelfWatch,
    State,
    outage_recipients,
)
from monitor.core.settings import Config
from monitor.core.site import SiteCore
from monitor.core.words import monitoring_down, monitoring_restored
from monitor.metrics import gauge
from monitor.paging import Paging
from monitor.sdnotify import Notifier
from monitor.store import Store
from monitor.timers import deadline_loop

log = structlog.get_logger(__name__)

# the link must hold this long after a paged outage before "monitoring restored" goes out,
# so a broker that flaps never sends the staff a stream of down/restored messages
OUTAGE_SETTLE = 10.0


class Health:
    def __init__(self, config: Config, *, core: SiteCore, link: MqttLink, store: Store,
                 paging: Paging, notifier: Notifier, clock: Callable[[], float],
                 down_since: float) -> None:
        """``down_since``: when the process began: no booth is watched before the link is up."""
        self._config = config
        self._core = core
        self._link = link
        self._store = store
        self._paging = paging
        self.notifier = notifier
        self._clock = clock
        self.selfwatch = SelfWatch(config.mqtt.outage_page_after, OUTAGE_SETTLE,
                                   self._recipients, lambda: f"outage-{ULID()}",
                                   now=down_since)
        self._wake = asyncio.Event()
        self.started = asyncio.Event()
        self._ready_sent = False
        self.stopping = False

    def _recipients(self, now: float) -> tuple[tuple[Recipient, ...], bool]:
        return outage_recipients(self._config.responders, self._config.channels,
                                 lambda rid: self._core.roster.on_duty(rid, now))

    async def resume(self) -> None:
        """A monitoring-down page sent before a restart, with no restored message since:
        carry on with that outage, so nobody is paged twice and the restored message
        still goes to those who were told."""
        last = await self._store.audit(limit=1, subject="broker")
        if not last or last[0]["kind"] != "monitoring_down":
            return
        entry = last[0]
        responders = {r.id for r in self._config.responders}
        try:
            recipients = []
            for r in entry["recipients"]:
                channels = tuple(c for c in r["channels"] if c in self._config.channels)
                if r["responder"] in responders and channels:
                    recipients.append(Recipient(r["responder"], channels))
            self.selfwatch.resume(str(entry["outage"]), float(entry["since"]), recipients)
        except (KeyError, TypeError, ValueError):
            # our own record, but never a reason not to start: the outage is watched afresh
            log.exception("monitoring_down_not_resumed")
            return
        log.warning("monitoring_down_resumed", outage=entry["outage"])

    # --- the broker link --------------------------------------------------------------

    def on_link(self, up: bool) -> None:
        """The broker link: events reach us (connected and subscribed), or no longer."""
        if self.stopping:
            return  # our own disconnect at shutdown, not an outage
        now = self._clock()
        self._tell(self.selfwatch.observe(up, now), now)
        self._wake.set()
        self.notifier.status(self.status(now))
        self.maybe_ready()

    async def watch(self) -> None:
        await deadline_loop(self._clock, self.selfwatch.next_deadline, self._wake,
                            lambda now: self._tell(self.selfwatch.on_timer(now), now),
                            "selfwatch")

    def _tell(self, notices: list[Notice], now: float) -> None:
        name = self._config.site.name
        say = self._paging.language.say
        for notice in notices:
            recipients = [r.responder for r in notice.recipients]
            match notice:
                case MonitoringDown():
                    event, priority = "monitoring_down", "high"
                    title, message = map(say, monitoring_down(name, now - notice.since))
                    log.critical(event, outage=notice.outage, since=notice.since,
                                 recipients=recipients, everyone=notice.everyone)
                    if not notice.recipients:
                        log.critical("monitoring_down_nobody_reachable",
                                     reason="no responder has a channel other than mqtt")
                    detail: dict[str, Any] = {"everyone": notice.everyone}
                    self.notifier.status(self.status(now))
                case MonitoringRestored():
                    event, priority = "monitoring_restored", "low"
                    title, message = map(say, monitoring_restored(name, notice.down_for))
                    log.warning(event, outage=notice.outage, down_for=notice.down_for,
                                recipients=recipients)
                    detail = {"back": notice.back, "down_for": notice.down_for}
            self._store.add_audit(now, event, "broker", {
                "outage": notice.outage, "since": notice.since,
                "recipients": [{"responder": r.responder, "channels": list(r.channels)}
                               for r in notice.recipients],
                **detail})
            payload = {
                "kind": "system", "event": event, "outage": notice.outage,
                "site": self._config.site.id, "site_name": name, "priority": priority,
                "title": title, "message": message, "since": iso(notice.since),
            }
            for r in notice.recipients:
                self._paging.system(notice.outage, r, {**payload, "responder": r.responder},
                                    now)
        if notices:
            self.maybe_ready()

    # --- systemd ----------------------------------------------------------------------

    def serving(self) -> None:
        """Started: restored, subscribed (or trying), serving HTTP."""
        self.started.set()
        self.maybe_ready()

    def maybe_ready(self) -> None:
        """READY=1 once serving: started and subscribed. A broker still unreachable when
        the staff have been paged about it gets READY too: a restart would not bring it
        back, and would only interrupt the escalation of open incidents."""
        if self._ready_sent or not self.started.is_set() or self.stopping:
            return
        if self._link.ready or self.selfwatch.state in (State.PAGED, State.SETTLING):
            self._ready_sent = True
            if self.notifier.ready(self.status(self._clock())):
                log.info("systemd_ready")

    async def watchdog(self, interval: float) -> None:
        """WATCHDOG=1 from a task on the event loop: a stuck loop stops the pings."""
        while True:
            self.notifier.watchdog(self.status(self._clock()))
            await asyncio.sleep(interval)

    def status(self, now: float) -> str:
        incidents = f"{len(self._core.incidents)} open incident(s)"
        if self._link.ready:
            return (f"watching {len(self._config.booths)} booths; {incidents}; "
                    "broker connected")
        down = format_duration(self.selfwatch.down_seconds(now))
        if self.selfwatch.state in (State.PAGED, State.SETTLING):
            told = "staff paged that monitoring is down"
        else:
            told = f"staff paged after {format_duration(self.selfwatch.page_after)}"
        return f"BROKER UNREACHABLE for {down}, booths unwatched ({told}); {incidents}"

    # --- readiness and metrics --------------------------------------------------------

    async def readiness(self) -> list[str]:
        """Why the service is not ready (empty when it is): /readyz."""
        reasons = []
        if not self._link.connected:
            reasons.append("broker not connected")
        elif not self._link.ready:
            reasons.append("broker subscription not acknowledged")
        trouble = await self._store.unwritable()
        if trouble is not None:
            reasons.append(f"store not writable: {trouble}")
        return reasons

    def gauges(self) -> Iterable[Metric]:
        now = self._clock()
        yield gauge("boothwatch_broker_connected", "1 while connected to the MQTT broker",
                    [], {(): 1.0 if self._link.connected else 0.0})
        yield gauge("boothwatch_broker_disconnected_seconds",
                    "How long no booth event could reach us: not connected and "
                    "subscribed to the broker (0 while connected)", [],
                    {(): self.selfwatch.down_seconds(now)})
        yield gauge("boothwatch_monitoring_down",
                    "1 from the monitoring-down page until the restored message", [],
                    {(): float(self.selfwatch.state in (State.PAGED, State.SETTLING))})
