"""Ingest: one MQTT message becomes an event for the core, and is acknowledged once stored.

paho calls `Ingest.on_message` on the event loop thread. By topic:

* a booth's events topic: the canonical decoder (`devices.adapters.canonical`);
* an off-the-shelf device's own topic: its firmware adapter, then the registry in
  the core turns readings into booth events;
* the ack, duty and steps topics of pager gateways.

Every message passes the flood gate (`monitor.floodgate`) and deduplication (an
event id seen before, or a redelivery of a message seen before), then goes to the
driver. The event joins the store's current batch, and the message is acknowledged
to the broker only when that batch has committed. A crash before the commit means
the broker redelivers, the core sees the event again, and at worst a page goes out
twice, never zero times, naming the same incident (the event id, or the payload, is
the incident id's cause: `monitor/core/ids.py`). Garbage is counted by reason, logged at most once a
minute per topic and reason, and acknowledged (nothing to store): the other booths
never notice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import deque
from collections.abc import Callable, Iterable

import structlog
from prometheus_client.core import Metric

from devices import adapters
from devices.adapters.canonical import Parsed, parse_event, parse_topic
from devices.adapters.payload import Rejected
from devices.mqtt import Message, MqttLink
from monitor.core.devices import ROLE_ACTIONS
from monitor.core.events import (
    Acknowledge,
    Button,
    DeviceChanged,
    DeviceReading,
    Heartbeat,
    Press,
    RecordStep,
    SetDuty,
    parse_step,
)
from monitor.core.flood import Kind, cannot_be_a_call, reading_kind
from monitor.core.incident import IllegalTransition
from monitor.core.readings import Reading
from monitor.core.roster import UnknownResponder
from monitor.core.settings import Config, DeviceConfig
from monitor.core.site import UnknownIncident
from monitor.driver import Driver
from monitor.floodgate import FloodGate
from monitor.logs import RateLimit
from monitor.metrics import Metrics, gauge
from monitor.store import EventRow, Store
from monitor.topics import Topics

log = structlog.get_logger(__name__)

DEDUPE_WINDOW = 24 * 3600.0  # event ids remembered this long (store and memory)
DEDUPE_MEMORY = 200_000
RECENT_PAYLOADS = 10_000  # digests of id-less messages kept to spot a redelivery (dup flag)
# the broker applies no backpressure (Mosquitto overruns its in-flight limit), so stop
# reading MQTT while this many messages wait for a commit, and read again once below LOW
# (an event makes one to three rows). Messages, not the store's rows: a burst of incidents
# the timers raise (1,000 sensors silent after a power cut) makes 10,000 rows of our own,
# and a pause then only kept the calls meanwhile in the broker (bench/burst.py)
UNACKED_HIGH = 5_000
UNACKED_LOW = 2_500
# ...but never while commits fail: the store is not slow then, it is stuck, and a paused
# reader would stop hearing calls. During a store outage the service reads, pages and holds
# every event in memory, unacknowledged, up to the broker's in-flight window (see
# docs/architecture/failures.md). That window is our MQTT 5 Receive Maximum: past it the
# broker sends nothing more, calls included, so ask for the most MQTT allows.
RECEIVE_MAXIMUM = 65_535
WINDOW_WARN = RECEIVE_MAXIMUM * 9 // 10


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

    def extend(self, keys: Iterable[bytes]) -> None:
        """`add` each of `keys`, in order (the day's event ids at start: 40,000 one call at
        a time were a tenth of a restart's store phase)."""
        have, order, capacity = self._keys, self._order, self.capacity
        for key in keys:
            if key not in have:
                have.add(key)
                order.append(key)
                if len(order) > capacity:
                    have.remove(order.popleft())

    def add(self, key: bytes) -> None:
        """Remember ``key``; one already remembered keeps its place (and is forgotten first)."""
        if key in self._keys:
            return
        self._keys.add(key)
        self._order.append(key)
        if len(self._order) > self.capacity:
            self._keys.remove(self._order.popleft())


def event_key(booth: str, event_id: str) -> bytes:
    """(booth, event id) as a 12-byte digest: half the memory of the tuple of strings."""
    return hashlib.blake2b(f"{booth}\0{event_id}".encode(), digest_size=12).digest()


def device_routes(config: Config) -> dict[str, list[DeviceConfig]]:
    """Device topic -> the devices listening on it (a z2m bridge topic serves many)."""
    routes: dict[str, list[DeviceConfig]] = {}
    for device in config.devices:
        if device.source == "canonical":
            continue  # canonical devices publish on the booth events topic
        for topic in adapters.topics(device):
            routes.setdefault(topic, []).append(device)
    return routes


def _booth_of(topic: str, devices: list[DeviceConfig]) -> str:
    """The booth a device topic's messages are about, or the topic itself when it serves
    several booths (a bridge's)."""
    booths = {d.booth for d in devices}
    return booths.pop() if len(booths) == 1 else topic


class Ingest:
    def __init__(self, config: Config, driver: Driver, store: Store, link: MqttLink,
                 metrics: Metrics, clock: Callable[[], float]) -> None:
        self._site = config.site.id
        self._driver = driver
        self._store = store
        self._link = link
        self._metrics = metrics
        self._clock = clock
        self.topics = Topics(config.site.id)
        self._known_booths = frozenset(b.id for b in config.booths)
        self._canonical_devices = frozenset(
            d.id for d in config.devices if d.source == "canonical")
        self._routes = device_routes(config)
        self.subscriptions = [self.topics.events, self.topics.ack, self.topics.duty,
                              self.topics.steps, *self._routes]
        self.gate = FloodGate(config, self._routes, link, metrics, driver.core.open_call,
                              self.on_message)
        # `order` of a device's or a gateway's topic
        self._order_of: dict[str, tuple[str, bool]] = {
            topic: (_booth_of(topic, devices),
                    any(d.role in ROLE_ACTIONS for d in devices))
            for topic, devices in self._routes.items()}
        for topic in (self.topics.ack, self.topics.duty, self.topics.steps):
            self._order_of[topic] = (topic, True)
        self.seen = RecentKeys(DEDUPE_MEMORY)
        self._recent_dups = RecentKeys(RECENT_PAYLOADS)
        self._rate = RateLimit(60.0)
        self.unacked = 0  # MQTT messages held until their rows are committed
        # the messages waiting for each store future: one callback per commit, not per message
        self._waiting: dict[asyncio.Future[None], list[tuple[int, int]]] = {}
        self.last_event_at: float | None = None

    def order(self, msg: Message) -> tuple[str, bool]:
        """How the MQTT link may reorder a message read with others (`devices.mqtt`): its
        key, the booth whose messages keep their order whatever their topic (else the
        topic), and whether it is urgent, handled before other booths' messages read
        before it. Urgent: whatever a person sends, which may open, answer or end an
        incident (a booth event that may be a button press, a button's topics, the pager
        gateways' acks, duty and steps), never a sensor's reading. So a call is not held
        behind a burst of sensors going offline, and keeps its place behind a "clear"
        from its booth or a duty change."""
        topic = msg.topic
        known = self._order_of.get(topic)
        if known is not None:
            return known
        booth = parse_topic(topic, self._site)
        if booth is None:
            return topic, False
        payload = msg.payload
        return booth, b"button" in payload or b"\\" in payload

    def remember(self, ids: Iterable[tuple[str, str]]) -> None:
        """Event ids already stored (at start): their redeliveries are duplicates."""
        self.seen.extend(event_key(booth, event_id) for booth, event_id in ids)

    def on_message(self, msg: Message, generation: int) -> None:
        now = self._clock()
        topic = msg.topic
        try:
            if topic == self.topics.ack:
                if self.gate.admit(self.gate.ack, msg, generation):
                    self._ack_message(msg, topic, generation, now)
            elif topic == self.topics.duty:
                if self.gate.admit(self.gate.duty, msg, generation):
                    self._duty_message(msg, topic, generation, now)
            elif topic == self.topics.steps:
                if self.gate.admit(self.gate.steps, msg, generation):
                    self._steps_message(msg, topic, generation, now)
            elif topic in self._routes:
                self._device_message(msg, topic, generation, now)
            else:
                self._event_message(msg, topic, generation, now)
        except Exception:
            # our own bug: never let it stop the other booths; the message stays unacked
            log.exception("ingest_failed", topic=topic)
            self._metrics.events.labels("unknown", "error").inc()

    # --- the store sets the pace ------------------------------------------------------

    def store_failed(self) -> None:
        """Commits started failing: read on (see UNACKED_HIGH), so calls are still paged."""
        self._link.resume_reading()

    # --- booth events -----------------------------------------------------------------

    def _event_message(self, msg: Message, topic: str, generation: int,
                       now: float) -> None:
        booth = parse_topic(topic, self._site)
        if booth is None:
            self._reject(topic, "bad_topic", "not a booth events topic", msg.mid, generation)
            return
        if msg.retain:
            # a retained message is a snapshot someone left on the broker, not a new event
            self._reject(topic, "retained", "retained message ignored", msg.mid, generation)
            return
        payload = msg.payload
        # no named device here and certainly no call: limit it before parsing it, so a
        # flood's drop path never parses JSON
        known = self.gate.unnamed.get(booth) if cannot_be_a_call(payload) else None
        if known is not None and not self.gate.admit(known, msg, generation):
            return
        parsed = parse_event(booth, payload, self._known_booths)
        if isinstance(parsed, Rejected):
            self._reject(topic, parsed.reason, parsed.detail, msg.mid, generation)
            return
        if known is None:
            event = parsed.event
            call = isinstance(event, Button) and event.press is Press.CALL
            if not self.gate.admit(self.gate.event_sender(booth, parsed.device), msg,
                                   generation, Kind.CALL if call else Kind.OTHER, booth):
                return
        kind = type(parsed.event).__name__.lower()
        if self._duplicate(booth, parsed, msg, topic):
            self._metrics.count(self._metrics.events, kind, "duplicate")
            # a redelivery after a reconnect: its first copy may still wait for the store
            self._ack_when(self._store.barrier(), msg.mid, generation)
            return
        # the core first: a page's delivery task is then queued before the store writer
        # wakes, so the page leaves before the batch is built
        # what a redelivery repeats, so an incident raised again after a crash keeps its id
        cause = parsed.event_id or payload
        self._driver.handle(parsed.event, now, cause)
        stored = self._store.add_event(
            EventRow(booth=booth, kind=kind, event_id=parsed.event_id, device=parsed.device,
                     ts=parsed.ts, received_at=now, payload=msg.payload.decode())
        )
        self._ack_when(stored, msg.mid, generation)
        if self.unacked > UNACKED_HIGH and self._store.writable:
            self._link.pause_reading()  # unacknowledged messages wait safely in the broker
        if parsed.device in self._canonical_devices:
            # a canonical device's health: any event is a sign of life, a heartbeat its battery
            battery = parsed.event.battery if isinstance(parsed.event, Heartbeat) else None
            self._driver.handle(DeviceReading(parsed.device, Reading(battery=battery)), now,
                                cause)
        self._metrics.count(self._metrics.events, kind, "accepted")
        self.last_event_at = now

    def _duplicate(self, booth: str, parsed: Parsed, msg: Message, topic: str) -> bool:
        """Same event id seen before, or a redelivery (dup flag) of a message seen before."""
        if parsed.event_id is not None:
            key = event_key(booth, parsed.event_id)
            if key in self.seen:
                return True
            self.seen.add(key)
            return False
        return self._redelivered(msg, topic)

    def _redelivered(self, msg: Message, topic: str) -> bool:
        """A redelivery (dup flag) of a message seen before, by its topic and payload."""
        digest = hashlib.blake2b(topic.encode() + b"\0" + msg.payload, digest_size=16).digest()
        if msg.dup and digest in self._recent_dups:
            return True
        self._recent_dups.add(digest)
        return False

    # --- off-the-shelf devices --------------------------------------------------------

    def _device_message(self, msg: Message, topic: str, generation: int,
                        now: float) -> None:
        """An off-the-shelf device's own topic: its adapter, then the registry in the core."""
        payload = msg.payload
        routes = self._routes[topic]
        retained = msg.retain
        early: list[list[Reading] | Rejected] | None = None
        kind, booth = Kind.OTHER, ""
        if any(d.id in self.gate.calling for d in routes):
            # a call button: decode first, so a call is never dropped (monitor/core/flood.py)
            early = [adapters.decode(d, topic, payload, retained) for d in routes]
            for device, result in zip(routes, early, strict=True):
                if device.id in self.gate.calling and not isinstance(result, Rejected):
                    this = reading_kind(device, result, retained)
                    if this > kind:
                        kind, booth = this, device.booth
        if not self.gate.admit(self.gate.routes[topic], msg, generation, kind, booth):
            return
        done: asyncio.Future[None] | None = None
        for index, device in enumerate(routes):
            decoded = (early[index] if early is not None
                       else adapters.decode(device, topic, payload, retained))
            if isinstance(decoded, Rejected):
                self._metrics.rejected.labels(decoded.reason).inc()
                if self._rate.allow(topic, decoded.reason):
                    log.warning("device_message_rejected", topic=topic, device=device.id,
                                reason=decoded.reason, detail=decoded.detail)
                continue
            for reading in decoded:
                handled = self._driver.handle(DeviceReading(device.id, reading, retained), now,
                                              payload)
                if any(not isinstance(c, DeviceChanged) for c in handled.commands):
                    # it changed something: keep the message itself for the record
                    self._store.add_event(EventRow(
                        booth=device.booth, kind=f"device:{device.source}", event_id=None,
                        device=device.id, ts=None, received_at=now,
                        payload=payload.decode("utf-8", "replace")))
                self._metrics.count(self._metrics.device_messages, device.source, "accepted")
                self.last_event_at = now
                done = handled.stored
        if done is None:
            self._link.ack(msg.mid, generation)  # nothing to store
        else:
            self._ack_when(done, msg.mid, generation)

    # --- pager gateways ---------------------------------------------------------------

    def _ack_message(self, msg: Message, topic: str, generation: int,
                     now: float) -> None:
        """``{"incident": "<id>", "responder": "ana"}`` on boothwatch/<site>/ack."""
        try:
            body = json.loads(msg.payload)
            event = Acknowledge(str(body["incident"]), str(body["responder"]), via="mqtt")
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            self._metrics.acks.labels("rejected").inc()
            if self._rate.allow(topic, "bad_ack"):
                log.warning("ack_rejected", reason=str(exc))
            self._link.ack(msg.mid, generation)
            return
        try:
            handled = self._driver.handle(event, now)
        except (UnknownIncident, IllegalTransition) as exc:
            self._metrics.acks.labels("ignored").inc()
            log.info("ack_ignored", incident=event.incident, reason=type(exc).__name__)
            self._link.ack(msg.mid, generation)
            return
        self._metrics.acks.labels("accepted").inc()
        self._ack_when(handled.stored, msg.mid, generation)

    def _steps_message(self, msg: Message, topic: str, generation: int,
                       now: float) -> None:
        """``{"incident", "responder", "step", "count"?, "note"?}`` on boothwatch/<site>/steps:
        a protocol step. A copy the broker redelivers is recorded once (two naloxone
        doses are not four)."""
        if msg.retain:
            # a retained step is an old one replayed at every reconnect
            self._reject(topic, "retained", "retained step ignored", msg.mid, generation)
            return
        try:
            body = json.loads(msg.payload)
            if not isinstance(body, dict):
                raise TypeError("not a JSON object")
            if "count" in body and body["count"] is None:
                raise ValueError("count: null")
            step = parse_step(body.get("step"), body.get("count"), body.get("note"))
            event = RecordStep(str(body["incident"]), str(body["responder"]), step,
                               body.get("count"), body.get("note"), via="mqtt")
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            self._metrics.mqtt_steps.labels("rejected").inc()
            if self._rate.allow(topic, "bad_step"):
                # the error names the field, never the note's text
                log.warning("step_rejected", reason=str(exc)[:200])
            self._link.ack(msg.mid, generation)
            return
        if self._redelivered(msg, topic):
            self._metrics.mqtt_steps.labels("duplicate").inc()
            self._ack_when(self._store.barrier(), msg.mid, generation)
            return
        try:
            handled = self._driver.handle(event, now)
        except (UnknownIncident, IllegalTransition) as exc:
            self._metrics.mqtt_steps.labels("ignored").inc()
            log.info("step_ignored", incident=event.incident, reason=type(exc).__name__)
            self._link.ack(msg.mid, generation)
            return
        self._metrics.mqtt_steps.labels("accepted").inc()
        self._ack_when(handled.stored, msg.mid, generation)

    def _duty_message(self, msg: Message, topic: str, generation: int,
                      now: float) -> None:
        """``{"responder": "ana", "on": true}`` on boothwatch/<site>/duty: check in or out."""
        if msg.retain:
            # a retained check-in is old news replayed at every reconnect, never a new one
            self._reject(topic, "retained", "retained duty message ignored", msg.mid,
                         generation)
            return
        try:
            body = json.loads(msg.payload)
            on = body["on"]
            if not isinstance(on, bool):
                raise TypeError("on must be true or false")
            who = str(body["responder"])
            handled = self._driver.handle(
                SetDuty(who, on, by=str(body.get("by") or who), via="mqtt"), now)
        except (ValueError, KeyError, TypeError, RecursionError, UnknownResponder) as exc:
            self._metrics.rejected.labels("bad_duty").inc()
            if self._rate.allow(topic, "bad_duty"):
                log.warning("duty_rejected", reason=type(exc).__name__)
            self._link.ack(msg.mid, generation)
            return
        self._ack_when(handled.stored, msg.mid, generation)

    # --- acknowledging ----------------------------------------------------------------

    def _reject(self, topic: str, reason: str, detail: str, mid: int, generation: int) -> None:
        self._metrics.rejected.labels(reason).inc()
        if self._rate.allow(topic, reason):
            log.warning("event_rejected", topic=topic, reason=reason, detail=detail)
        self._link.ack(mid, generation)  # nothing to store: do not have it redelivered forever

    def _ack_when(self, stored: asyncio.Future[None], mid: int, generation: int) -> None:
        self.unacked += 1
        if self.unacked >= WINDOW_WARN and self._rate.allow("mqtt", "window"):
            log.critical("mqtt_window_nearly_full", unacked=self.unacked,
                         window=RECEIVE_MAXIMUM, store_error=self._store.last_error)

        waiting = self._waiting.get(stored)
        if waiting is None:
            waiting = self._waiting[stored] = []
            stored.add_done_callback(self._stored)
        waiting.append((mid, generation))

    def _stored(self, stored: asyncio.Future[None]) -> None:
        """Acknowledge every message whose rows ``stored`` held (a commit's worth)."""
        waiting = self._waiting.pop(stored)
        self.unacked -= len(waiting)
        ack = self._link.ack
        for mid, generation in waiting:
            ack(mid, generation)
        if self.unacked < UNACKED_LOW:
            self._link.resume_reading()

    def gauges(self) -> Iterable[Metric]:
        now = self._clock()
        if self.last_event_at is not None:
            yield gauge("boothwatch_last_event_age_seconds",
                        "Seconds since the last accepted booth or device event", [],
                        {(): now - self.last_event_at})
        yield gauge("boothwatch_mqtt_unacked_messages",
                    "MQTT messages taken but not acknowledged until their rows commit",
                    [], {(): float(self.unacked)})
        yield from self.gate.gauges()
