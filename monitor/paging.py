"""Paging: the core's pages and notices become deliveries, recorded at every step.

A page is stored as ``queued`` and handed to the dispatcher (`alerts.channels`),
which tries the responder's channels in their fallback order and retries with
backoff. Every attempt updates the page's row and adds an attempt row; a channel
that delivered it, or one that failed over to the next, is reported to the core
(`PageReport`), and a page that every retry failed is reported as `PageFailed`,
so the core escalates at once: no adapter hides a failure. A page printed on a
console nobody watches reached nobody: the attempt is recorded as printed
(result ``printed``, not ok) and, for the page, as a failed one. Pages queued
or mid-retry when the service stopped are sent again at start.

Notices ("Ana is attending"), messages about boothwatch itself (monitoring
down or restored, a self-test nobody answered) and self-test pages (one channel
each: a test of that channel) take the same path, recorded but never escalated;
when each channel last delivered to each responder is kept for /api/responders
and /metrics. A Pushover
emergency page is followed by its receipt: the nurse's acknowledgement on her
phone acknowledges the incident.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import structlog
from ulid import ULID

from alerts.delivery import (
    PRIORITY_RANKS,
    Attempt,
    Delivery,
    DeliveryError,
    DeliveryKind,
    Dispatcher,
    Gate,
)
from alerts.factory import build_channels
from alerts.receipts import ReceiptWatcher
from alerts.tokens import AckTokens
from devices.mqtt import MqttLink, NotConnected
from monitor.codec import iso
from monitor.core.events import Acknowledge, Event, PageFailed, PageReport, SendNotice, SendPage
from monitor.core.incident import IllegalTransition
from monitor.core.selftest import SelfTestPage
from monitor.core.selfwatch import Recipient
from monitor.core.settings import Config
from monitor.core.site import UnknownIncident
from monitor.i18n import Language
from monitor.metrics import Metrics, log_soon
from monitor.store import AttemptRow, PageRow, Store

log = structlog.get_logger(__name__)

Tell = Callable[[Event, float], object]


class Paging:
    def __init__(self, config: Config, *, store: Store, link: MqttLink, tokens: AckTokens,
                 metrics: Metrics, clock: Callable[[], float], session: aiohttp.ClientSession,
                 tell: Tell, retry_delays: tuple[float, ...], language: Language,
                 gate: Gate | None = None) -> None:
        """``tell(event, now)`` hands the core what became of a page (the driver);
        `language` says the core's words (pages, notices) as the site reads them."""
        self._config = config
        self.language = language
        self._store = store
        self._link = link
        self._tokens = tokens
        self._metrics = metrics
        self._clock = clock
        self._tell = tell
        self._responders = {r.id: r for r in config.responders}
        self.receipts: ReceiptWatcher | None = None
        if any(c.type == "pushover" for c in config.channels.values()):
            self.receipts = ReceiptWatcher(session, config.channels, self._receipt_acknowledged,
                                           self._receipt_delivered)
        channels = build_channels(config.channels, session, self._publish, config.site.id,
                                  gettext=language.gettext, policies=config.escalation,
                                  receipts=self.receipts)
        # `gate`: the site's lease (`monitor.lease`), asked before every attempt
        self.dispatcher = Dispatcher(channels, self._attempted, self._failed, retry_delays,
                                     gate=gate)
        # (responder, channel) -> when that channel last delivered something to them
        self.delivered_at: dict[tuple[str, str], float] = {}
        # a self-test page delivered (reason None) or undeliverable (`monitor.selftests`)
        self.on_test: Callable[[str, str | None], None] | None = None
        for name, channel in config.channels.items():
            printed = () if channel.reaches_a_person else ("printed",)
            for result in ("sent", "failed", *printed):
                metrics.pages.labels(name, result)

    # --- the core's commands (the driver's page port) -----------------------------------

    def page(self, cmd: SendPage, now: float) -> asyncio.Future[None] | None:
        payload = {
            "kind": "page",
            "incident": cmd.incident,
            "site": self._config.site.id,
            "booth": cmd.booth,
            "booth_name": cmd.booth_name,
            "priority": cmd.priority,
            "urgent": cmd.urgent,
            "triggers": list(cmd.triggers),
            "level": cmd.level,
            "responder": cmd.responder,
            "message": self.language.say(cmd.message),
            "raised_at": iso(cmd.raised_at),
            "ack_url": self.ack_url(cmd.incident, cmd.responder),
        }
        done = self._send("page", cmd.incident, cmd.responder, cmd.level, payload, now)
        # logged once the page is on its way: a log line (redacted) costs tens of µs
        log_soon("page", incident=cmd.incident, booth=cmd.booth, responder=cmd.responder,
                 escalation_level=cmd.level, priority=cmd.priority, urgent=cmd.urgent)
        return done

    def notice(self, cmd: SendNotice, now: float) -> asyncio.Future[None] | None:
        payload = {
            "kind": "notice",
            "incident": cmd.incident,
            "site": self._config.site.id,
            "booth": cmd.booth,
            "booth_name": cmd.booth_name,
            "responder": cmd.responder,
            "priority": cmd.priority,
            "message": self.language.say(cmd.message),
        }
        return self._send("notice", cmd.incident, cmd.responder, 0, payload, now)

    def system(self, outage: str, recipient: Recipient, payload: dict[str, Any],
               now: float) -> None:
        """A message about boothwatch itself, recorded under the outage's id, over the
        recipient's channels that need no broker; never escalated."""
        self._send("system", outage, recipient.responder, 0, payload, now, recipient.channels)

    def test(self, page: SelfTestPage, payload: dict[str, Any], now: float) -> None:
        """A self-test page, on its one channel (a test of that channel: no fallback)."""
        self._send("test", page.test, page.responder, 0, payload, now, (page.channel,))

    async def load_deliveries(self) -> None:
        """When each channel last delivered to each responder, as the store recorded it."""
        for responder, channel, at in await self._store.last_deliveries():
            self.delivered_at[(responder, channel)] = at

    def stop(self, incident: str) -> None:
        """Stop retrying the incident's pages; Pushover emergency retries stop buzzing."""
        self.dispatcher.cancel(incident)
        if self.receipts is not None:
            self.receipts.cancel(incident)

    def ack_url(self, incident: str, responder: str) -> str:
        return f"{self._config.http.public_url}/ack/{self._tokens.make(incident, responder)}"

    # --- one way to make a delivery and its row ------------------------------------------

    def _send(self, kind: DeliveryKind, incident: str, responder_id: str, level: int,
              payload: dict[str, Any], now: float,
              channels: tuple[str, ...] | None = None) -> asyncio.Future[None] | None:
        """Store the page as queued and hand it to the dispatcher."""
        responder = self._responders.get(responder_id)
        if responder is None:
            log.error("page_unknown_responder", responder=responder_id)
            return None
        delivery = Delivery(page_id=str(ULID()), incident=incident, responder=responder_id,
                            level=level, channels=channels or responder.channels,
                            payload=payload, addresses=responder.address, kind=kind,
                            **_ranking(payload))
        self.dispatcher.submit(delivery)
        return self._store.put_page(_row(delivery, now, delivery.channels[0], "queued", 0))

    async def resend_unsent(self) -> None:
        """Pages queued or mid-retry when we stopped are sent again: none is dropped."""
        for row in await self._store.unsent_pages():
            log.warning("page_resent_after_restart", incident=row.incident,
                        responder=row.responder, channel=row.channel)
            responder = self._responders.get(row.responder)
            # a responder removed from the config since: the channel it was queued for
            self.dispatcher.submit(Delivery(
                page_id=row.id, incident=row.incident, responder=row.responder,
                level=row.level, payload=row.payload,
                channels=responder.channels if responder is not None else (row.channel,),
                addresses=responder.address if responder is not None else {},
                kind="notice" if row.kind == "notice" else "page", **_ranking(row.payload)))

    async def watch_receipts(self) -> None:
        """Follow again the Pushover emergency receipts of pages still open at a restart."""
        if self.receipts is None:
            return
        for row in await self._store.open_receipts():
            channel = self._config.channels.get(row.channel)
            # only Pushover emergencies have receipts to poll (others: a message id)
            if (row.receipt is not None and channel is not None
                    and channel.type == "pushover" and row.payload.get("priority") == "high"):
                self.receipts.watch(row.receipt, row.incident, row.responder, row.channel)

    # --- what the dispatcher reports -----------------------------------------------------

    def _attempted(self, delivery: Delivery, attempt: Attempt) -> None:
        now = self._clock()
        status = "sent" if attempt.ok else ("failed" if attempt.final else "retrying")
        result = "sent" if attempt.ok else ("printed" if attempt.printed else "failed")
        self._metrics.pages.labels(attempt.channel, result).inc()
        if attempt.ok:
            self._metrics.page_latency.labels(attempt.channel).observe(attempt.latency)
            self.delivered_at[(delivery.responder, attempt.channel)] = now
            if delivery.kind == "test" and self.on_test is not None:
                self.on_test(delivery.incident, None)
        else:
            log.warning("page_printed_not_delivered" if attempt.printed
                        else "page_attempt_failed", incident=delivery.incident,
                        responder=delivery.responder, channel=attempt.channel,
                        kind=delivery.kind, attempt=attempt.number, error=attempt.error,
                        final=attempt.final, page_id=delivery.page_id)
        self._store.put_page(_row(
            delivery, now, attempt.channel, status, attempt.number, last_error=attempt.error,
            sent_at=now if attempt.ok else None, latency=attempt.latency if attempt.ok else None,
            receipt=attempt.receipt))
        self._store.add_attempt(AttemptRow(
            page=delivery.page_id, number=attempt.number, channel=attempt.channel,
            ok=attempt.ok, error=attempt.error, latency=attempt.latency,
            receipt=attempt.receipt, at=now))
        if delivery.kind == "system" and attempt.ok:
            event = str(delivery.payload.get("event"))
            self._metrics.monitoring_messages.labels(event, "sent").inc()
            log.info("monitoring_message_sent", event_name=event, outage=delivery.incident,
                     responder=delivery.responder, channel=attempt.channel)
        if delivery.kind != "page":
            return
        channels = delivery.channels
        fell_back = (not attempt.ok and attempt.number <= len(channels)
                     and attempt.channel != channels[-1])
        if attempt.ok or fell_back:
            self._report(PageReport(delivery.incident, delivery.responder, delivery.level,
                                    attempt.channel, attempt.ok, attempt.error), now)

    def _failed(self, delivery: Delivery, reason: str) -> None:
        if delivery.kind == "test" and self.on_test is not None:
            self.on_test(delivery.incident, reason)
        if delivery.kind == "system":
            event = str(delivery.payload.get("event"))
            self._metrics.monitoring_messages.labels(event, "failed").inc()
            log.critical("monitoring_message_undeliverable", event_name=event,
                         outage=delivery.incident, responder=delivery.responder, error=reason)
        if delivery.kind != "page":
            return  # a notice that could not be delivered is recorded, never escalated
        self._report(PageFailed(delivery.incident, delivery.responder, delivery.level,
                                delivery.channels[-1], reason), self._clock())

    def _report(self, event: PageReport | PageFailed, now: float) -> None:
        try:
            self._tell(event, now)
        except UnknownIncident:
            pass  # resolved meanwhile; the pages table has the record

    def _receipt_acknowledged(self, incident: str, responder: str, receipt: str) -> None:
        """The nurse acknowledged the Pushover emergency alert on her phone."""
        now = self._clock()
        self._store.mark_receipt(receipt, "acknowledged", now)
        try:
            self._tell(Acknowledge(incident, responder, via="pushover"), now)
        except (UnknownIncident, IllegalTransition) as exc:
            log.info("pushover_ack_ignored", incident=incident, reason=type(exc).__name__)

    def _receipt_delivered(self, incident: str, responder: str, receipt: str,
                           at: float) -> None:
        self._store.mark_receipt(receipt, "delivered", at)

    async def _publish(self, topic: str, payload: bytes) -> None:
        """The mqtt channel's way out: our own broker link, confirmed by its PUBACK."""
        try:
            await self._link.publish_confirmed(topic, payload)
        except NotConnected as exc:
            raise DeliveryError(str(exc)) from exc


def _ranking(payload: dict[str, Any]) -> dict[str, Any]:
    """The delivery's priority and urgency, from its payload: which of many waiting
    attempts goes first (`alerts.delivery.Slots`). A payload without one (a self-test
    page) ranks as high; an unknown priority (a row from another version) as well."""
    priority = payload.get("priority")
    return {"priority": priority if priority in PRIORITY_RANKS else "high",
            "urgent": payload.get("urgent") is True}


def _row(delivery: Delivery, now: float, channel: str, status: str, attempts: int,
         **fields: Any) -> PageRow:
    """The page's row as of ``now`` (the store keeps the first created_at)."""
    return PageRow(id=delivery.page_id, incident=delivery.incident,
                   responder=delivery.responder, channel=channel, level=delivery.level,
                   payload=delivery.payload, status=status, attempts=attempts, created_at=now,
                   updated_at=now, kind=delivery.kind, **fields)

