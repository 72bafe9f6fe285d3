"""The runtime: wires the pure core to MQTT, SQLite, pages, HTTP, metrics and logs.

Path of a booth event: paho calls `_on_message` on the loop thread; it is
parsed, deduplicated, handed to the core, and the commands are carried out at
once (pages go to the dispatcher without waiting for the disk). The event and
every state change join the store's current batch; the message is acknowledged
to the broker only when that batch has committed. A crash before the commit
means the broker redelivers, the core sees the event again, and at worst a
page goes out twice, never zero times.

Timers: one task sleeps until the core's next deadline (or until an event
moved it) and calls ``on_timer``. Times are wall-clock epoch seconds, so a
restart resumes every plan against its original deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import paho.mqtt.client as paho
import structlog
from prometheus_client.core import Metric
from ulid import ULID

from alerts.channels import (
    Attempt,
    Delivery,
    DeliveryError,
    DeliveryKind,
    Dispatcher,
    build_channels,
)
from alerts.pushover import ReceiptWatcher
from alerts.roster import UnknownResponder
from alerts.tokens import AckTokens
from devices import adapters
from devices.canonical import REASONS, Parsed, Rejected, parse_event, parse_topic
from devices.mqtt import MqttLink, NotConnected
from devices.readings import Reading
from monitor.booth import BoothView
from monitor.config import Config, DeviceConfig
from monitor.core import SiteCore, UnknownIncident
from monitor.events import OUTCOMES as OUTCOME_VALUES
from monitor.events import (
    Acknowledge,
    Audit,
    BoothChanged,
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
    SendNotice,
    SendPage,
    SetDuty,
    SiteEvent,
)
from monitor.incident import Action, IllegalTransition, IncidentView, TimelineEntry, Trigger
from monitor.logs import RateLimit
from monitor.metrics import OUTCOMES, Metrics, gauge
from monitor.store import AttemptRow, EventRow, PageRow, Store, dumps
from monitor.views import booth_json, incident_from_stored, incident_json, iso

log = structlog.get_logger(__name__)

DEDUPE_WINDOW = 24 * 3600.0  # event ids remembered this long (store and memory)
DEDUPE_MEMORY = 200_000
# the broker applies no backpressure (Mosquitto overruns its in-flight limit), so stop
# reading MQTT while this many rows wait for a commit, and read again once below LOW
PENDING_HIGH = 20_000
PENDING_LOW = 5_000


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
        clock: Callable[[], float] = time.time,
        retry_delays: tuple[float, ...] = (0.5, 1, 2, 4, 8),
    ) -> None:
        self.config = config
        self.env = os.environ if env is None else env
        self.clock = clock
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
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._recent_dups: OrderedDict[bytes, None] = OrderedDict()
        self._wake = asyncio.Event()
        self._timer_at: float | None = None  # the deadline the timer task sleeps towards
        self._last_event_at: float | None = None
        self._rate = RateLimit(60.0)
        self.started = asyncio.Event()
        self.store: Store
        self.mqtt: MqttLink
        self.dispatcher: Dispatcher
        self.tokens: AckTokens
        self.api_token = self.env.get("BOOTHWATCH_API_TOKEN") or None
        self.receipts: ReceiptWatcher | None = None  # when a Pushover channel is configured
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
        self.store = await Store.open(cfg.store.path)
        self.store.on_committed = self._maybe_resume
        try:
            secret = self.env.get("BOOTHWATCH_SECRET") or await self.store.secret(
                "ack_secret", secrets.token_hex(32)
            )
            self.tokens = AckTokens(secret, cfg.http.ack_link_ttl)
            self.core.restore(
                await self.store.load_booths(), await self.store.load_open_incidents(),
                await self.store.load_devices(), now=self.clock(),
                duty=await self.store.load_duty(),
            )
            self.core.start(self.clock())
            for key in await self.store.event_ids_since(self.clock() - DEDUPE_WINDOW):
                self._remember(key)
            restored = len(self.core.incidents)
            async with aiohttp.ClientSession() as session:
                self.mqtt = MqttLink(
                    cfg.mqtt,
                    subscriptions=[self.topics.events, self.topics.ack, self.topics.duty,
                                   *self._device_routes],
                    on_message=self._on_message,
                    will=(self.topics.status, b"offline"),
                    on_connected=self._on_connected,
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
            log.info("stopped")

    async def _serve(self, http: bool, restored: int) -> None:
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(self.store.run_writer(), name="store-writer")
            tg.create_task(self.mqtt.run(), name="mqtt")
            tg.create_task(self._timer_loop(), name="timers")
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
            del writer

    def _on_connected(self, session_present: bool) -> None:
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
                self._on_ack_message(msg, generation, now)
            elif msg.topic == self.topics.duty:
                self._on_duty_message(msg, generation, now)
            elif msg.topic in self._device_routes:
                self._on_device_message(msg, generation, now)
            else:
                self._on_event_message(msg, generation, now)
        except Exception:
            # our own bug: never let it stop the other booths; the message stays unacked
            log.exception("ingest_failed", topic=msg.topic)
            self.metrics.events.labels("unknown", "error").inc()

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
        parsed = parse_event(booth, bytes(msg.payload), self._known_booths)
        if isinstance(parsed, Rejected):
            self._reject(msg.topic, parsed.reason, parsed.detail, msg.mid, generation)
            return
        kind = _kind(parsed)
        if self._duplicate(booth, parsed, msg):
            self.metrics.events.labels(kind, "duplicate").inc()
            self.mqtt.ack(msg.mid, generation)
            return
        # the core first: a page's delivery task is then queued before the store writer
        # wakes, so the page leaves before the batch is built
        self._execute(self.core.handle(parsed.event, now), now)
        stored = self.store.add_event(
            EventRow(booth=booth, kind=kind, event_id=parsed.event_id, device=parsed.device,
                     ts=parsed.ts, received_at=now, payload=msg.payload.decode())
        )
        self._ack_when(stored, msg.mid, generation)
        if self.store.pending() > PENDING_HIGH:
            self.mqtt.pause_reading()  # unacknowledged messages wait safely in the broker
        if parsed.device in self._canonical_devices:
            # a canonical device's health: any event is a sign of life, a heartbeat its battery
            battery = parsed.event.battery if isinstance(parsed.event, Heartbeat) else None
            self._execute(self.core.handle(
                DeviceReading(parsed.device, Reading(battery=battery)), now), now)
        self.metrics.events.labels(kind, "accepted").inc()
        self._last_event_at = now
        self._rearm()

    def _on_device_message(self, msg: paho.MQTTMessage, generation: int, now: float) -> None:
        """An off-the-shelf device's own topic: its adapter, then the registry in the core."""
        payload = bytes(msg.payload)
        done: asyncio.Future[None] | None = None
        for device in self._device_routes[msg.topic]:
            decoded = adapters.decode(device, msg.topic, payload, bool(msg.retain))
            if isinstance(decoded, Rejected):
                self.metrics.rejected.labels(decoded.reason).inc()
                if self._rate.allow(msg.topic, decoded.reason):
                    log.warning("device_message_rejected", topic=msg.topic, device=device.id,
                                reason=decoded.reason, detail=decoded.detail)
                continue
            for reading in decoded:
                commands = self.core.handle(
                    DeviceReading(device.id, reading, bool(msg.retain)), now)
                if any(not isinstance(c, DeviceChanged) for c in commands):
                    # it changed something: keep the message itself for the record
                    self.store.add_event(EventRow(
                        booth=device.booth, kind=f"device:{device.source}", event_id=None,
                        device=device.id, ts=None, received_at=now,
                        payload=payload.decode("utf-8", "replace")))
                self.metrics.device_messages.labels(device.source, "accepted").inc()
                self._last_event_at = now
                done = self._execute(commands, now)
        if done is None:
            self.mqtt.ack(msg.mid, generation)  # nothing to store
        else:
            self._ack_when(done, msg.mid, generation)
        self._rearm()

    def _rearm(self) -> None:
        """Wake the timer task only if an event moved the next deadline earlier."""
        deadline = self.core.next_deadline()
        if deadline is not None and (self._timer_at is None or deadline < self._timer_at):
            self._wake.set()

    def _maybe_resume(self) -> None:
        if self.store.pending() < PENDING_LOW:
            self.mqtt.resume_reading()

    def _duplicate(self, booth: str, parsed: Parsed, msg: paho.MQTTMessage) -> bool:
        """Same event id seen before, or a redelivery (dup flag) of a message seen before."""
        if parsed.event_id is not None:
            key = (booth, parsed.event_id)
            if key in self._seen:
                return True
            self._remember(key)
            return False
        digest = hashlib.blake2b(msg.topic.encode() + b"\0" + msg.payload, digest_size=16).digest()
        if msg.dup and digest in self._recent_dups:
            return True
        self._recent_dups[digest] = None
        if len(self._recent_dups) > 10_000:
            self._recent_dups.popitem(last=False)
        return False

    def _remember(self, key: tuple[str, str]) -> None:
        self._seen[key] = None
        if len(self._seen) > DEDUPE_MEMORY:
            self._seen.popitem(last=False)

    def _ack_when(self, stored: asyncio.Future[None], mid: int, generation: int) -> None:
        stored.add_done_callback(lambda _f: self.mqtt.ack(mid, generation))

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
        await done

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
        await self._execute([IncidentChanged(view, (entry,))], now)  # counted in _observe
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
        await done
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
        if not await self.store.check_writable():
            reasons.append(f"store not writable: {self.store.last_error}")
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
                log.info("incident_raised", incident=view.id, booth=view.booth,
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
        log.info("page", incident=cmd.incident, booth=cmd.booth, responder=cmd.responder,
                 level=cmd.level, priority=cmd.priority, urgent=cmd.urgent)
        return self._deliver("page", cmd.incident, cmd.responder, cmd.level, payload, now)

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
                        final=attempt.final)
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
        if delivery.kind != "page":
            return  # a notice that could not be delivered is recorded, never escalated
        self._tell_core(PageFailed(delivery.incident, delivery.responder, delivery.level,
                                   delivery.channels[-1], reason), self.clock())

    async def _publish_page(self, topic: str, payload: bytes) -> None:
        try:
            await self.mqtt.publish_confirmed(topic, payload)
        except NotConnected as exc:
            raise DeliveryError(str(exc)) from exc

    # --- timers -----------------------------------------------------------------------

    async def _timer_loop(self) -> None:
        while True:
            deadline = self._timer_at = self.core.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that arrives as the event is set, and shutdown would then hang
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            now = self.clock()
            try:
                self._execute(self.core.on_timer(now), now)
            except Exception:
                log.exception("timer_failed")
                await asyncio.sleep(1)

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
        if hasattr(self, "mqtt"):
            yield gauge("boothwatch_broker_connected", "1 while connected to the MQTT broker",
                        [], {(): 1.0 if self.mqtt.connected else 0.0})
        if hasattr(self, "store"):
            store = self.store
            yield gauge("boothwatch_store_writable", "1 while the last store commit succeeded",
                        [], {(): 1.0 if store.writable else 0.0})
            yield gauge("boothwatch_store_pending_writes", "Rows waiting for the next commit",
                        [], {(): float(store.pending())})
            yield gauge("boothwatch_store_last_commit_seconds", "Duration of the last commit",
                        [], {(): store.last_commit_seconds})


def _kind(parsed: Parsed) -> str:
    return type(parsed.event).__name__.lower()


_AUDIT_LOGGED = frozenset({"trigger", "by", "on", "via", "until"})  # never free text

