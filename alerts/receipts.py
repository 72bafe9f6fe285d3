"""Pushover emergency receipts: followed to the nurse's acknowledgement, and cancelled.

`ReceiptWatcher` closes the loop a Pushover emergency opens
(alerts/channels/pushover.py):

- ``watch(receipt, incident, responder, channel)``: the channel calls it for
  every emergency receipt; the runtime calls it again after a restart for the
  receipts of unresolved incidents (from the stored attempts).
- ``run()`` polls each receipt no faster than every ``poll_interval`` (Pushover
  asks for 5 s at least) and calls ``on_acknowledged(incident, responder,
  receipt)`` once when a nurse acknowledged it on the phone, which the runtime
  applies as that responder's ack; ``on_delivered`` once when Pushover first
  reports the alert delivered to a device. Expired or unknown receipts are
  forgotten. A network error is logged and the receipt polled again next time;
  nothing ends the loop but cancelling its task.
- ``cancel(incident)``: the incident was acknowledged (anywhere) or resolved.
  Its receipts stop being polled at once and their retries are cancelled at
  Pushover (POST .../cancel.json, retried until it succeeds). A page still in
  flight when the incident was cancelled is cancelled as soon as its receipt
  comes back, while a page sent after it (the incident re-opened) is watched.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from alerts.channels.pushover import PUSHOVER_MAX_EXPIRE, refusal
from alerts.delivery import DeliveryError
from alerts.http import request
from monitor.core.settings import ChannelConfig

log = structlog.get_logger(__name__)

# How long a cancelled incident is remembered, to cancel a page that was in flight
CANCEL_MEMORY = 3600.0

Clock = Callable[[], float]


@dataclass(eq=False, slots=True)
class _Receipt:
    receipt: str
    incident: str
    responder: str
    channel: str
    due: float  # clock time of the next poll or cancel request
    delivered: bool = False
    cancel_by: float = 0.0  # when cancelling: give up after this (Pushover stopped anyway)


@dataclass(frozen=True, slots=True)
class _App:
    token: str
    url: str  # API base, no trailing slash
    interval: float
    timeout: float


class ReceiptWatcher:
    """Follows Pushover emergency receipts: acknowledgements, delivery, cancellation.

    `channels` are the site's channel configs (the Pushover ones are used: a
    receipt belongs to the application token that sent it). `interval`, when
    given, replaces every channel's ``poll_interval``; the config refuses less
    than Pushover's 5 s, and tests pass a tiny one here. Callbacks are plain
    functions called from `run`; an exception in one is logged.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        channels: Mapping[str, ChannelConfig],
        on_acknowledged: Callable[[str, str, str], None],
        on_delivered: Callable[[str, str, str, float], None] | None = None,
        *,
        interval: float | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        if interval is not None and not interval > 0:
            raise ValueError(f"interval must be > 0, got {interval!r}")
        self._apps = {
            name: _App(c.token or "", (c.url or "").rstrip("/"),
                       interval if interval is not None else c.poll_interval, c.timeout)
            for name, c in channels.items()
            if c.type == "pushover"
        }
        self._session = session
        self._on_acknowledged = on_acknowledged
        self._on_delivered = on_delivered
        self.clock = clock
        self._watched: dict[str, _Receipt] = {}
        self._cancelling: dict[str, _Receipt] = {}
        self._cancelled: dict[str, float] = {}  # incident -> when cancel() was called
        self._wake = asyncio.Event()

    @property
    def watching(self) -> frozenset[str]:
        """The receipts being polled."""
        return frozenset(self._watched)

    @property
    def cancelling(self) -> frozenset[str]:
        """The receipts whose cancellation Pushover has not confirmed yet."""
        return frozenset(self._cancelling)

    def watch(
        self, receipt: str, incident: str, responder: str, channel: str, *,
        sent_at: float | None = None,
    ) -> None:
        """Poll `receipt` (an emergency page to `responder` about `incident` via `channel`).

        `sent_at` (clock time the send began) tells a page that was in flight when
        its incident was cancelled: that receipt is cancelled at once. Watching a
        receipt twice changes nothing.
        """
        if channel not in self._apps:
            log.error("receipt for a channel that is not a pushover channel",
                      channel_name=channel, incident=incident, receipt=receipt)
            return
        if receipt in self._watched or receipt in self._cancelling:
            return
        now = self.clock()
        entry = _Receipt(receipt, incident, responder, channel, now + self._apps[channel].interval)
        cancelled_at = self._cancelled.get(incident)
        if cancelled_at is not None and sent_at is not None and sent_at <= cancelled_at:
            log.info("pushover receipt of a cancelled incident", incident=incident,
                     receipt=receipt)
            self._start_cancel(entry, now)
        else:
            self._watched[receipt] = entry
        self._wake.set()

    def cancel(self, incident: str) -> None:
        """Stop polling `incident`'s receipts and cancel their retries at Pushover."""
        now = self.clock()
        self._cancelled[incident] = now
        for receipt, entry in list(self._watched.items()):
            if entry.incident == incident:
                del self._watched[receipt]
                self._start_cancel(entry, now)
        self._wake.set()

    def _start_cancel(self, entry: _Receipt, now: float) -> None:
        entry.due, entry.cancel_by = now, now + PUSHOVER_MAX_EXPIRE
        self._cancelling[entry.receipt] = entry

    async def run(self) -> None:
        """Poll and cancel receipts until cancelled; never ends on an error."""
        while True:
            self._wake.clear()
            now = self.clock()
            self._forget_old_cancellations(now)
            polls = [e for e in self._watched.values() if e.due <= now]
            cancels = [e for e in self._cancelling.values() if e.due <= now]
            if polls or cancels:
                for entry in polls + cancels:
                    entry.due = now + self._apps[entry.channel].interval
                await asyncio.gather(*(self._step(self._poll, e) for e in polls),
                                     *(self._step(self._cancel, e) for e in cancels))
                continue
            pending = [e.due for e in (*self._watched.values(), *self._cancelling.values())]
            delay = max(0.0, min(pending) - now) if pending else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    def _forget_old_cancellations(self, now: float) -> None:
        for incident, at in list(self._cancelled.items()):
            if now - at > CANCEL_MEMORY:
                del self._cancelled[incident]

    async def _step(self, action: Callable[[_Receipt], Awaitable[None]], entry: _Receipt) -> None:
        try:
            await action(entry)
        except DeliveryError as exc:  # the network or Pushover: next time
            log.warning("pushover receipt request failed", error=str(exc),
                        incident=entry.incident, receipt=entry.receipt)
        except Exception:
            log.exception("pushover receipt step failed", incident=entry.incident,
                          receipt=entry.receipt)

    async def _poll(self, entry: _Receipt) -> None:
        app = self._apps[entry.channel]
        reply = await request(
            self._session, "GET", f"{app.url}/1/receipts/{entry.receipt}.json",
            timeout=app.timeout, params={"token": app.token},
        )
        status, answer = reply.status, reply.json()
        if self._watched.get(entry.receipt) is not entry:
            return  # cancelled while the request was out
        if status != 200 or answer.get("status") != 1:
            if 400 <= status < 500 and status != 429:
                # unknown or too old (Pushover keeps receipts a week): asking again won't help
                del self._watched[entry.receipt]
                log.error("pushover receipt refused, no longer watched",
                          error=refusal(status, answer, None, app.token), incident=entry.incident,
                          receipt=entry.receipt)
                return
            raise DeliveryError(refusal(status, answer, None, app.token))
        delivered_at = answer.get("last_delivered_at")
        if not entry.delivered and isinstance(delivered_at, int | float) and delivered_at > 0:
            entry.delivered = True
            if self._on_delivered is not None:
                self._call(self._on_delivered, entry, float(delivered_at))
        if answer.get("acknowledged") == 1:
            del self._watched[entry.receipt]
            log.info("pushover receipt acknowledged", incident=entry.incident,
                     responder=entry.responder, receipt=entry.receipt)
            self._call(self._on_acknowledged, entry)
        elif answer.get("expired") == 1:
            del self._watched[entry.receipt]
            log.warning("pushover receipt expired unacknowledged", incident=entry.incident,
                        responder=entry.responder, receipt=entry.receipt)

    async def _cancel(self, entry: _Receipt) -> None:
        app = self._apps[entry.channel]
        reply = await request(
            self._session, "POST", f"{app.url}/1/receipts/{entry.receipt}/cancel.json",
            timeout=app.timeout, data={"token": app.token},
        )
        status, answer = reply.status, reply.json()
        if status == 200 and answer.get("status") == 1:
            del self._cancelling[entry.receipt]
            log.info("pushover receipt cancelled", incident=entry.incident,
                     receipt=entry.receipt)
            return
        # a 4xx: already expired or unknown; past cancel_by it has stopped by itself
        if (400 <= status < 500 and status != 429) or self.clock() >= entry.cancel_by:
            del self._cancelling[entry.receipt]
            log.warning("pushover receipt not cancelled",
                        error=refusal(status, answer, None, app.token),
                        incident=entry.incident, receipt=entry.receipt)
            return
        raise DeliveryError(refusal(status, answer, None, app.token))

    def _call(self, callback: Callable[..., None], entry: _Receipt, *more: Any) -> None:
        try:
            callback(entry.incident, entry.responder, entry.receipt, *more)
        except Exception:
            log.exception("receipt callback failed", incident=entry.incident,
                          receipt=entry.receipt)
