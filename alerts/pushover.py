"""Pushover: the channel, and the watcher that follows emergency receipts.

A high page goes out at Pushover's emergency priority (2): Pushover repeats it
every ``retry`` seconds until someone acknowledges it on the phone or
``expire`` passes, and answers with a *receipt*. ``retry`` follows the high
policy's ``repeat`` and ``expire`` is Pushover's maximum (see
`pushover_timing`), because boothwatch cancels the receipt
itself once the incident is acknowledged or resolved: an open high incident
must never go quiet because a timer at Pushover ran out.

`ReceiptWatcher` closes the loop:

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

from alerts.channels import Delivery, DeliveryError
from alerts.push import http_request, json_object, mask, notification_text
from monitor.core.durations import format_duration
from monitor.core.settings import ChannelConfig, Policy

log = structlog.get_logger(__name__)

PUSHOVER_API = "https://api.pushover.net"
PUSHOVER_MIN_RETRY = 30.0  # Pushover refuses an emergency message retried more often
PUSHOVER_MAX_EXPIRE = 3 * 3600.0  # and one that keeps retrying longer
#: the retry interval when the high policy has no repeat of its own
PUSHOVER_DEFAULT_RETRY = 60.0
PUSHOVER_MIN_POLL = 5.0  # Pushover: poll a receipt no faster than every 5 seconds


def pushover_timing(channel: ChannelConfig, high: Policy | None) -> tuple[float, float]:
    """``(retry, expire)`` in seconds for an emergency (high) page on a Pushover channel.

    Retry follows the high policy's ``repeat`` (Pushover repeats the alert itself
    until someone acknowledges), within what Pushover accepts. Expire is Pushover's
    maximum: boothwatch cancels the receipt once the incident is acknowledged or
    resolved, and an open high incident must never go quiet. The channel's own
    ``retry`` and ``expire`` override both.
    """
    repeat = high.repeat if high is not None and high.repeat else PUSHOVER_DEFAULT_RETRY
    retry = channel.retry if channel.retry is not None else repeat
    retry = min(max(retry, PUSHOVER_MIN_RETRY), PUSHOVER_MAX_EXPIRE)
    expire = channel.expire if channel.expire is not None else PUSHOVER_MAX_EXPIRE
    return retry, max(expire, retry)


def retry_problem(retry: float) -> str | None:
    """Why Pushover would refuse a channel's emergency ``retry``, or None."""
    if retry < PUSHOVER_MIN_RETRY:
        return (f"Pushover needs at least {format_duration(PUSHOVER_MIN_RETRY)}, "
                f"got {format_duration(retry)}")
    return None


def expire_problem(expire: float, retry: float | None) -> str | None:
    """Why Pushover would refuse, or never repeat, a channel's emergency ``expire``."""
    if expire > PUSHOVER_MAX_EXPIRE:
        return (f"Pushover allows at most {format_duration(PUSHOVER_MAX_EXPIRE)}, "
                f"got {format_duration(expire)}")
    if retry is not None and expire < retry:
        return f"shorter than retry ({format_duration(retry)}): the page would never be repeated"
    return None


def poll_problem(poll_interval: float) -> str | None:
    """Why a channel's receipt ``poll_interval`` is faster than Pushover allows, or None."""
    if poll_interval < PUSHOVER_MIN_POLL:
        return (f"Pushover asks for at most one poll per receipt every "
                f"{format_duration(PUSHOVER_MIN_POLL)}, got {format_duration(poll_interval)}")
    return None

EMERGENCY = 2
#: Pushover priority of a page by incident priority; high is an emergency
PRIORITY: Mapping[str, int] = {"high": EMERGENCY, "medium": 1, "low": 0}
NOTICE_PRIORITY = -1  # quiet: "Ana is attending", "all clear"
TEST_PRIORITY = 0  # a test page makes the usual sound
# Pushover's limits on field lengths
MAX_MESSAGE, MAX_TITLE, MAX_URL, MAX_URL_TITLE = 1024, 250, 512, 100
ACK_LABEL = "Acknowledge"
# How long a cancelled incident is remembered, to cancel a page that was in flight
CANCEL_MEMORY = 3600.0

Clock = Callable[[], float]


def is_emergency(delivery: Delivery) -> bool:
    """Whether `delivery` goes out as an emergency, so its receipt is one to watch."""
    return delivery.kind == "page" and delivery.payload.get("priority") == "high"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _reason(status: int, answer: Mapping[str, Any], address: str | None, token: str) -> str:
    """Pushover's own words for a refusal ("pushover: user identifier is invalid")."""
    errors = answer.get("errors")
    if isinstance(errors, list) and errors:
        return mask("pushover: " + "; ".join(str(e) for e in errors), address, token)
    return f"HTTP {status}"


class PushoverChannel:
    """Posts a message to Pushover's API; returns the receipt (emergency) or request id."""

    type = "pushover"

    def __init__(
        self,
        config: ChannelConfig,
        session: aiohttp.ClientSession,
        high: Policy | None = None,
        receipts: ReceiptWatcher | None = None,
    ) -> None:
        if not config.token:
            raise ValueError(f"pushover channel {config.name!r} needs an application token")
        self.name = config.name
        self._token = config.token
        self._url = (config.url or "").rstrip("/") + "/1/messages.json"
        self._timeout = config.timeout
        self.retry, self.expire = pushover_timing(config, high)
        self._session = session
        self._receipts = receipts

    def form(self, delivery: Delivery, address: str) -> dict[str, str]:
        """The form fields posted for `delivery` to the user key `address`."""
        title, body = notification_text(delivery)
        match delivery.kind:
            case "page":
                # a page of unknown priority errs on the loud side
                priority = PRIORITY.get(str(delivery.payload.get("priority", "")), EMERGENCY)
            case "notice":
                priority = NOTICE_PRIORITY
            case "test":
                priority = TEST_PRIORITY
            case "system":
                # loud (high: past quiet hours) but never an emergency: no receipt to watch
                priority = min(PRIORITY.get(str(delivery.payload.get("priority", "")), 1), 1)
        form = {
            "token": self._token,
            "user": address,
            "title": _cut(title, MAX_TITLE),
            "message": _cut(body, MAX_MESSAGE),
            "priority": str(priority),
        }
        link = delivery.payload.get("ack_url") if delivery.kind == "page" else None
        if isinstance(link, str) and link and len(link) <= MAX_URL:
            # the ack page (GET changes nothing; its button acknowledges)
            form["url"], form["url_title"] = link, _cut(ACK_LABEL, MAX_URL_TITLE)
        if priority == EMERGENCY:
            form["retry"], form["expire"] = str(int(self.retry)), str(int(self.expire))
        return form

    async def send(self, delivery: Delivery, address: str | None) -> str | None:
        if not address:
            raise DeliveryError("pushover: no user key for this responder")
        form = self.form(delivery, address)
        started = self._receipts.clock() if self._receipts is not None else 0.0
        status, reply = await http_request(
            self._session, "POST", self._url, timeout=self._timeout, data=form
        )
        answer = json_object(reply)
        if status != 200 or answer.get("status") != 1:
            raise DeliveryError(_reason(status, answer, address, self._token))
        receipt = answer.get("receipt")
        if form["priority"] == str(EMERGENCY) and isinstance(receipt, str) and receipt:
            if self._receipts is not None:
                self._receipts.watch(receipt, delivery.incident, delivery.responder, self.name,
                                     sent_at=started)
            return receipt
        if form["priority"] == str(EMERGENCY):
            # Accepted, so it rings and repeats; only an ack on the phone goes unseen.
            log.error("pushover gave no receipt for an emergency", channel_name=self.name,
                      incident=delivery.incident, responder=delivery.responder)
        request = answer.get("request")
        return request if isinstance(request, str) and request else None


# --------------------------------------------------------------------------- receipts


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
        status, reply = await http_request(
            self._session, "GET", f"{app.url}/1/receipts/{entry.receipt}.json",
            timeout=app.timeout, params={"token": app.token},
        )
        answer = json_object(reply)
        if self._watched.get(entry.receipt) is not entry:
            return  # cancelled while the request was out
        if status != 200 or answer.get("status") != 1:
            if 400 <= status < 500 and status != 429:
                # unknown or too old (Pushover keeps receipts a week): asking again won't help
                del self._watched[entry.receipt]
                log.error("pushover receipt refused, no longer watched",
                          error=_reason(status, answer, None, app.token), incident=entry.incident,
                          receipt=entry.receipt)
                return
            raise DeliveryError(_reason(status, answer, None, app.token))
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
        status, reply = await http_request(
            self._session, "POST", f"{app.url}/1/receipts/{entry.receipt}/cancel.json",
            timeout=app.timeout, data={"token": app.token},
        )
        answer = json_object(reply)
        if status == 200 and answer.get("status") == 1:
            del self._cancelling[entry.receipt]
            log.info("pushover receipt cancelled", incident=entry.incident,
                     receipt=entry.receipt)
            return
        # a 4xx: already expired or unknown; past cancel_by it has stopped by itself
        if (400 <= status < 500 and status != 429) or self.clock() >= entry.cancel_by:
            del self._cancelling[entry.receipt]
            log.warning("pushover receipt not cancelled",
                        error=_reason(status, answer, None, app.token),
                        incident=entry.incident, receipt=entry.receipt)
            return
        raise DeliveryError(_reason(status, answer, None, app.token))

    def _call(self, callback: Callable[..., None], entry: _Receipt, *more: Any) -> None:
        try:
            callback(entry.incident, entry.responder, entry.receipt, *more)
        except Exception:
            log.exception("receipt callback failed", incident=entry.incident,
                          receipt=entry.receipt)
