"""Pushover: a high page is an emergency that rings until acknowledged.

A high page goes out at Pushover's emergency priority (2): Pushover repeats it
every ``retry`` seconds until someone acknowledges it on the phone or
``expire`` passes, and answers with a *receipt*. ``retry`` follows the high
policy's ``repeat`` and ``expire`` is Pushover's maximum (see `pushover_timing`),
because boothwatch cancels the receipt itself once the incident is acknowledged
or resolved: an open high incident must never go quiet because a timer at
Pushover ran out. The channel hands
every emergency receipt to the `alerts.receipts.ReceiptWatcher`, which follows
it to the nurse's acknowledgement and cancels it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

from alerts.delivery import Delivery, DeliveryError
from alerts.http import request
from alerts.text import ACK_LABEL, SOURCE_TEXT, Gettext, ack_url, mask, notification_text
from monitor.core.durations import format_duration
from monitor.core.settings import ChannelConfig, Policy

if TYPE_CHECKING:
    from alerts.receipts import ReceiptWatcher

log = structlog.get_logger(__name__)

PUSHOVER_API = "https://api.pushover.net"
PUSHOVER_MIN_RETRY = 30.0  # Pushover refuses an emergency message retried more often
PUSHOVER_MAX_EXPIRE = 3 * 3600.0  # and one that keeps retrying longer
#: the retry interval when the high policy has no repeat of its own
PUSHOVER_DEFAULT_RETRY = 60.0
PUSHOVER_MIN_POLL = 5.0  # Pushover: poll a receipt no faster than every 5 seconds

EMERGENCY = 2
#: Pushover priority of a page by incident priority; high is an emergency
PRIORITY: Mapping[str, int] = {"high": EMERGENCY, "medium": 1, "low": 0}
NOTICE_PRIORITY = -1  # quiet: "Ana is attending", "all clear"
TEST_PRIORITY = 0  # a test page makes the usual sound
# Pushover's limits on field lengths
MAX_MESSAGE, MAX_TITLE, MAX_URL, MAX_URL_TITLE = 1024, 250, 512, 100


def is_emergency(delivery: Delivery) -> bool:
    """Whether `delivery` goes out as an emergency, so its receipt is one to watch."""
    return delivery.kind == "page" and delivery.payload.get("priority") == "high"


def refusal(status: int, answer: Mapping[str, Any], address: str | None, token: str) -> str:
    """Pushover's own words for a refusal ("pushover: user identifier is invalid")."""
    errors = answer.get("errors")
    if isinstance(errors, list) and errors:
        return mask("pushover: " + "; ".join(str(e) for e in errors), address, token)
    return f"HTTP {status}"


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


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class PushoverChannel:
    """Posts a message to Pushover's API; returns the receipt (emergency) or request id."""

    type = "pushover"
    reaches_a_person = True

    def __init__(
        self,
        config: ChannelConfig,
        session: aiohttp.ClientSession,
        high: Policy | None = None,
        receipts: ReceiptWatcher | None = None,
        gettext: Gettext = SOURCE_TEXT,
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
        self._gettext = gettext

    def form(self, delivery: Delivery, address: str) -> dict[str, str]:
        """The form fields posted for `delivery` to the user key `address`."""
        title, body = notification_text(delivery, self._gettext)
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
        link = ack_url(delivery)
        if link is not None and len(link) <= MAX_URL:
            # the ack page (GET changes nothing; its button acknowledges)
            form["url"] = link
            form["url_title"] = _cut(self._gettext(ACK_LABEL), MAX_URL_TITLE)
        if priority == EMERGENCY:
            form["retry"], form["expire"] = str(int(self.retry)), str(int(self.expire))
        return form

    async def send(self, delivery: Delivery, address: str | None) -> str | None:
        if not address:
            raise DeliveryError("pushover: no user key for this responder")
        form = self.form(delivery, address)
        started = self._receipts.clock() if self._receipts is not None else 0.0
        reply = await request(self._session, "POST", self._url, timeout=self._timeout, data=form)
        answer = reply.json()
        if reply.status != 200 or answer.get("status") != 1:
            raise DeliveryError(refusal(reply.status, answer, address, self._token))
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
        request_id = answer.get("request")
        return request_id if isinstance(request_id, str) and request_id else None
