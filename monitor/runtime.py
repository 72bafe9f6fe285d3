"""The runtime: wires the pure core to MQTT, SQLite, pages, HTTP, metrics and logs.

Path of a booth event: paho calls `_on_message` on the loop thread; it is
parsed, deduplicated, handed to the core, and the commands are carried out at
once (pages go to the dispatcher without waiting for the disk). The event and
every state change join the store's current batch; the message is acknowledged
to the broker only when that batch has committed. A crash before the commit
means the broker redelivers, the core sees the event again, and at worst a
page goes out twice, never zero times.

Timers: one task sleeps until the core's next deadline (or until an event
moved it) and calls ``on_timer``. Times are epoch seconds from the service
clock (`monitor.clock`): read from the wall clock at start, then advanced by the
monotonic clock, so an NTP step neither fires a timer early nor holds one back,
and a restart resumes every plan against its original deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
import structlog
from prometheus_client import Counter
from prometheus_client.core import Metric
from ulid import ULID

from alerts.delivery import Attempt, Delivery, DeliveryError, DeliveryKind, Dispatcher
from alerts.factory import build_channels
from alerts.http import client_session
from alerts.receipts import ReceiptWatcher
from alerts.tokens import AckTokens, UsedLinks
from devices import adapters
from devices.adapters.canonical import REASONS, Parsed, Rejected, parse_event, parse_topic
from devices.mqtt import MqttLink, NotConnected
from monitor.clock import ServiceClock
from monitor.core.booth import BoothView
from monitor.core.durations import format_duration
from monitor.core.events import OUTCOMES as OUTCOME_VALUES
from monitor.core.events import (
    Acknowledge,
    Audit,
    BoothChanged,
    Button,
    Command,
    DeviceChanged,
    DeviceReading,
    DutyChanged,
    Event,
    Heartbeat,
    IncidentChanged,
    IncidentEvent,
    PageFailed,
    PageReport,
    Press,
    SendNotice,
    SendPage,
    SetDuty,
    SiteEvent,
)
from monitor.core.flood import (
    RATE_LIMITED,
    Kind,
    Limiter,
    Sender,
    cannot_be_a_call,
    held_slot,
    may_call,
    reading_kind,
)
from monitor.core.incident import Action, IllegalTransition, IncidentView, TimelineEntry, Trigger
from monitor.core.readings import Reading
from monitor.core.roster import UnknownResponder
from monitor.core.selfwatch import (
    MonitoringDown,
    MonitoringRestored,
    Notice,
    Recipient,
    SelfWatch,
    State,
    outage_recipients,
)
from monitor.core.settings import Config, DeviceConfig
from monitor.core.site import SiteCore, UnknownIncident
from monitor.logs import RateLimit, protect
from monitor.metrics import OUTCOMES, Metrics, counter, gauge
from monitor.sdnotify import Notifier
from monitor.store import AttemptRow, EventRow, PageRow, Store, dumps
from monitor.views import booth_json, incident_from_stored, incident_json, iso

log = structlog.get_logger(__name__)

DEDUPE_WINDOW = 24 * 3600.0  # event ids remembered this long (store and memory)
DEDUPE_MEMORY = 200_000
RECENT_PAYLOADS = 10_000  # digests of id-less messages kept to spot a redelivery (dup flag)
# the broker applies no backpressure (Mosquitto overruns its in-flight limit), so stop
# reading MQTT while this many rows wait for a commit, and read again once below LOW
PENDING_HIGH = 20_000
PENDING_LOW = 5_000
CLOCK_WATCH_EVERY = 1.0  # seconds between looks for a wall-clock step
MAX_CLOCK_CATCH_UP = 6 * 3600.0  # at start, catch up with records at most this far ahead
# the link must hold this long after a paged outage before "monitoring restored" goes out,
# so a broker that flaps never sends the staff a stream of down/restored messages
OUTAGE_SETTLE = 10.0
# ...but never while commits fail: the store is not slow then, it is stuck, and a paused
# reader would stop hearing calls. During a store outage the service reads, pages and holds
# every event in memory, unacknowledged, up to the broker's in-flight window (see README,
# "When the store is in trouble"). That window is our MQTT 5 Receive Maximum: past it the
# broker sends nothing more, calls included, so ask for the most MQTT allows.
RECEIVE_MAXIMUM = 65_535
WINDOW_WARN = RECEIVE_MAXIMUM * 9 // 10

class OutcomeRecorded(Exception):
    """A person already recorded this incident's outcome (HTTP 409)."""


class IncidentGone(Exception):
    """The incident exists but is resolved: nothing more can be done to it (HTTP 409)."""


@dataclass(frozen=True, slots=True)
class Topics:
    site: str

    @property
    def events(self) -> str:
        return f"boothwatch/{self.site}/booths/+/events"

    @property
    def status(self) -> str:
        return f"boothwatch/{self.site}/status"

    @property
    def ack(self) -> str:
        return f"boothwatch/{self.site}/ack"

    @property
    def duty(self) -> str:
        return f"boothwatch/{self.site}/duty"

    def state(self, booth: str) -> str:
        return f"boothwatch/{self.site}/booths/{booth}/state"

    def incident(self, incident: str) -> str:
        return f"boothwatch/{self.site}/incidents/{incident}"


class Runtime:
    def __init__(
        self,
        config: Config,
        *,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] | None = None,
        retry_delays: tuple[float, ...] = (0.5, 1, 2, 4, 8),
    ) -> None:
        self.config = config
        self.env = os.environ if env is None else env
        protect(config, self.env)  # what the logs must never show
        # the service clock unless a test brings its own
        self.clock: Callable[[], float] = ServiceClock() if clock is None else clock
        self.topics = Topics(config.site.id)
        self.metrics = Metrics()
        self.core = SiteCore(config, new_id=lambda: str(ULID()))
        self._retry_delays = retry_delays
        self._known_booths = frozenset(b.id for b in config.booths)
        self._booth_names = {b.id: b.name for b in config.booths}
        self._responders = {r.id: r for r in config.responders}
        # device topic -> the devices listening on it (a z2m bridge topic serves many)
        self._device_routes: dict[str, list[DeviceConfig]] = {}
        self._canonical_devices = frozenset(
            d.id for d in config.devices if d.source == "canonical")
        for device in config.devices:
            if device.source == "canonical":
                continue  # canonical devices publish on the booth events topic
            for topic in adapters.topics(device):
                self._device_routes.setdefault(topic, []).append(device)
        self._init_flood_limits()
        # (booth, event id) as a 12-byte digest: half the memory of the tuple of strings
        self._seen = RecentKeys(DEDUPE_MEMORY)
        self._recent_dups = RecentKeys(RECENT_PAYLOADS)
        self._children: dict[tuple[int, tuple[str, ...]], Counter] = {}  # see _counted
        self._wake = asyncio.Event()
        self._timer_at: float | None = None  # the deadline the timer task sleeps towards
        self._last_event_at: float | None = None
        self._rate = RateLimit(60.0)
        self._unacked = 0  # MQTT messages held until their rows are committed
        self.started = asyncio.Event()
        self.store: Store
        self.mqtt: MqttLink
        self.dispatcher: Dispatcher
        self.tokens: AckTokens
        self.used_links = UsedLinks(config.http.ack_link_ttl)  # ack links are single use
        self.api_token = self.env.get("BOOTHWATCH_API_TOKEN") or None
        self.receipts: ReceiptWatcher | None = None  # when a Pushover channel is configured
        self.notifier = Notifier(self.env)  # systemd: READY, WATCHDOG, STATUS, STOPPING
        self.selfwatch: SelfWatch  # is the broker link up? pages when it stays down
        self._selfwatch_wake = asyncio.Event()
        self._ready_sent = False
        self._stopping = False
        self.metrics.watch(self._live_metrics)
        self._precreate_series()

    def _precreate_series(self) -> None:
        """Start bounded label sets at 0, so rate() and increase() see the first event.

        Per-booth series are left to appear on first use: at thousands of booths they
        would cost more than the first sample is worth.
        """
        m = self.metrics
        for channel in self.config.channels:
            for result in ("sent", "failed"):
                m.pages.labels(channel, result)
        for reason in (*REASONS, "retained"):
            m.rejected.labels(reason)
        for event in ("monitoring_down", "monitoring_restored"):
            for result in ("sent", "failed"):
                m.monitoring_messages.labels(event, result)
        for trigger in Trigger:
            for outcome in OUTCOMES:
                m.incidents_resolved.labels(outcome, trigger.value)
        for trigger in Trigger:
            for outcome in OUTCOME_VALUES:
                m.outcomes.labels(outcome, trigger.value)
        roles = {role for r in self.config.responders for role in r.roles}
        for priority, policy in self.config.escalation.items():
            for level in range(1, len(policy.steps) + 1):
                m.steps.labels(str(level), priority)
                m.steps_skipped.labels(str(level), priority)
            for role in roles:
                m.duty_gaps.labels(role, priority)

    # --- lifecycle --------------------------------------------------------------------

    async def run(self, *, http: bool = True) -> None:
        """Run until cancelled; shut down cleanly (status offline, store flushed)."""
        cfg = self.config
        self.selfwatch = SelfWatch(cfg.mqtt.outage_page_after, OUTAGE_SETTLE,
                                   self._outage_recipients, lambda: f"outage-{ULID()}",
                                   now=self.clock())
        self.notifier.status("starting: opening the store")
        self.store = await Store.open(cfg.store.path)
        self.store.on_committed = self._maybe_resume
        self.store.on_failed = self._keep_reading
        try:
            if isinstance(self.clock, ServiceClock):
                self._start_clock(self.clock, await self.store.latest_time())
            secret = self.env.get("BOOTHWATCH_SECRET") or await self.store.secret(
                "ack_secret", secrets.token_hex(32)
            )
            self.tokens = AckTokens(secret, cfg.http.ack_link_ttl)
            self.used_links.load(
                await self.store.used_ack_links(self.clock() - cfg.http.ack_link_ttl))
            self.core.restore(
                await self.store.load_booths(), await self.store.load_open_incidents(),
                await self.store.load_devices(), now=self.clock(),
                duty=await self.store.load_duty(),
            )
            self.core.start(self.clock())
            for key in await self.store.event_ids_since(self.clock() - DEDUPE_WINDOW):
                self._seen.add(_event_key(*key))
            restored = len(self.core.incidents)
            await self._resume_outage()
            async with client_session() as session:
                self.mqtt = MqttLink(
                    cfg.mqtt,
                    subscriptions=[self.topics.events, self.topics.ack, self.topics.duty,
                                   *self._device_routes],
                    on_message=self._on_message,
                    will=(self.topics.status, b"offline"),
                    on_connected=self._on_connected,
                    on_link=self._on_link,
                    receive_maximum=RECEIVE_MAXIMUM,
                )
                if any(c.type == "pushover" for c in cfg.channels.values()):
                    self.receipts = ReceiptWatcher(session, cfg.channels,
                                                   self._on_receipt_acknowledged,
                                                   self._on_receipt_delivered)
                channels = build_channels(
                    cfg.channels, session, self._publish_page, cfg.site.id,
                    policies=cfg.escalation, receipts=self.receipts,
                )
                self.dispatcher = Dispatcher(
                    channels, self._on_attempt, self._on_page_failed, self._retry_delays
                )
                try:
                    await self._serve(http, restored)
                finally:
                    self._stopping = True
                    self.notifier.stopping(
                        f"stopping: {len(self.core.incidents)} open incident(s) kept in the "
                        "store")
                    await self.dispatcher.drain(2.0)
                    await self.dispatcher.close()
                    await self.mqtt.close(final=(self.topics.status, b"offline"))
        finally:
            try:
                await asyncio.wait_for(self.store.drain(), 5)
            except Exception:
                # the broker still holds every unacknowledged event: nothing is lost
                log.exception("store_drain_failed")
            await self.store.close()
            self.notifier.close()
            log.info("stopped")

    async def _serve(self, http: bool, restored: int) -> None:
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(self.store.run_writer(), name="store-writer")
            tg.create_task(self.mqtt.run(), name="mqtt")
            tg.create_task(self._timer_loop(), name="timers")
            if isinstance(self.clock, ServiceClock):
                tg.create_task(self._watch_clock(self.clock), name="clock")
            tg.create_task(self._selfwatch_loop(), name="selfwatch")
            if self.notifier.watchdog_interval is not None:
                tg.create_task(self._watchdog_loop(self.notifier.watchdog_interval),
                               name="sd-watchdog")
            if self.receipts is not None:
                for row in await self.store.open_receipts():
                    channel = self.config.channels.get(row.channel)
                    # only Pushover emergencies have receipts to poll (others: a message id)
                    if (row.receipt is not None and channel is not None
                            and channel.type == "pushover"
                            and row.payload.get("priority") == "high"):
                        self.receipts.watch(row.receipt, row.incident, row.responder,
                                            row.channel)
                tg.create_task(self.receipts.run(), name="pushover-receipts")
            if http:
                from monitor.http import serve

                tg.create_task(serve(self), name="http")
            await self._resend_unsent_pages()
            self._wake.set()  # fire whatever fell due while we were down
            log.info("started", site=self.config.site.id, booths=len(self.config.booths),
                     open_incidents=restored)
            self.started.set()
            self._maybe_ready()
            del writer

    def _on_connected(self, session_present: bool) -> None:
        if self.mqtt.generation > 1:
            self.metrics.broker_reconnects.inc()
        self.mqtt.publish(self.topics.status, b"online", retain=True)
        for view in self.core.booth_views():
            self._publish_booth(view)  # QoS 0 below: whatever a broken link lost, send again

    def _publish_booth(self, view: BoothView) -> None:
        # retained state at QoS 0: it is a snapshot, republished in full on every reconnect,
        # and a PUBACK per event would cost the ingest path more than it buys
        payload = dumps(booth_json(view)).encode()
        self.mqtt.publish(self.topics.state(view.id), payload, qos=0, retain=True)

    # --- MQTT in ----------------------------------------------------------------------

    def _on_message(self, msg: paho.MQTTMessage, generation: int) -> None:
        now = self.clock()
        try:
            if msg.topic == self.topics.ack:
                if self._admitted(self._ack_sender, msg, generation):
                    self._on_ack_message(msg, generation, now)
            elif msg.topic == self.topics.duty:
                if self._admitted(self._duty_sender, msg, generation):
                    self._on_duty_message(msg, generation, now)
            elif msg.topic in self._device_routes:
                self._on_device_message(msg, generation, now)
            else:
                self._on_event_message(msg, generation, now)
        except Exception:
            # our own bug: never let it stop the other booths; the message stays unacked
            log.exception("ingest_failed", topic=msg.topic)
            self.metrics.events.labels("unknown", "error").inc()

    def _init_flood_limits(self) -> None:
        """The limiter and its senders, made once from the config (see monitor/core/flood.py):
        the drop path runs thousands of times a second and allocates nothing."""
        self.flood = Limiter(self.config.rate_limit)
        # a canonical device named in [[devices]] has its own bucket on its booth's topic;
        # every other message on a booth's topic shares the booth's (made-up ids too)
        named = [(d.booth, d.id) for d in self.config.devices if d.source == "canonical"]
        self._named_senders = frozenset(named)
        self._event_senders: dict[tuple[str, str | None], Sender] = {
            key: Sender("canonical", *key) for key in named}
        self._event_senders.update(
            {(b.id, None): Sender("canonical", b.id) for b in self.config.booths})
        # booths where the sender is known before parsing: no named device on their topic
        with_named = {booth for booth, _ in named}
        self._unnamed_booths = {b: self._event_senders[(b, None)] for b in self._known_booths
                                if b not in with_named}
        self._ack_sender = Sender("ack", "")
        self._duty_sender = Sender("duty", "")
        self._route_senders: dict[str, Sender] = {}
        own = {d.id: Sender(d.source, d.booth, d.id) for d in self.config.devices}
        for topic, devices in self._device_routes.items():
            if len({d.id for d in devices}) == 1:
                self._route_senders[topic] = own[devices[0].id]  # one bucket over its topics
            else:  # a topic several devices share (an ESPHome node's status)
                booths = {d.booth for d in devices}
                self._route_senders[topic] = Sender(
                    devices[0].source, booths.pop() if len(booths) == 1 else "")
        self._calling = frozenset(d.id for d in self.config.devices if may_call(d))
        # each flooding sender's latest dropped message (per kind, for a booth's canonical
        # sender) and its connection generation, held back until a token is free; it is
        # acknowledged once stored, or when a newer one replaces it
        self._held: dict[tuple[Sender, str], tuple[paho.MQTTMessage, int]] = {}
        self._releasing: paho.MQTTMessage | None = None  # a held message on its way in
        self._held_retry: set[tuple[Sender, str]] = set()
        self.metrics.watch(self._flood_metrics)

    def _admitted(self, sender: Sender, msg: paho.MQTTMessage, generation: int,
                  kind: Kind = Kind.OTHER, booth: str = "") -> bool:
        """Whether the limiter lets `msg` through. A dropped one is held back unacknowledged
        (the sender's latest, acknowledged once stored) or acknowledged and counted as
        dropped (a repeated call, or a held one a newer message replaces)."""
        if msg is self._releasing:
            return True  # a held-back message, its token already taken
        open_call = self.core.open_call(booth) if kind is not Kind.OTHER else None
        # the limiter's own clock: monotonic, so a wall-clock step never frees a flood
        tick = time.monotonic()
        reason = self.flood.admit(sender, tick, kind, open_call)
        if reason is None:
            if self._held and (slot := self._slot(sender, msg)) in self._held:
                self._drop_held(slot)  # older than this one: never to be delivered
            return True
        if kind is Kind.CALL:
            self.mqtt.ack(msg.mid, generation)  # nothing to store: never have it redelivered
            self._count_drop(sender, reason)  # a repeated call: never held back
        else:
            slot = self._slot(sender, msg)
            if slot in self._held:
                self._drop_held(slot)  # the one it replaces is gone for good
            self._held[slot] = (msg, generation)
            if slot not in self._held_retry:
                self._held_retry.add(slot)
                asyncio.get_running_loop().call_later(
                    1.0 / self.flood.rate, self._release_held, slot)
        dropped = self.flood.report(sender, tick)
        if dropped:
            log.warning("messages_dropped", source=sender.source, booth=sender.booth or None,
                        device=sender.device, topic=msg.topic, reason=reason, dropped=dropped)
        return False

    def _drop_held(self, slot: tuple[Sender, str]) -> None:
        old, generation = self._held.pop(slot)
        self.mqtt.ack(old.mid, generation)
        self._count_drop(slot[0], RATE_LIMITED)

    def _count_drop(self, sender: Sender, reason: str) -> None:
        self._counted(self.metrics.dropped, sender.source, sender.booth, reason)

    @staticmethod
    def _slot(sender: Sender, msg: paho.MQTTMessage) -> tuple[Sender, str]:
        return sender, held_slot(msg.payload) if sender.source == "canonical" else ""

    def _release_held(self, slot: tuple[Sender, str]) -> None:
        """The held-back message goes to the core once the sender has a token again, so the
        core ends with the last thing the device said (after a flood, or a replayed backlog)."""
        self._held_retry.discard(slot)
        if slot not in self._held:
            return  # a newer message got through meanwhile
        if not self.flood.take(slot[0], time.monotonic()):
            self._held_retry.add(slot)  # still flooding: try again
            asyncio.get_running_loop().call_later(
                1.0 / self.flood.rate, self._release_held, slot)
            return
        # the normal path: stored, then acknowledged (unless its connection is gone, and
        # then the broker redelivers it and deduplication absorbs the copy)
        msg, generation = self._held.pop(slot)
        self._releasing = msg
        try:
            self._on_message(msg, generation)
        finally:
            self._releasing = None

    def _flood_metrics(self) -> Iterable[Metric]:
        yield gauge("boothwatch_senders_flooding",
                    "Senders (devices, gateways) with a message dropped in the last minute",
                    [], {(): float(self.flood.flooding(time.monotonic()))})

    def _reject(self, topic: str, reason: str, detail: str, mid: int, generation: int) -> None:
        self.metrics.rejected.labels(reason).inc()
        if self._rate.allow(topic, reason):
            log.warning("event_rejected", topic=topic, reason=reason, detail=detail)
        self.mqtt.ack(mid, generation)  # nothing to store: do not have it redelivered forever

    def _on_event_message(self, msg: paho.MQTTMessage, generation: int, now: float) -> None:
        booth = parse_topic(msg.topic, self.config.site.id)
        if booth is None:
            self._reject(msg.topic, "bad_topic", "not a booth events topic", msg.mid, generation)
            return
        if msg.retain:
            # a retained message is a snapshot someone left on the broker, not a new event
            self._reject(msg.topic, "retained", "retained message ignored", msg.mid, generation)
            return
        payload = bytes(msg.payload)
        # no named device here and certainly no call: limit it before parsing it, so a
        # flood's drop path never parses JSON
        known = self._unnamed_booths.get(booth) if cannot_be_a_call(payload) else None
        if known is not None and not self._admitted(known, msg, generation):
            return
        parsed = parse_event(booth, payload, self._known_booths)
        if isinstance(parsed, Rejected):
            self._reject(msg.topic, parsed.reason, parsed.detail, msg.mid, generation)
            return
        if known is None:
            named = (booth, parsed.device) in self._named_senders
            sender = self._event_senders[(booth, parsed.device if named else None)]
            event = parsed.event
            call = isinstance(event, Button) and event.press is Press.CALL
            if not self._admitted(sender, msg, generation,
                                  Kind.CALL if call else Kind.OTHER, booth):
                return
        kind = _kind(parsed)
        if self._duplicate(booth, parsed, msg):
            self._counted(self.metrics.events, kind, "duplicate")
            # a redelivery after a reconnect: its first copy may still wait for the store
            self._ack_when(self.store.barrier(), msg.mid, generation)
            return
        # the core first: a page's delivery task is then queued before the store writer
        # wakes, so the page leaves before the batch is built
        self._execute(self.core.handle(parsed.event, now), now)
        stored = self.store.add_event(
            EventRow(booth=booth, kind=kind, event_id=parsed.event_id, device=parsed.device,
                     ts=parsed.ts, received_at=now, payload=msg.payload.decode())
        )
        self._ack_when(stored, msg.mid, generation)
        if self.store.pending() > PENDING_HIGH and self.store.writable:
            self.mqtt.pause_reading()  # unacknowledged messages wait safely in the broker
        if parsed.device in self._canonical_devices:
            # a canonical device's health: any event is a sign of life, a heartbeat its battery
            battery = parsed.event.battery if isinstance(parsed.event, Heartbeat) else None
            self._execute(self.core.handle(
                DeviceReading(parsed.device, Reading(battery=battery)), now), now)
        self._counted(self.metrics.events, kind, "accepted")
        self._last_event_at = now
        self._rearm()

    def _on_device_message(self, msg: paho.MQTTMessage, generation: int, now: float) -> None:
        """An off-the-shelf device's own topic: its adapter, then the registry in the core."""
        payload = bytes(msg.payload)
        routes = self._device_routes[msg.topic]
        sender = self._route_senders[msg.topic]
        retained = bool(msg.retain)
        early: list[list[Reading] | Rejected] | None = None
        kind, booth = Kind.OTHER, ""
        if any(d.id in self._calling for d in routes):
            # a call button: decode first, so a call is never dropped (monitor/core/flood.py)
            early = [adapters.decode(d, msg.topic, payload, retained) for d in routes]
            for device, result in zip(routes, early, strict=True):
                if device.id in self._calling and not isinstance(result, Rejected):
                    this = reading_kind(device, result, retained)
                    if this > kind:
                        kind, booth = this, device.booth
        if not self._admitted(sender, msg, generation, kind, booth):
            return
        done: asyncio.Future[None] | None = None
        for index, device in enumerate(routes):
            decoded = (early[index] if early is not None
                       else adapters.decode(device, msg.topic, payload, retained))
            if isinstance(decoded, Rejected):
                self.metrics.rejected.labels(decoded.reason).inc()
                if self._rate.allow(msg.topic, decoded.reason):
                    log.warning("device_message_rejected", topic=msg.topic, device=device.id,
                                reason=decoded.reason, detail=decoded.detail)
                continue
            for reading in decoded:
                commands = self.core.handle(
                    DeviceReading(device.id, reading, retained), now)
                if any(not isinstance(c, DeviceChanged) for c in commands):
                    # it changed something: keep the message itself for the record
                    self.store.add_event(EventRow(
                        booth=device.booth, kind=f"device:{device.source}", event_id=None,
                        device=device.id, ts=None, received_at=now,
                        payload=payload.decode("utf-8", "replace")))
                self._counted(self.metrics.device_messages, device.source, "accepted")
                self._last_event_at = now
                done = self._execute(commands, now)
        if done is None:
            self.mqtt.ack(msg.mid, generation)  # nothing to store
        else:
            self._ack_when(done, msg.mid, generation)
        self._rearm()

    def _counted(self, counter: Counter, *labels: str) -> None:
        """``counter.labels(*labels).inc()`` for the per-message counters, the labelled
        child cached: prometheus_client's labels() cost more than the rest of counting."""
        key = (id(counter), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*labels)
        child.inc()

    def _rearm(self) -> None:
        """Wake the timer task only if an event moved the next deadline earlier."""
        deadline = self.core.next_deadline()
        if deadline is not None and (self._timer_at is None or deadline < self._timer_at):
            self._wake.set()

    def _maybe_resume(self) -> None:
        if self.store.pending() < PENDING_LOW:
            self.mqtt.resume_reading()

    def _keep_reading(self) -> None:
        """Commits started failing: read on (see PENDING_HIGH), so calls are still paged."""
        if hasattr(self, "mqtt"):
            self.mqtt.resume_reading()

    def _duplicate(self, booth: str, parsed: Parsed, msg: paho.MQTTMessage) -> bool:
        """Same event id seen before, or a redelivery (dup flag) of a message seen before."""
        if parsed.event_id is not None:
            key = _event_key(booth, parsed.event_id)
            if key in self._seen:
                return True
            self._seen.add(key)
            return False
        digest = hashlib.blake2b(msg.topic.encode() + b"\0" + msg.payload, digest_size=16).digest()
        if msg.dup and digest in self._recent_dups:
            return True
        self._recent_dups.add(digest)
        return False

    def _ack_when(self, stored: asyncio.Future[None], mid: int, generation: int) -> None:
        self._unacked += 1
        if self._unacked >= WINDOW_WARN and self._rate.allow("mqtt", "window"):
            log.critical("mqtt_window_nearly_full", unacked=self._unacked,
                         window=RECEIVE_MAXIMUM, store_error=self.store.last_error)

        def ack(_f: asyncio.Future[None]) -> None:
            self._unacked -= 1
            self.mqtt.ack(mid, generation)

        stored.add_done_callback(ack)

    def _on_ack_message(self, msg: paho.MQTTMessage, generation: int, now: float) -> None:
        try:
            body = json.loads(msg.payload)
            event = Acknowledge(str(body["incident"]), str(body["responder"]), via="mqtt")
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            self.metrics.acks.labels("rejected").inc()
            if self._rate.allow(msg.topic, "bad_ack"):
                log.warning("ack_rejected", reason=str(exc))
            self.mqtt.ack(msg.mid, generation)
            return
        try:
            commands = self.core.handle(event, now)
        except (UnknownIncident, IllegalTransition) as exc:
            self.metrics.acks.labels("ignored").inc()
            log.info("ack_ignored", incident=event.incident, reason=type(exc).__name__)
            self.mqtt.ack(msg.mid, generation)
            return
        self.metrics.acks.labels("accepted").inc()
        self._ack_when(self._execute(commands, now), msg.mid, generation)
        self._rearm()

    def _on_duty_message(self, msg: paho.MQTTMessage, generation: int, now: float) -> None:
        """``{"responder": "ana", "on": true}`` on boothwatch/<site>/duty: check in or out."""
        if msg.retain:
            # a retained check-in is old news replayed at every reconnect, never a new one
            self._reject(msg.topic, "retained", "retained duty message ignored", msg.mid,
                         generation)
            return
        try:
            body = json.loads(msg.payload)
            on = body["on"]
            if not isinstance(on, bool):
                raise TypeError("on must be true or false")
            who = str(body["responder"])
            event = SetDuty(who, on, by=str(body.get("by") or who), via="mqtt")
            commands = self.core.handle(event, now)
        except (ValueError, KeyError, TypeError, RecursionError, UnknownResponder) as exc:
            self.metrics.rejected.labels("bad_duty").inc()
            if self._rate.allow(msg.topic, "bad_duty"):
                log.warning("duty_rejected", reason=type(exc).__name__)
            self.mqtt.ack(msg.mid, generation)
            return
        self._ack_when(self._execute(commands, now), msg.mid, generation)

    # --- people (HTTP) ----------------------------------------------------------------

    async def act_site(self, event: SiteEvent) -> None:
        """Duty and maintenance from the API; returns once the change is stored."""
        now = self.clock()
        commands = self.core.handle(event, now)  # raises UnknownBooth/UnknownResponder/...
        done = self._execute(commands, now)
        self._rearm()
        await self.store.settled(done)

    async def set_outcome(self, incident: str, responder: str, outcome: str,
                          note: str | None) -> IncidentView:
        """Record what happened at an incident already resolved (by the clear button...)."""
        now = self.clock()
        if incident in self.core.incidents:
            raise IllegalTransition(incident, self.core.incidents[incident].state,
                                    Action.RESOLVE)
        await self.store.flush()
        stored = await self.store.incident(incident)
        if stored is None:
            raise UnknownIncident(incident)
        view = incident_from_stored(stored)
        if view.outcome in OUTCOME_VALUES:
            raise OutcomeRecorded(incident)  # counted once; a correction is a coordinator's
        entry = TimelineEntry(now, "outcome", {"outcome": outcome, "by": responder,
                                                "note": note})
        view = dataclasses.replace(view, outcome=outcome, outcome_note=note,
                                   timeline=(*view.timeline, entry))
        # counted in _observe
        await self.store.settled(self._execute([IncidentChanged(view, (entry,))], now))
        return view


    async def act(self, event: IncidentEvent) -> IncidentView:
        """Apply an action from the API; returns once the change is stored."""
        now = self.clock()
        incident = event.incident
        try:
            commands = self.core.handle(event, now)
        except UnknownIncident:
            stored = await self.store.incident(incident)
            if stored is None:
                raise
            raise IncidentGone(incident) from None
        done = self._execute(commands, now)
        self._rearm()
        await self.store.settled(done)  # while the store fails: applied, stored on recovery
        for cmd in reversed(commands):
            if isinstance(cmd, IncidentChanged) and cmd.view.id == incident:
                return cmd.view
        return self.core.incident_view(incident)

    def booth_name(self, booth_id: str) -> str:
        return self._booth_names.get(booth_id, booth_id)

    def booths_json(self) -> list[dict[str, Any]]:
        return [booth_json(v) for v in self.core.booth_views()]

    async def incidents_json(
        self, open_only: bool, limit: int = 500
    ) -> tuple[list[dict[str, Any]], int]:
        """The newest ``limit`` incidents as API JSON, and the total there is."""
        await self.store.flush()
        rows, total = await self.store.incidents(open_only, limit)
        return [incident_json(incident_from_stored(r), self.booth_name(r["booth"]))
                for r in rows], total

    async def readiness(self) -> list[str]:
        reasons = []
        if not self.mqtt.connected:
            reasons.append("broker not connected")
        elif not self.mqtt.ready:
            reasons.append("broker subscription not acknowledged")
        trouble = await self.store.unwritable()
        if trouble is not None:
            reasons.append(f"store not writable: {trouble}")
        return reasons

    # --- commands ---------------------------------------------------------------------

    def _execute(self, commands: Iterable[Command], now: float) -> asyncio.Future[None]:
        """Carry out the core's commands; the future completes when they are stored."""
        done: asyncio.Future[None] | None = None
        commands = list(commands)
        # pages first, so their delivery tasks run before the store writer's
        commands.sort(key=lambda c: not isinstance(c, SendPage))
        for cmd in commands:
            match cmd:
                case SendPage():
                    done = self._page(cmd, now) or done
                case SendNotice():
                    done = self._notice(cmd, now) or done
                case Audit(at=at, kind=kind, subject=subject, detail=detail):
                    log.info("audit", kind=kind, subject=subject,
                             **{k: v for k, v in detail.items() if k in _AUDIT_LOGGED})
                    if kind == "trigger_suppressed":
                        self.metrics.suppressed.labels(detail["trigger"], subject).inc()
                    done = self.store.add_audit(at, kind, subject, detail)
                case DutyChanged(snapshot=snapshot):
                    done = self.store.put_duty(snapshot, now)
                case BoothChanged(view=view):
                    self._publish_booth(view)
                    done = self.store.put_booth(view, now)
                case IncidentChanged(view=view, new=new):
                    body = incident_json(view, self.booth_name(view.booth))
                    self.mqtt.publish(self.topics.incident(view.id), dumps(body).encode())
                    done = self.store.put_incident(view, new)
                    self._observe(view, new)
                case DeviceChanged(view=dview, snapshot=snapshot):
                    done = self.store.put_device(dview.booth, snapshot, now)
        if done is None:
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
        return done

    def _observe(self, view: IncidentView, new: tuple[Any, ...]) -> None:
        trigger = view.triggers[0]
        m = self.metrics
        labels = (trigger, view.priority, view.booth, str(view.max_level))
        for entry in new:
            if entry.kind == "escalated" and "level" in entry.detail:
                m.steps.labels(str(entry.detail["level"]), view.priority).inc()
            elif entry.kind == "duty_gap":
                for role in entry.detail["roles"]:
                    m.duty_gaps.labels(role, view.priority).inc()
            elif entry.kind == "step_skipped":
                m.steps_skipped.labels(str(entry.detail["level"]), view.priority).inc()
            elif entry.kind == "outcome" and view.outcome in OUTCOME_VALUES:
                m.outcomes.labels(view.outcome, trigger).inc()
            if entry.kind != "state":
                continue
            to = entry.detail.get("to")
            if to == "open" and "from" not in entry.detail:
                m.incidents_raised.labels(trigger, view.priority, view.booth).inc()
                _log_soon("incident_raised", incident=view.id, booth=view.booth,
                          trigger=trigger, priority=view.priority)
            elif to == "open":
                m.reopened.inc()
            elif to == "acknowledged" and view.acknowledged_at == entry.at:
                m.to_ack.labels(*labels).observe(entry.at - view.raised_at)
            elif to == "resolved":
                m.to_resolve.labels(*labels).observe(entry.at - view.raised_at)
                outcome = view.outcome or "none"
                m.incidents_resolved.labels(
                    outcome if outcome in OUTCOMES else "other", trigger).inc()
                self._cancel_pages(view.id)
                log.info("incident_resolved", incident=view.id, booth=view.booth,
                         by=view.resolved_by, outcome=view.outcome)
            if to == "attended" and view.presence_at == entry.at:
                m.to_presence.labels(*labels).observe(entry.at - view.raised_at)
            if to in ("acknowledged", "attended"):
                self._cancel_pages(view.id)  # stop retrying pages nobody needs now

    def _cancel_pages(self, incident: str) -> None:
        self.dispatcher.cancel(incident)
        if self.receipts is not None:
            self.receipts.cancel(incident)  # Pushover emergency retries stop buzzing

    def _page(self, cmd: SendPage, now: float) -> asyncio.Future[None] | None:
        responder = self._responders.get(cmd.responder)
        if responder is None:
            log.error("page_unknown_responder", responder=cmd.responder)
            return None
        payload = {
            "kind": "page",
            "incident": cmd.incident,
            "site": self.config.site.id,
            "booth": cmd.booth,
            "booth_name": cmd.booth_name,
            "priority": cmd.priority,
            "urgent": cmd.urgent,
            "triggers": list(cmd.triggers),
            "level": cmd.level,
            "responder": cmd.responder,
            "message": cmd.message,
            "raised_at": iso(cmd.raised_at),
            "ack_url": self.ack_url(cmd.incident, cmd.responder),
        }
        done = self._deliver("page", cmd.incident, cmd.responder, cmd.level, payload, now)
        # logged once the page is on its way: a log line (redacted) costs tens of µs
        _log_soon("page", incident=cmd.incident, booth=cmd.booth, responder=cmd.responder,
                  escalation_level=cmd.level, priority=cmd.priority, urgent=cmd.urgent)
        return done

    def _notice(self, cmd: SendNotice, now: float) -> asyncio.Future[None] | None:
        payload = {
            "kind": "notice",
            "incident": cmd.incident,
            "site": self.config.site.id,
            "booth": cmd.booth,
            "booth_name": cmd.booth_name,
            "responder": cmd.responder,
            "priority": cmd.priority,
            "message": cmd.message,
        }
        return self._deliver("notice", cmd.incident, cmd.responder, 0, payload, now)

    def _deliver(self, kind: DeliveryKind, incident: str, responder_id: str, level: int,
                 payload: dict[str, Any], now: float) -> asyncio.Future[None] | None:
        """Store the page as queued and hand it to the dispatcher (the responder's
        channels in their fallback order)."""
        responder = self._responders.get(responder_id)
        if responder is None:
            log.error("page_unknown_responder", responder=responder_id)
            return None
        row = PageRow(id=str(ULID()), incident=incident, responder=responder_id,
                      channel=responder.channels[0], level=level, payload=payload,
                      status="queued", attempts=0, created_at=now, updated_at=now, kind=kind)
        self.dispatcher.submit(self._delivery(row))
        return self.store.put_page(row)

    def _delivery(self, row: PageRow) -> Delivery:
        responder = self._responders.get(row.responder)
        # a responder removed from the config since: the channel it was queued for
        channels = responder.channels if responder is not None else (row.channel,)
        return Delivery(page_id=row.id, incident=row.incident, responder=row.responder,
                        level=row.level, channels=channels, payload=row.payload,
                        addresses=responder.address if responder is not None else {},
                        kind="notice" if row.kind == "notice" else "page")

    def ack_url(self, incident: str, responder: str) -> str:
        return f"{self.config.http.public_url}/ack/{self.tokens.make(incident, responder)}"

    async def _resend_unsent_pages(self) -> None:
        """Pages queued or mid-retry when we stopped are sent again: none is dropped."""
        for row in await self.store.unsent_pages():
            log.warning("page_resent_after_restart", incident=row.incident,
                        responder=row.responder, channel=row.channel)
            self.dispatcher.submit(self._delivery(row))

    def _on_attempt(self, delivery: Delivery, attempt: Attempt) -> None:
        now = self.clock()
        status = "sent" if attempt.ok else ("failed" if attempt.final else "retrying")
        self.metrics.pages.labels(attempt.channel, "sent" if attempt.ok else "failed").inc()
        if attempt.ok:
            self.metrics.page_latency.labels(attempt.channel).observe(attempt.latency)
        else:
            log.warning("page_attempt_failed", incident=delivery.incident,
                        responder=delivery.responder, channel=attempt.channel,
                        kind=delivery.kind, attempt=attempt.number, error=attempt.error,
                        final=attempt.final, page_id=delivery.page_id)
        self.store.put_page(PageRow(
            id=delivery.page_id, incident=delivery.incident, responder=delivery.responder,
            channel=attempt.channel, level=delivery.level, payload=delivery.payload,
            status=status, attempts=attempt.number, created_at=now, updated_at=now,
            last_error=attempt.error, sent_at=now if attempt.ok else None,
            latency=attempt.latency if attempt.ok else None, kind=delivery.kind,
            receipt=attempt.receipt,
        ))
        self.store.add_attempt(AttemptRow(
            page=delivery.page_id, number=attempt.number, channel=attempt.channel,
            ok=attempt.ok, error=attempt.error, latency=attempt.latency,
            receipt=attempt.receipt, at=now))
        if delivery.kind == "system" and attempt.ok:
            event = str(delivery.payload.get("event"))
            self.metrics.monitoring_messages.labels(event, "sent").inc()
            log.info("monitoring_message_sent", event_name=event, outage=delivery.incident,
                     responder=delivery.responder, channel=attempt.channel)
        if delivery.kind != "page":
            return
        channels = delivery.channels
        fell_back = (not attempt.ok and attempt.number <= len(channels)
                     and attempt.channel != channels[-1])
        if attempt.ok or fell_back:
            self._tell_core(PageReport(delivery.incident, delivery.responder, delivery.level,
                                       attempt.channel, attempt.ok, attempt.error), now)

    def _tell_core(self, event: Event, now: float) -> None:
        try:
            commands = self.core.handle(event, now)
        except UnknownIncident:
            return  # resolved meanwhile; the pages table has the record
        self._execute(commands, now)
        self._rearm()

    def _on_receipt_acknowledged(self, incident: str, responder: str, receipt: str) -> None:
        """The nurse acknowledged the Pushover emergency alert on her phone."""
        now = self.clock()
        self.store.mark_receipt(receipt, "acknowledged", now)
        try:
            commands = self.core.handle(Acknowledge(incident, responder, via="pushover"), now)
        except (UnknownIncident, IllegalTransition) as exc:
            log.info("pushover_ack_ignored", incident=incident, reason=type(exc).__name__)
            return
        self._execute(commands, now)
        self._rearm()

    def _on_receipt_delivered(self, incident: str, responder: str, receipt: str,
                              at: float) -> None:
        self.store.mark_receipt(receipt, "delivered", at)

    def _on_page_failed(self, delivery: Delivery, reason: str) -> None:
        if delivery.kind == "system":
            event = str(delivery.payload.get("event"))
            self.metrics.monitoring_messages.labels(event, "failed").inc()
            log.critical("monitoring_message_undeliverable", event_name=event,
                         outage=delivery.incident, responder=delivery.responder, error=reason)
        if delivery.kind != "page":
            return  # a notice that could not be delivered is recorded, never escalated
        self._tell_core(PageFailed(delivery.incident, delivery.responder, delivery.level,
                                   delivery.channels[-1], reason), self.clock())

    async def _publish_page(self, topic: str, payload: bytes) -> None:
        try:
            await self.mqtt.publish_confirmed(topic, payload)
        except NotConnected as exc:
            raise DeliveryError(str(exc)) from exc

    # --- self-monitoring: the broker link, systemd --------------------------------------

    def _outage_recipients(self, now: float) -> tuple[tuple[Recipient, ...], bool]:
        return outage_recipients(self.config.responders, self.config.channels,
                                 lambda rid: self.core.roster.on_duty(rid, now))

    async def _resume_outage(self) -> None:
        """A monitoring-down page sent before a restart, with no restored message since:
        carry on with that outage, so nobody is paged twice and the restored message
        still goes to those who were told."""
        last = await self.store.audit(limit=1, subject="broker")
        if not last or last[0]["kind"] != "monitoring_down":
            return
        entry = last[0]
        try:
            recipients = []
            for r in entry["recipients"]:
                channels = tuple(c for c in r["channels"] if c in self.config.channels)
                if r["responder"] in self._responders and channels:
                    recipients.append(Recipient(r["responder"], channels))
            self.selfwatch.resume(str(entry["outage"]), float(entry["since"]), recipients)
        except (KeyError, TypeError, ValueError):
            # our own record, but never a reason not to start: the outage is watched afresh
            log.exception("monitoring_down_not_resumed")
            return
        log.warning("monitoring_down_resumed", outage=entry["outage"])

    def _on_link(self, up: bool) -> None:
        """The broker link: events reach us (connected and subscribed), or no longer."""
        if self._stopping:
            return  # our own disconnect at shutdown, not an outage
        now = self.clock()
        self._on_selfwatch(self.selfwatch.observe(up, now), now)
        self._selfwatch_wake.set()
        self.notifier.status(self._status_text(now))
        self._maybe_ready()

    async def _selfwatch_loop(self) -> None:
        await self._deadline_loop(
            self.selfwatch.next_deadline, self._selfwatch_wake,
            lambda now: self._on_selfwatch(self.selfwatch.on_timer(now), now), "selfwatch")

    def _on_selfwatch(self, notices: list[Notice], now: float) -> None:
        for notice in notices:
            name = self.config.site.name
            match notice:
                case MonitoringDown():
                    event, priority = "monitoring_down", "high"
                    title = f"MONITORING DOWN · {name}"
                    message = (
                        f"{name}: boothwatch has received nothing from the booths for "
                        f"{format_duration(now - notice.since)} (MQTT broker unreachable). "
                        "Calls and stillness are NOT being detected: check the booths in "
                        "person.")
                    log.critical(event, outage=notice.outage, since=notice.since,
                                 recipients=[r.responder for r in notice.recipients],
                                 everyone=notice.everyone)
                    if not notice.recipients:
                        log.critical("monitoring_down_nobody_reachable",
                                     reason="no responder has a channel other than mqtt")
                    detail: dict[str, Any] = {"everyone": notice.everyone}
                    self.notifier.status(self._status_text(now))
                case MonitoringRestored():
                    event, priority = "monitoring_restored", "low"
                    title = f"Monitoring restored · {name}"
                    message = (
                        f"{name}: monitoring restored after "
                        f"{format_duration(notice.down_for)} down. Booth events the broker "
                        "kept meanwhile are being processed now.")
                    log.warning(event, outage=notice.outage, down_for=notice.down_for,
                                recipients=[r.responder for r in notice.recipients])
                    detail = {"back": notice.back, "down_for": notice.down_for}
            recipients = [{"responder": r.responder, "channels": list(r.channels)}
                          for r in notice.recipients]
            self.store.add_audit(now, event, "broker", {
                "outage": notice.outage, "since": notice.since, "recipients": recipients,
                **detail})
            payload_base = {
                "kind": "system", "event": event, "outage": notice.outage,
                "site": self.config.site.id, "site_name": name, "priority": priority,
                "title": title, "message": message, "since": iso(notice.since),
            }
            for r in notice.recipients:
                self._deliver_system(notice.outage, r, {**payload_base, "responder": r.responder},
                                     now)
        if notices:
            self._maybe_ready()

    def _deliver_system(self, outage: str, recipient: Recipient, payload: dict[str, Any],
                        now: float) -> None:
        """A message about boothwatch itself: recorded in the pages table under the
        outage's id, delivered with the dispatcher's fallback and retries, never escalated."""
        responder = self._responders.get(recipient.responder)
        row = PageRow(id=str(ULID()), incident=outage, responder=recipient.responder,
                      channel=recipient.channels[0], level=0, payload=payload,
                      status="queued", attempts=0, created_at=now, updated_at=now,
                      kind="system")
        self.store.put_page(row)
        self.dispatcher.submit(Delivery(
            page_id=row.id, incident=outage, responder=recipient.responder, level=0,
            channels=recipient.channels, payload=payload,
            addresses=responder.address if responder is not None else {}, kind="system"))

    def _maybe_ready(self) -> None:
        """READY=1 once serving: started and subscribed. A broker still unreachable when
        the staff have been paged about it gets READY too: a restart would not bring it
        back, and would only interrupt the escalation of open incidents."""
        if self._ready_sent or not self.started.is_set() or self._stopping:
            return
        if self.mqtt.ready or self.selfwatch.state in (State.PAGED, State.SETTLING):
            self._ready_sent = True
            if self.notifier.ready(self._status_text(self.clock())):
                log.info("systemd_ready")

    async def _watchdog_loop(self, interval: float) -> None:
        """WATCHDOG=1 from a task on the event loop: a stuck loop stops the pings, and
        systemd restarts us."""
        while True:
            self.notifier.watchdog(self._status_text(self.clock()))
            await asyncio.sleep(interval)

    def _status_text(self, now: float) -> str:
        incidents = f"{len(self.core.incidents)} open incident(s)"
        if hasattr(self, "mqtt") and self.mqtt.ready:
            return f"watching {len(self.config.booths)} booths; {incidents}; broker connected"
        down = format_duration(self.selfwatch.down_seconds(now))
        if self.selfwatch.state in (State.PAGED, State.SETTLING):
            told = "staff paged that monitoring is down"
        else:
            told = f"staff paged after {format_duration(self.selfwatch.page_after)}"
        return f"BROKER UNREACHABLE for {down}, booths unwatched ({told}); {incidents}"

    # --- timers -----------------------------------------------------------------------

    async def _timer_loop(self) -> None:
        def next_deadline() -> float | None:
            self._timer_at = self.core.next_deadline()  # what _rearm compares against
            return self._timer_at

        await self._deadline_loop(
            next_deadline, self._wake,
            lambda now: self._execute(self.core.on_timer(now), now), "timer")

    async def _deadline_loop(self, next_deadline: Callable[[], float | None],
                             wake: asyncio.Event, fire: Callable[[float], object],
                             what: str) -> None:
        """Sleep (on the monotonic clock) until the next deadline or a wake, then fire."""
        while True:
            deadline = next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that arrives as the event is set, and shutdown would then hang
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await wake.wait()
            wake.clear()
            now = self.clock()
            try:
                fire(now)
            except Exception:
                log.exception(f"{what}_failed")
                await asyncio.sleep(1)

    def _start_clock(self, clock: ServiceClock, latest: float | None) -> None:
        """Never start behind what is already recorded (the wall clock was stepped back
        while we were down): stored deadlines would otherwise be held back as long."""
        if latest is None:
            return
        behind = latest - clock()
        if 0 < behind <= MAX_CLOCK_CATCH_UP:
            clock.not_before(latest)
            log.warning("clock_behind_records", seconds=round(behind, 3))
        elif behind > MAX_CLOCK_CATCH_UP:
            # more likely the records were written under a wrong clock: trust the wall
            log.error("clock_far_behind_records", seconds=round(behind, 3))

    async def _watch_clock(self, clock: ServiceClock) -> None:
        """Notice wall-clock steps; timers are unaffected, but people should know."""
        while True:
            await asyncio.sleep(CLOCK_WATCH_EVERY)
            step = clock.observe()
            if step is not None:
                self.metrics.clock_steps.inc()
                log.warning("clock_step", seconds=round(step, 3),
                            skew=round(clock.skew(), 3))

    # --- metrics at scrape time -------------------------------------------------------

    def _live_metrics(self) -> Iterable[Metric]:
        open_by: dict[tuple[str, ...], float] = {
            (p, s): 0.0 for p in ("high", "medium", "low")
            for s in ("open", "acknowledged", "attended")
        }
        for inc in self.core.incidents.values():
            open_by[(inc.priority, inc.state.value)] += 1
        yield gauge("boothwatch_incidents_open", "Unresolved incidents by priority and state",
                    ["priority", "state"], open_by)
        now = self.clock()
        yield gauge("boothwatch_responders_on_duty", "Responders on duty now, by role", ["role"],
                    {(role,): float(n) for role, n in self.core.roster.on_duty_by_role(
                        self.clock()).items()})
        occupied = sum(1 for b in self.core.booths.values() if b.occupied)
        yield gauge("boothwatch_sessions_active", "Booths occupied now", [], {(): occupied})
        views = self.core.booth_views()
        yield gauge("boothwatch_booth_occupied", "1 while the booth is occupied", ["booth"],
                    {(v.id,): float(v.occupied) for v in views})
        yield gauge("boothwatch_booth_still", "1 while an occupied booth's person is still",
                    ["booth"], {(v.id,): float(v.occupied and v.motion in ("still", "absent"))
                                for v in views})
        rank = {"low": 1.0, "medium": 2.0, "high": 3.0}
        yield gauge("boothwatch_booth_incident_priority",
                    "Open incident at the booth: 0 none, 1 low, 2 medium, 3 high", ["booth"],
                    {(v.id,): rank[v.incident.priority] if v.incident else 0.0 for v in views})
        oldest = min((inc.raised_at for inc in self.core.incidents.values()), default=None)
        yield gauge("boothwatch_oldest_open_incident_age_seconds",
                    "Age of the oldest unresolved incident (0 when none)", [],
                    {(): 0.0 if oldest is None else now - oldest})
        if self._last_event_at is not None:
            yield gauge("boothwatch_last_event_age_seconds",
                        "Seconds since the last accepted booth or device event", [],
                        {(): now - self._last_event_at})
        devices = self.core.device_views()
        if devices:
            by_state: dict[tuple[str, ...], float] = {("online",): 0.0, ("offline",): 0.0}
            for d in devices:
                by_state[("online" if d.online else "offline",)] += 1
            yield gauge("boothwatch_devices", "Configured devices by state", ["state"], by_state)
            yield gauge("boothwatch_device_last_seen_age_seconds",
                        "Seconds since a device was last heard", ["device", "booth"],
                        {(d.id, d.booth): now - d.last_seen for d in devices
                         if d.last_seen is not None})
            yield gauge("boothwatch_device_battery_percent", "Last reported battery",
                        ["device", "booth"],
                        {(d.id, d.booth): float(d.battery) for d in devices
                         if d.battery is not None})
        unmonitored: dict[tuple[str, ...], float] = {
            (v.id,): 1.0 if v.unmonitored else 0.0 for v in self.core.booth_views()
        }
        yield gauge("boothwatch_booth_unmonitored", "1 while a booth sensor is offline",
                    ["booth"], unmonitored)
        # a leak of tasks (one per page, per connection...) shows here long before memory
        yield gauge("boothwatch_event_loop_tasks", "Tasks alive on the service's event loop",
                    [], {(): float(len(asyncio.all_tasks()))})
        if isinstance(self.clock, ServiceClock):
            yield gauge("boothwatch_clock_skew_seconds",
                        "Wall clock minus the service clock (timers follow the service clock)",
                        [], {(): self.clock.skew()})
        if hasattr(self, "mqtt"):
            yield gauge("boothwatch_broker_connected", "1 while connected to the MQTT broker",
                        [], {(): 1.0 if self.mqtt.connected else 0.0})
        if hasattr(self, "selfwatch"):
            yield gauge("boothwatch_broker_disconnected_seconds",
                        "How long no booth event could reach us: not connected and "
                        "subscribed to the broker (0 while connected)", [],
                        {(): self.selfwatch.down_seconds(now)})
            yield gauge("boothwatch_monitoring_down",
                        "1 from the monitoring-down page until the restored message", [],
                        {(): float(self.selfwatch.state in (State.PAGED, State.SETTLING))})
        if hasattr(self, "store"):
            store = self.store
            yield gauge("boothwatch_store_writable", "1 while the last store commit succeeded",
                        [], {(): 1.0 if store.writable else 0.0})
            yield gauge("boothwatch_store_pending_writes", "Rows waiting for the next commit",
                        [], {(): float(store.pending())})
            yield gauge("boothwatch_store_last_commit_seconds", "Duration of the last commit",
                        [], {(): store.last_commit_seconds})
            yield counter("boothwatch_store_commit_failures",
                          "Store commits that failed (each is retried, never dropped)",
                          store.commit_failures)
            yield gauge("boothwatch_mqtt_unacked_messages",
                        "MQTT messages taken but not acknowledged until their rows commit",
                        [], {(): float(self._unacked)})


class RecentKeys:
    """The newest ``capacity`` keys, the oldest forgotten first: a set to look up, a deque
    for their order.

    Not an OrderedDict, though it reads the same: each key forgotten leaves a dummy slot
    in the dict's table, and the dict rebuilds at three times the keys it holds, so once
    full its table doubles (at 200,000 keys, 29 MiB became 43 MiB traced) and every
    rebuild of those 20 MiB tables fragments the heap further (bench/memory.py). A set
    rebuilds at twice its keys, the size it already has: full, this stays at one size.
    """

    __slots__ = ("_keys", "_order", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._keys: set[bytes] = set()
        self._order: deque[bytes] = deque()

    def __contains__(self, key: bytes) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: bytes) -> None:
        """Remember ``key``; one already remembered keeps its place (and is forgotten first)."""
        if key in self._keys:
            return
        self._keys.add(key)
        self._order.append(key)
        if len(self._order) > self.capacity:
            self._keys.remove(self._order.popleft())


def _log_soon(event: str, **fields: Any) -> None:
    """An info line written after the current callback: the pages it sent go first."""
    asyncio.get_running_loop().call_soon(functools.partial(log.info, event, **fields))


def _event_key(booth: str, event_id: str) -> bytes:
    return hashlib.blake2b(f"{booth}\0{event_id}".encode(), digest_size=12).digest()


def _kind(parsed: Parsed) -> str:
    return type(parsed.event).__name__.lower()


# never free text; a "by" that is not a responder id is hidden by monitor/logs.py
_AUDIT_LOGGED = frozenset({"trigger", "by", "on", "via", "until"})

