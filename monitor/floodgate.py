"""The flood limit at the door: one flooding device cannot starve the other booths.

Ingest asks `FloodGate.admit` once per message, after finding its sender and what
it may be (`Kind`). The message then passes, or is kept back: a repeated call is
acknowledged and counted as dropped; anything else is *held*, unacknowledged, as
its sender's latest word (one per event kind for a booth's canonical sender), and
handed back to ingest as soon as the sender has a token again, unless a newer one
passed first (then the held one is acknowledged and counted). The rules, and why
a first call is never dropped, are in `monitor.core.flood`; this module holds the
senders made from the config, the held messages and their timers.

The drop path runs thousands of times a second during a flood: one dict lookup and
a few float operations, no parsing, no allocation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

import structlog
from prometheus_client.core import Metric

from devices.mqtt import Message, MqttLink
from monitor.core.flood import RATE_LIMITED, Kind, Limiter, Sender, held_slot, may_call
from monitor.core.settings import Config, DeviceConfig
from monitor.metrics import Metrics, gauge

log = structlog.get_logger(__name__)

Slot = tuple[Sender, str]
Release = Callable[[Message, int], None]


class FloodGate:
    def __init__(self, config: Config, routes: dict[str, list[DeviceConfig]], link: MqttLink,
                 metrics: Metrics, open_call: Callable[[str], str | None],
                 release: Release) -> None:
        """``routes``: device topic -> the devices on it; ``open_call(booth)``: the booth's
        unresolved incident if it has a call; ``release``: how a held message goes in."""
        self.limiter = Limiter(config.rate_limit)
        self._link = link
        self._metrics = metrics
        self._open_call = open_call
        self._release_to = release
        # a canonical device named in [[devices]] has its own bucket on its booth's topic;
        # every other message on a booth's topic shares the booth's (made-up ids too)
        named = [(d.booth, d.id) for d in config.devices if d.source == "canonical"]
        self._named = frozenset(named)
        self._events: dict[tuple[str, str | None], Sender] = {
            key: Sender("canonical", *key) for key in named}
        self._events.update({(b.id, None): Sender("canonical", b.id) for b in config.booths})
        # booths where the sender is known before parsing: no named device on their topic
        with_named = {booth for booth, _ in named}
        self.unnamed: dict[str, Sender] = {b.id: self._events[(b.id, None)]
                                           for b in config.booths if b.id not in with_named}
        self.ack = Sender("ack", "")
        self.duty = Sender("duty", "")
        self.steps = Sender("steps", "")
        self.routes: dict[str, Sender] = {}
        own = {d.id: Sender(d.source, d.booth, d.id) for d in config.devices}
        for topic, devices in routes.items():
            if len({d.id for d in devices}) == 1:
                self.routes[topic] = own[devices[0].id]  # one bucket over its topics
            else:  # a topic several devices share (an ESPHome node's status)
                booths = {d.booth for d in devices}
                self.routes[topic] = Sender(devices[0].source,
                                            booths.pop() if len(booths) == 1 else "")
        self.calling = frozenset(d.id for d in config.devices if may_call(d))
        self._held: dict[Slot, tuple[Message, int]] = {}
        self._retrying: set[Slot] = set()
        self._releasing: Message | None = None  # a held message on its way in

    def event_sender(self, booth: str, device: str | None) -> Sender:
        """The sender of a parsed event on a booth's topic."""
        return self._events[(booth, device if (booth, device) in self._named else None)]

    def admit(self, sender: Sender, msg: Message, generation: int,
              kind: Kind = Kind.OTHER, booth: str = "") -> bool:
        """Whether `msg` goes in now; if not, it is held back or dropped (see the header)."""
        if msg is self._releasing:
            return True  # a held-back message, its token already taken
        open_call = self._open_call(booth) if kind is not Kind.OTHER else None
        # the limiter's own clock: monotonic, so a wall-clock step never frees a flood
        tick = time.monotonic()
        reason = self.limiter.admit(sender, tick, kind, open_call)
        if reason is None:
            if self._held and (slot := self._slot(sender, msg)) in self._held:
                self._drop_held(slot)  # older than this one: never to be delivered
            return True
        if kind is Kind.CALL:
            self._link.ack(msg.mid, generation)  # nothing to store: never have it redelivered
            self._count(sender, reason)  # a repeated call: never held back
        else:
            slot = self._slot(sender, msg)
            if slot in self._held:
                self._drop_held(slot)  # the one it replaces is gone for good
            self._held[slot] = (msg, generation)
            self._retry(slot)
        dropped = self.limiter.report(sender, tick)
        if dropped:
            log.warning("messages_dropped", source=sender.source, booth=sender.booth or None,
                        device=sender.device, topic=msg.topic, reason=reason, dropped=dropped)
        return False

    def _retry(self, slot: Slot) -> None:
        if slot not in self._retrying:
            self._retrying.add(slot)
            asyncio.get_running_loop().call_later(1.0 / self.limiter.rate, self._release, slot)

    def _release(self, slot: Slot) -> None:
        """The held-back message goes in once the sender has a token again, so the core
        ends with the last thing the device said (after a flood, or a replayed backlog)."""
        self._retrying.discard(slot)
        if slot not in self._held:
            return  # a newer message got through meanwhile
        if not self.limiter.take(slot[0], time.monotonic()):
            self._retry(slot)  # still flooding: try again
            return
        # the normal path: stored, then acknowledged (unless its connection is gone, and
        # then the broker redelivers it and deduplication absorbs the copy)
        msg, generation = self._held.pop(slot)
        self._releasing = msg
        try:
            self._release_to(msg, generation)
        finally:
            self._releasing = None

    def _drop_held(self, slot: Slot) -> None:
        old, generation = self._held.pop(slot)
        self._link.ack(old.mid, generation)
        self._count(slot[0], RATE_LIMITED)

    def _count(self, sender: Sender, reason: str) -> None:
        self._metrics.count(self._metrics.dropped, sender.source, sender.booth, reason)

    @staticmethod
    def _slot(sender: Sender, msg: Message) -> Slot:
        return sender, held_slot(msg.payload) if sender.source == "canonical" else ""

    def gauges(self) -> Iterable[Metric]:
        yield gauge("boothwatch_senders_flooding",
                    "Senders (devices, gateways) with a message dropped in the last minute",
                    [], {(): float(self.limiter.flooding(time.monotonic()))})
