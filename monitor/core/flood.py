"""Per-sender rate limiting of MQTT input: one flooding device cannot starve the others. Pure.

Theory of operation
-------------------
Every message the service reads comes from one *sender* (`Sender`):

* a canonical device on its booth's events topic: the booth and the event's
  ``device`` field when that device is configured (``[[devices]]`` with source
  ``canonical``), else the booth's unnamed devices together. A device cannot
  escape its limit by making up ``device`` ids, and the table of senders stays
  bounded by the configuration;
* an off-the-shelf device: its id, over all of its topics (a topic shared by
  several devices, such as an ESPHome node's status, is a sender of its own);
* the pager gateway: the ack, duty and steps topics, one sender each.

Each sender has a token bucket: ``burst`` tokens, refilled at ``rate`` a second.
A message takes a token; with none left it is dropped: acknowledged to the broker,
counted, never stored and never seen by the core. A real sensor sends a few
messages a second at most (a chatty mmWave sensor up to 6), so the defaults
(10 a second, burst 50) never touch one.

What is never dropped (life safety)
-----------------------------------
* A call at a booth whose unresolved incident has no call yet, or that has no
  incident: it opens the incident (or raises it to high). It still takes a token,
  so the flood is measured, but passes with none left. This is self-limiting:
  once it passed, the booth has a call, and the next calls are repeats.
* For an off-the-shelf call button under the same condition, a message that may
  be a press or half of one: the registry finds presses of a binary sensor on its
  OFF -> ON edge, so neither the ON (`Kind.CALL`) nor the OFF (`Kind.EDGE`) may
  be lost.

What is limited more
--------------------
A repeated call (the booth's incident already has a call) makes the core mark the
incident urgent and jump escalation a level; at the top level it pages the top
level again at once. From a sender that is flooding (a message of it was dropped
in the last `FLOOD_HOLD` seconds) a repeat is dropped: a stuck button is not a
person pressing again. Otherwise at most one repeat per sender and incident per
``repeat_call_interval`` reaches the core, so the burst a flood starts with (up to
``burst`` messages pass before the bucket is empty) cannot make a storm of urgent
pages. The first repeat of each sender always passes: that is the person saying
"urgent" (or a second button in the booth saying it too).

A dropped message is gone, except the latest of each sender (of each event
kind, for a booth's canonical sender, which may be several devices: see
`held_slot`): the runtime holds it back, unacknowledged, and hands it to the core
as soon as the sender's bucket has a token again (`take`), unless a newer one got
through first (then it is acknowledged and counted as dropped). So the core
always ends with the last thing a device said: the state it was left in after a
flood, or at the end of a backlog the broker replays after an outage (which
arrives as a burst too). Repeated calls are never held back.

The drop path runs thousands of times a second during a flood: one dict lookup
and a few float operations. For a booth with no named canonical device, the
runtime does not even parse the JSON of a message that `cannot_be_a_call` (the
sender is the booth's, whatever the payload says). Logging is the runtime's, at
most once per `REPORT_EVERY` per sender, with the number dropped since the last
line (`report`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Final

from monitor.core.devices import ROLE_ACTIONS
from monitor.core.readings import Reading
from monitor.core.settings import DeviceConfig, RateLimitConfig

RATE_LIMITED: Final = "rate_limited"  # the sender's bucket was empty (or it is flooding)
REPEATED_CALL: Final = "repeated_call"  # a repeat within repeat_call_interval of the last one
DROP_REASONS: Final = (RATE_LIMITED, REPEATED_CALL)  # metric label values
FLOOD_HOLD: Final = 60.0  # a sender that dropped a message this recently is flooding
REPORT_EVERY: Final = 60.0  # log a sender's drops at most this often


class Kind(enum.IntEnum):
    """What a message may be, as far as dropping it goes (higher wins for a message)."""

    OTHER = 0  # dropped when the bucket is empty
    EDGE = 1  # may be half of a button press: kept while the booth has no call
    CALL = 2  # a call press: kept while the booth has no call; repeats limited


@dataclass(frozen=True, slots=True)
class Sender:
    """Who sent a message: the limiter's key, and the metric's and log's labels."""

    source: str  # "canonical", a firmware ("zigbee2mqtt", ...), "ack", "duty" or "steps"
    booth: str  # "" when the sender is no single booth's (ack, duty, steps, a shared topic)
    device: str | None = None  # None: the booth's unnamed canonical devices, or a topic


class _Bucket:
    __slots__ = ("at", "dropped", "last_drop", "repeat", "reported_at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at
        self.last_drop = -math.inf
        self.dropped = 0  # since the last report
        self.reported_at = -math.inf
        self.repeat: tuple[str, float] | None = None  # (incident, when) of the last repeat let in


class Limiter:
    """A token bucket per sender, and its repeated-call gate.

    `now` is any clock in seconds that the caller passes consistently (the runtime's
    is monotonic); a clock that steps back refills nothing and takes nothing away.
    """

    def __init__(self, config: RateLimitConfig) -> None:
        self.rate = config.rate
        self.burst = float(config.burst)
        self.repeat_call_interval = config.repeat_call_interval
        self._buckets: dict[Hashable, _Bucket] = {}

    def admit(
        self, sender: Hashable, now: float, kind: Kind = Kind.OTHER,
        open_call: str | None = None,
    ) -> str | None:
        """None to let the message through, else the reason it is dropped.

        ``open_call``: the id of the unresolved incident of the booth the message is
        for, if it already has a call trigger (only looked at for `Kind.EDGE` and
        `Kind.CALL`).
        """
        bucket = self._bucket(sender, now)
        took = self._take(bucket, now)
        if kind is Kind.OTHER or (kind is Kind.EDGE and open_call is not None):
            if took:
                return None
            return self._drop(bucket, now, RATE_LIMITED)
        if open_call is None:
            return None  # a first call (or half a press) while nothing calls: never dropped
        # a repeated call (an EDGE with a call open was handled above)
        if not took or now - bucket.last_drop < FLOOD_HOLD:
            return self._drop(bucket, now, RATE_LIMITED)
        last = bucket.repeat
        if (last is not None and last[0] == open_call
                and 0 <= now - last[1] < self.repeat_call_interval):
            return self._drop(bucket, now, REPEATED_CALL, flooding=False)
        bucket.repeat = (open_call, now)
        return None

    def _bucket(self, sender: Hashable, now: float) -> _Bucket:
        bucket = self._buckets.get(sender)
        if bucket is None:
            bucket = self._buckets[sender] = _Bucket(self.burst, now)
        return bucket

    def _take(self, bucket: _Bucket, now: float) -> bool:
        elapsed = now - bucket.at
        tokens = bucket.tokens
        if elapsed > 0:
            tokens += elapsed * self.rate
            if tokens > self.burst:
                tokens = self.burst
        bucket.at = now  # a clock that stepped back re-anchors here
        took = tokens >= 1.0
        bucket.tokens = tokens - 1.0 if took else tokens
        return took

    def take(self, sender: Hashable, now: float) -> bool:
        """Take a token if `sender` has one, counting nothing: for a message held back
        from a flood and tried again later (the runtime keeps each sender's latest)."""
        bucket = self._bucket(sender, now)
        return self._take(bucket, now)

    @staticmethod
    def _drop(bucket: _Bucket, now: float, reason: str, flooding: bool = True) -> str:
        bucket.dropped += 1
        if flooding:  # a person pressing call twice in a row is not a flood
            bucket.last_drop = now
        return reason

    def report(self, sender: Hashable, now: float) -> int:
        """How many of `sender`'s messages were dropped since the last report, when it is
        time to log them (the first drop at once, then at most every `REPORT_EVERY`);
        else 0."""
        bucket = self._buckets.get(sender)
        if bucket is None or bucket.dropped == 0 or now - bucket.reported_at < REPORT_EVERY:
            return 0
        dropped, bucket.dropped, bucket.reported_at = bucket.dropped, 0, now
        return dropped

    def flooding(self, now: float) -> int:
        """Senders that had a message dropped in the last `FLOOD_HOLD` seconds."""
        return sum(1 for b in self._buckets.values() if now - b.last_drop < FLOOD_HOLD)


_SLOTS: Final = tuple(
    (kind, (f'"kind":"{kind}"'.encode(), f'"kind": "{kind}"'.encode()))
    for kind in ("occupancy", "motion", "heartbeat", "button")
)


def held_slot(payload: bytes | bytearray) -> str:
    """Which held-back message of a canonical sender `payload` replaces: one per event
    kind, so a booth's occupancy timer and its flooding radar (one sender when unnamed)
    each keep their last word. Found without parsing (the drop path never parses): the
    kind as JSON writes it compactly or with json.dumps' spaces, else "" (a shared slot).
    """
    for kind, forms in _SLOTS:
        if forms[0] in payload or forms[1] in payload:
            return kind
    return ""


def cannot_be_a_call(payload: bytes) -> bool:
    """True when a canonical payload is certainly no call press, whatever else it is.

    A call needs the JSON string "call": the bytes ``call`` or a backslash escape
    (``"\\u0063all"``); the decoder takes only strict UTF-8 and exact values.
    """
    return b"call" not in payload and b"\\" not in payload


def may_call(device: DeviceConfig) -> bool:
    """Whether some press of `device` is a call (its role's defaults or its own actions)."""
    actions = {**ROLE_ACTIONS.get(device.role, {}), **device.actions}
    return device.role in ROLE_ACTIONS and "call" in actions.values()


def reading_kind(device: DeviceConfig, readings: Iterable[Reading], retained: bool) -> Kind:
    """What a decoded message of `device` may be (`device` must satisfy `may_call`).

    A press mapped to a call is a call, and so is a binary sensor's ON (the
    registry knows whether it follows an OFF, so it may be one); its OFF is half of
    the next press. A retained message is a snapshot, never a press.
    """
    if retained:
        return Kind.OTHER
    kind = Kind.OTHER
    for reading in readings:
        if reading.press is not None:
            action = device.actions.get(reading.press) or ROLE_ACTIONS[device.role][reading.press]
            if action == "call":
                return Kind.CALL
        elif reading.binary:
            return Kind.CALL
        elif reading.binary is not None:
            kind = Kind.EDGE
    return kind
