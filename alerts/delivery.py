"""Page delivery: what a delivery is, what a channel promises, and the dispatcher.

A `Channel` (one per file in alerts/channels/) makes one attempt and either
returns (accepted; optionally with the service's receipt id) or raises
`DeliveryError` with a short reason. The `Dispatcher` owns fallback and
retries: a `Delivery` lists the responder's channels in order; a round tries
them in that order until one delivers it, so a failed channel hands the page to
the next one at once; a round where no channel delivered is retried after a
back-off. Delivered means accepted by a channel that reaches a person: a console
nobody watches (`reaches_a_person` false) prints the page, that attempt is
reported as `printed`, not delivered, and the round goes on. Each `Delivery`
gets its own asyncio task, and `submit` never blocks the caller.

Attempts are admitted by priority (`Slots`): urgent, then high, medium, low,
first come first served within one. At most ``max_in_flight`` attempts of a
delivery's rank or above are under way at once, ``max_in_flight_lower`` for a
medium or low one, so a burst of a thousand low pages (every booth's sensor
offline after a power cut) goes out a few at a time, each turn of the event loop
short, while a call's page starts at once: lower-ranked attempts never count
against it. A slot is held until the attempt ends or for ``slot_hold`` seconds,
whichever comes first: an attempt still waiting on a slow or hanging service
after that costs the loop nothing and stops counting, so it never holds up pages
to anyone else for longer.

Safety rules (a page must never be silently lost):

- every attempt is reported through ``on_attempt``: the caller stores it, and logs a
  failed one (once, there; the dispatcher does not log it again);
- when every retry failed, ``on_failed`` is called exactly once, and the caller
  turns it into an escalation event for the core;
- any exception from a channel counts as a failed attempt, never a lost task;
- an exception from a callback is logged and the delivery goes on;
- only `Dispatcher.cancel` (the incident was acknowledged or resolved; it stops
  pages, never the notices that tell people so) and
  `Dispatcher.close` (shutdown, logged per page) stop a delivery without
  ``on_failed``.

Logs name pages by page, incident, responder and channel ids only; payloads may
carry booth names and messages and are never logged.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson
import structlog

from monitor.core.durations import format_duration

log = structlog.get_logger(__name__)

#: page: an escalation step (escalates when undeliverable); notice: someone is attending,
#: all clear (recorded, never escalated); test: `boothwatch test-page`; system: about
#: boothwatch itself (monitoring down or restored; loud by its priority, never escalated)
DeliveryKind = Literal["page", "notice", "test", "system"]
DELIVERY_KINDS: tuple[DeliveryKind, ...] = ("page", "notice", "test", "system")
#: a delivery's rank among attempts waiting for a slot, by priority; urgent ranks above all
PRIORITY_RANKS = {"low": 0, "medium": 1, "high": 2}
URGENT_RANK = 3


@dataclass(frozen=True, slots=True)
class Delivery:
    """One page to one responder, over the first of its channels that accepts it."""

    page_id: str
    incident: str
    responder: str
    level: int
    channels: tuple[str, ...]  # channel names (keys in config.channels), in fallback order
    payload: dict[str, Any]  # the page JSON of interface section 8, built by the caller
    # channel name -> the responder's address there (ntfy topic, Pushover user key, phone...)
    addresses: Mapping[str, str] = field(default_factory=dict)
    kind: DeliveryKind = "page"
    # the incident's (or message's) priority: which attempts go first when many wait
    priority: str = "high"
    urgent: bool = False

    @property
    def rank(self) -> int:
        """Higher goes first: urgent, then high, medium, low."""
        return URGENT_RANK if self.urgent else PRIORITY_RANKS[self.priority]

    def __post_init__(self) -> None:
        for what in ("page_id", "incident", "responder"):
            value = getattr(self, what)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{what} must be a non-empty string, got {value!r}")
        if not self.channels or not all(isinstance(c, str) and c for c in self.channels):
            raise ValueError(f"channels must be non-empty names, got {self.channels!r}")
        if self.kind not in DELIVERY_KINDS:
            raise ValueError(f"kind must be one of {DELIVERY_KINDS}, got {self.kind!r}")
        if self.priority not in PRIORITY_RANKS:
            raise ValueError(f"priority must be one of {tuple(PRIORITY_RANKS)}, "
                             f"got {self.priority!r}")


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of one attempt to deliver a page.

    `ok`: delivered, to a channel that reaches a person. `printed`: accepted by a
    channel that reaches nobody (a console nobody watches); not ok, its `error` says so.
    `final` is true when no further attempt follows: it succeeded, it was the last
    try, or the incident was cancelled meanwhile.
    """

    number: int  # 1-based, counting every channel tried
    channel: str
    ok: bool
    error: str | None
    latency: float  # seconds
    final: bool
    receipt: str | None = None  # the service's id for an accepted message, if it gives one
    printed: bool = False


#: why an attempt that a console nobody watches accepted is no delivery
PRINTED_ONLY = "printed on a console nobody watches"


class DeliveryError(Exception):
    """A failed attempt; the message is a short reason such as ``HTTP 503``."""

    @classmethod
    def timeout(cls, seconds: float) -> DeliveryError:
        """An attempt that ran out of its channel's `timeout`; every channel words it so."""
        return cls(f"timeout after {format_duration(seconds)}")


class Channel(Protocol):
    name: str
    type: str
    # False for a console nobody watches: what it accepts has reached nobody
    reaches_a_person: bool

    async def send(self, delivery: Delivery, address: str | None) -> str | None:
        """Make one attempt; raise `DeliveryError` on failure.

        `address` is the responder's address on this channel, if the config gives one.
        Returns the service's receipt or message id when it gives one, else None.
        """
        ...


def after_pages(callback: Callable[..., object], *args: Any) -> None:
    """Run ``callback(*args)`` once the pages submitted so far have been written.

    For work that must not stand between a page and its socket (a retained state
    to encode and publish, a log line). A delivery submitted now takes its first
    step on the event loop's next turn, and aiohttp (on Python 3.11) writes the
    request's body from a task of its own one turn after that: two turns on, the
    page to an open connection is out. bench/latency.py: press to page p50 -0.6 ms.
    """
    loop = asyncio.get_running_loop()
    loop.call_soon(loop.call_soon, callback, *args)


def encode_payload(payload: dict[str, Any]) -> bytes:
    """The page as compact JSON bytes (UTF-8), the exact bytes sent and signed.

    orjson: on the way to every page, where `json.dumps` took about 11 µs of a page's
    first step and orjson under 1. A float that is not a number (none in a page) would
    come out as null, where `json` refused it."""
    return orjson.dumps(payload)


@dataclass(eq=False, slots=True)
class _Job:
    delivery: Delivery
    task: asyncio.Task[None] | None = None
    stopped: bool = False  # cancel() was called: no further attempt
    # in a retry sleep or waiting for a slot, so cancelling the task interrupts no attempt
    waiting: bool = False


class Slot:
    """One admitted attempt's place in `Slots`; `release` it when the attempt ends."""

    __slots__ = ("_slots", "_timer", "rank", "released")

    def __init__(self, slots: Slots, rank: int) -> None:
        self._slots = slots
        self.rank = rank
        self.released = False
        self._timer: asyncio.TimerHandle | None = None
        if slots.hold is not None:
            self._timer = asyncio.get_running_loop().call_later(slots.hold, self.release)

    def release(self) -> None:
        """Give the place back (at the end of the attempt, or when the hold ran out)."""
        if self.released:
            return
        self.released = True
        if self._timer is not None:
            self._timer.cancel()
        self._slots._release(self.rank)


class Slots:
    """Admission of attempts by rank: at most `limit` of rank r or above under way, and
    for the ranks below high (medium, low) at most `lower` of any rank.

    An attempt of rank r is admitted at once when fewer than its rank's limit of
    attempts of rank r or above hold a slot and none of rank r or above is waiting;
    else it waits, and freed places go to the highest rank waiting, first come first
    served within a rank. So attempts of a lower rank never delay a higher one, and
    every waiting attempt is admitted as soon as those above it leave room. `lower`
    bounds how much of each turn of the event loop a burst of low pages takes (each
    attempt under way does a step a turn): a call's page, read between those turns,
    waits that much less.
    """

    def __init__(self, limit: int, hold: float | None, lower: int | None = None) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        lower = limit if lower is None else lower
        if not 1 <= lower <= limit:
            raise ValueError(f"lower must be in [1, limit], got {lower!r}")
        if hold is not None and not hold > 0:
            raise ValueError(f"hold must be > 0, got {hold!r}")
        self.limit = limit
        self.lower = lower
        self.hold = hold
        # the limit by rank: `lower` below high
        self._limits = [lower if rank < PRIORITY_RANKS["high"] else limit
                        for rank in range(URGENT_RANK + 1)]
        self._busy = [0] * (URGENT_RANK + 1)  # slots held, by rank
        self._waiting: list[tuple[int, int, asyncio.Future[Slot]]] = []  # (-rank, seq, fut)
        self._seq = itertools.count()

    @property
    def busy(self) -> int:
        """Slots held."""
        return sum(self._busy)

    @property
    def waiting(self) -> int:
        """Attempts waiting for a slot."""
        return sum(1 for _key, _seq, fut in self._waiting if not fut.done())

    def _room(self, rank: int) -> bool:
        return sum(self._busy[rank:]) < self._limits[rank]

    def _grant(self, rank: int) -> Slot:
        self._busy[rank] += 1
        return Slot(self, rank)

    async def acquire(self, rank: int) -> Slot:
        """A slot for an attempt of `rank`; without a wait when there is room."""
        waiting = self._waiting
        while waiting and waiting[0][2].done():
            heapq.heappop(waiting)  # cancelled while waiting
        if (not waiting or -waiting[0][0] < rank) and self._room(rank):
            return self._grant(rank)
        fut: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        heapq.heappush(waiting, (-rank, next(self._seq), fut))
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                fut.result().release()  # granted, but the task was cancelled meanwhile
            else:
                fut.cancel()
            raise

    def _release(self, rank: int) -> None:
        self._busy[rank] -= 1
        waiting = self._waiting
        while waiting:
            key, _seq, fut = waiting[0]
            if fut.done():
                heapq.heappop(waiting)
                continue
            if not self._room(-key):
                return
            heapq.heappop(waiting)
            fut.set_result(self._grant(-key))


class Gate(Protocol):
    """May this process send now (`monitor.lease`: it still owns the site)?"""

    def permit(self) -> bool: ...
    async def settle(self) -> bool: ...


class Dispatcher:
    """Delivers pages in the background, one task per `Delivery`, with fallback and retries.

    A round tries the delivery's channels in order and stops at the first that
    delivers; a failed (or only printed) attempt hands over to the next channel at
    once. After a round in which no channel delivered, the task sleeps
    ``retry_delays[n-1]`` (± `jitter` as a fraction) and runs round ``n+1``. After
    ``len(retry_delays) + 1`` failed rounds ``on_failed(delivery, last_reason)`` is
    called once. Callbacks are plain functions, called from the delivery tasks,
    never from inside `submit` or `cancel`. Each attempt waits for a slot
    (`Slots`: ``max_in_flight`` by rank, ``max_in_flight_lower`` for medium and low,
    held at most ``slot_hold`` seconds).
    """

    def __init__(
        self,
        channels: Mapping[str, Channel],
        on_attempt: Callable[[Delivery, Attempt], None],
        on_failed: Callable[[Delivery, str], None],
        retry_delays: Sequence[float] = (0.5, 1, 2, 4, 8),
        jitter: float = 0.1,
        gate: Gate | None = None,
        max_in_flight: int = 32,
        slot_hold: float | None = 0.1,
        max_in_flight_lower: int | None = 4,
    ) -> None:
        if any(not delay >= 0 for delay in retry_delays):
            raise ValueError(f"retry delays must be >= 0, got {retry_delays!r}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
        self._channels = dict(channels)
        self._on_attempt = on_attempt
        self._on_failed = on_failed
        self._retry_delays = tuple(float(delay) for delay in retry_delays)
        self._jitter = jitter
        self._gate = gate
        self._jobs: set[_Job] = set()
        self.slots = Slots(max_in_flight, slot_hold,
                           None if max_in_flight_lower is None
                           else min(max_in_flight_lower, max_in_flight))

    @property
    def pending(self) -> int:
        """How many deliveries are still in flight (attempting or waiting to retry)."""
        return len(self._jobs)

    def submit(self, delivery: Delivery) -> None:
        """Start delivering `delivery` in the background; returns at once."""
        job = _Job(delivery)
        job.task = asyncio.get_running_loop().create_task(
            self._run(job), name=f"deliver {delivery.page_id}"
        )
        self._jobs.add(job)
        job.task.add_done_callback(lambda _task: self._jobs.discard(job))

    def cancel(self, incident: str) -> None:
        """Stop further attempts of `incident`'s pages (acknowledged or resolved).

        Notices and tests go on. No ``on_failed`` follows; an attempt already in
        progress may finish and is still reported.
        """
        for job in self._jobs:
            delivery = job.delivery
            if delivery.incident != incident or delivery.kind != "page" or job.stopped:
                continue
            job.stopped = True
            log.info("page retries cancelled", **_ids(delivery))
            if job.waiting and job.task is not None:
                job.task.cancel()

    # The timeout is part of the contract: drain returns (never raises) when it runs out.
    async def drain(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for in-flight deliveries (also ones submitted now)."""
        deadline = time.monotonic() + timeout
        while self._jobs:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("pages still in flight after drain", pending=len(self._jobs))
                return
            tasks = {job.task for job in self._jobs if job.task is not None}
            await asyncio.wait(tasks, timeout=remaining)

    async def close(self) -> None:
        """Cancel every delivery in flight and wait for the tasks to end."""
        jobs = list(self._jobs)
        for job in jobs:
            log.warning("page abandoned at shutdown", **_ids(job.delivery))
            if job.task is not None:
                job.task.cancel()
        await asyncio.gather(*(job.task for job in jobs if job.task), return_exceptions=True)

    async def _run(self, job: _Job) -> None:
        delivery = job.delivery
        rounds = len(self._retry_delays) + 1
        number = 0
        error = "no channel"
        real: tuple[str, str] | None = None  # (channel, reason) of the round's last failure
        for round_ in range(1, rounds + 1):
            for position, name in enumerate(delivery.channels):
                slot = await self._admit(job)
                if slot is None:
                    return
                number += 1
                channel = self._channels.get(name)
                receipt, printed = None, False
                if channel is None:
                    slot.release()
                    error, latency = "unknown channel", 0.0
                    log.error("page for an unknown channel", channel_name=name,
                              **_ids(delivery))
                else:
                    try:
                        error_or_none, latency, receipt = await _attempt(
                            channel, delivery, delivery.addresses.get(name))
                    finally:
                        slot.release()
                    if error_or_none is None and channel.reaches_a_person:
                        self._report(delivery, Attempt(number, name, True, None, latency,
                                                       final=True, receipt=receipt))
                        log.info("page delivered", attempt=number, channel_name=name,
                                 latency_ms=round(latency * 1000, 1), **_ids(delivery))
                        return
                    printed = error_or_none is None
                    error = error_or_none or PRINTED_ONLY
                if not printed:
                    real = (name, error)
                last = round_ == rounds and position == len(delivery.channels) - 1
                self._report(delivery, Attempt(number, name, False, error, latency,
                                               final=last or job.stopped, receipt=receipt,
                                               printed=printed))
            if round_ == rounds:
                # a console fallback that only printed must not hide why the page failed
                self._fail(delivery, error if real is None or real[1] == error
                           else f"{real[1]} ({real[0]}); {error}")
                return
            real = None
            if not job.stopped:
                await self._wait(job, self._retry_delays[round_ - 1])

    async def _admit(self, job: _Job) -> Slot | None:
        """A slot for the job's next attempt, or None: stopped, or left to another owner."""
        while True:
            if job.stopped:
                return None
            if self._gate is not None and not self._gate.permit() \
                    and not await self._gate.settle():
                # another process owns the site now: it has this page in the outbox
                log.warning("page left to the site's new owner", **_ids(job.delivery))
                return None
            job.waiting = True
            try:
                slot = await self.slots.acquire(job.delivery.rank)
            finally:
                job.waiting = False
            if not job.stopped and (self._gate is None or self._gate.permit()):
                return slot
            slot.release()  # stopped or the lease moved while it waited: look again

    async def _wait(self, job: _Job, delay: float) -> None:
        job.waiting = True
        try:
            await asyncio.sleep(delay * random.uniform(1 - self._jitter, 1 + self._jitter))
        finally:
            job.waiting = False

    def _report(self, delivery: Delivery, attempt: Attempt) -> None:
        try:
            self._on_attempt(delivery, attempt)
        except Exception:
            log.exception("on_attempt callback failed", attempt=attempt.number, **_ids(delivery))

    def _fail(self, delivery: Delivery, reason: str) -> None:
        log.error("page undeliverable", error=reason, **_ids(delivery))
        try:
            self._on_failed(delivery, reason)
        except Exception:
            # The escalation for this page may be lost: shout.
            log.critical("on_failed callback failed", exc_info=True, **_ids(delivery))


async def _attempt(
    channel: Channel, delivery: Delivery, address: str | None
) -> tuple[str | None, float, str | None]:
    """One send: ``(None, latency, receipt)`` when accepted, else ``(reason, latency, None)``."""
    started = time.monotonic()
    try:
        receipt = await channel.send(delivery, address)
    except DeliveryError as exc:
        return str(exc) or "delivery failed", time.monotonic() - started, None
    except Exception as exc:
        # A bug in a channel (or an unserializable payload) still counts as a failed
        # attempt, so the page is retried and escalated instead of vanishing.
        log.exception("channel raised unexpectedly", channel_name=channel.name,
                      **_ids(delivery))
        return f"internal error: {type(exc).__name__}", time.monotonic() - started, None
    return None, time.monotonic() - started, receipt


def _ids(delivery: Delivery) -> dict[str, str]:
    return {
        "page_id": delivery.page_id,
        "incident": delivery.incident,
        "responder": delivery.responder,
        "kind": delivery.kind,
    }
