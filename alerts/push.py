"""Push channels to phones: ntfy and Apprise, and what they share with Pushover.

Each channel makes one attempt per `send` and raises `DeliveryError` with a
short reason ("HTTP 500", "timeout after 5s", "ntfy: forbidden"); the
`Dispatcher` in alerts/channels.py owns retries, fallback and the delivery
record. The text of a notification comes from the payload the caller built
(interface section 8 for pages, plus the notice and test forms), so every
service shows the same words.

- **ntfy**: the JSON publish API (POST to the server's root URL). A page gets
  priority 5/4/3 for high/medium/low, a click URL and an *Acknowledge* action
  (ntfy's ``http`` action) that POSTs to the responder's signed ack link, so a
  nurse acknowledges from the lock screen. Notices and tests: priority 3, no
  action. The topic is the responder's address on the channel, else the
  channel's ``topic`` template.
- **Apprise**: any Apprise URL (SMS, e-mail, Telegram, Signal, Matrix...) sent
  with Apprise's async API; ``{address}`` in the URL is replaced by the
  responder's address. Services without buttons get the ack link in the text.

Addresses are personal data (phone numbers, topics that work as passwords):
they are never logged and are masked out of failure reasons.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import aiohttp
import apprise
from apprise.manager_plugins import NotificationManager

from alerts.channels import Delivery, DeliveryError
from monitor.core.durations import describe, format_duration
from monitor.core.settings import ADDRESS_PLACEHOLDER, RESPONDER_PLACEHOLDER, ChannelConfig

MAX_REPLY = 64 * 1024  # bytes of a service's reply kept; the rest is read and dropped
MAX_REASON = 160  # characters of a service's own error text kept in a reason

#: ntfy priorities (1 min .. 5 max) of a page by incident priority
NTFY_PRIORITY: Mapping[str, int] = {"high": 5, "medium": 4, "low": 3}
NTFY_DEFAULT_PRIORITY = 3  # notices, tests, and a page of unknown priority
#: ntfy tags that show as emoji: https://docs.ntfy.sh/emojis/
NTFY_TAGS: Mapping[str, str] = {
    "high": "rotating_light",
    "medium": "warning",
    "low": "bell",
    "notice": "information_source",
    "test": "test_tube",
}
ACK_LABEL = "Acknowledge"
NTFY_TOPIC_RE = re.compile(r"[-_A-Za-z0-9]{1,64}")  # what an ntfy server accepts


def ntfy_topic_problem(template: str) -> str | None:
    """Why an ntfy channel's ``topic`` template cannot make topics, or None."""
    if NTFY_TOPIC_RE.fullmatch(template.replace(RESPONDER_PLACEHOLDER, "x")):
        return None
    return (f"{describe(template)} is not an ntfy topic (letters, digits, - and _, at most 64; "
            f"{RESPONDER_PLACEHOLDER} is replaced by the responder id)")


def apprise_url_problem(url: str) -> str | None:
    """Why Apprise cannot use `url`, or None; the problem never shows the URL, which may
    carry credentials."""
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        return "expected an Apprise URL such as tgram://..., mailto://..., json://..."
    schemes = NotificationManager()  # type: ignore[no-untyped-call]  # apprise leaves it untyped
    if scheme.lower() not in schemes:
        return f"Apprise does not know the scheme {describe(scheme)}"
    if ADDRESS_PLACEHOLDER in url:
        return None  # the full form is known once a responder's address is in it
    # Apprise logs why it rejects a URL, with the URL: keep that out of our output.
    apprise_log = logging.getLogger("apprise")
    was_disabled, apprise_log.disabled = apprise_log.disabled, True
    try:
        usable = apprise.Apprise.instantiate(url) is not None
    finally:
        apprise_log.disabled = was_disabled
    return None if usable else f"Apprise cannot use this {scheme} URL (check its form)"


# --------------------------------------------------------------------------- shared


def notification_text(delivery: Delivery) -> tuple[str, str]:
    """``(title, body)`` of a delivery, for services that show a notification."""
    payload = delivery.payload
    place = str(payload.get("booth_name") or payload.get("booth") or "boothwatch")
    message = str(payload.get("message") or f"incident {delivery.incident}")
    match delivery.kind:
        case "page":
            title = f"{str(payload.get('priority', '?')).upper()} · {place}"
            if payload.get("urgent"):
                title += " · URGENT (repeated calls)"
        case "notice":
            title = place
        case "test":
            title = "boothwatch TEST"
        case "system":
            title = str(payload.get("title") or "boothwatch")
    return title, message


def ack_url(delivery: Delivery, via: str | None = None) -> str | None:
    """The responder's signed ack link of a page (None for notices and tests).

    ``via`` adds ``?via=<channel type>`` so the acknowledgement records where it came from.
    """
    url = delivery.payload.get("ack_url")
    if delivery.kind != "page" or not isinstance(url, str) or not url:
        return None
    if via is None:
        return url
    parts = urlsplit(url)
    query = urlencode([*parse_qsl(parts.query), ("via", via)])
    return urlunsplit(parts._replace(query=query))


def mask(text: str, address: str | None, *secrets: str | None) -> str:
    """`text` without the responder's address or the channel's `secrets` (a token, the
    credentials of a URL: a service may echo them back), at most MAX_REASON characters."""
    if address:
        text = text.replace(address, "<address>")
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<secret>")
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


async def http_request(
    session: aiohttp.ClientSession, method: str, url: str, *, timeout: float, **kwargs: Any
) -> tuple[int, bytes]:
    """One HTTP request: ``(status, start of the body)``; transport failures as `DeliveryError`."""
    try:
        async with session.request(
            method,
            url,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,  # a redirect would turn the POST into a GET
            **kwargs,
        ) as response:
            body = bytearray()
            # Read to the end so the connection goes back to the pool; keep only the start.
            async for chunk in response.content.iter_chunked(MAX_REPLY):
                if len(body) < MAX_REPLY:
                    body += chunk[: MAX_REPLY - len(body)]
            return response.status, bytes(body)
    except TimeoutError:
        raise DeliveryError(f"timeout after {format_duration(timeout)}") from None
    except aiohttp.ClientConnectorError as exc:
        if exc.os_error.errno == errno.ECONNREFUSED:
            raise DeliveryError("connection refused") from None
        raise DeliveryError(f"connection failed: {exc.os_error.strerror or exc}") from None
    except aiohttp.ClientError as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise DeliveryError(reason) from None


def json_object(body: bytes) -> dict[str, Any]:
    """A reply's JSON object, or {} when it is not one (an error page from a proxy...)."""
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------- ntfy


class NtfyChannel:
    """Publishes to an ntfy server with the JSON API; returns ntfy's message id.

    With ``config.token`` (from ``token_env``) it sends ``Authorization: Bearer``.
    """

    type = "ntfy"

    def __init__(self, config: ChannelConfig, session: aiohttp.ClientSession) -> None:
        if not config.url:
            raise ValueError(f"ntfy channel {config.name!r} needs a url")
        self.name = config.name
        self._url = config.url
        self._topic = config.topic
        self._timeout = config.timeout
        self._token = config.token
        self._headers = {"Content-Type": "application/json"}
        if config.token:
            self._headers["Authorization"] = f"Bearer {config.token}"
        self._session = session

    def topic(self, delivery: Delivery, address: str | None) -> str:
        """The responder's address, else the channel's template; DeliveryError if neither."""
        if address:
            topic = address
        elif self._topic:
            topic = self._topic.replace(RESPONDER_PLACEHOLDER, delivery.responder)
        else:
            raise DeliveryError("ntfy: no topic for this responder (give an address)")
        if not NTFY_TOPIC_RE.fullmatch(topic):
            raise DeliveryError("ntfy: not a valid topic (letters, digits, - and _, at most 64)")
        return topic

    def message(self, delivery: Delivery, address: str | None) -> dict[str, Any]:
        """The JSON object published for `delivery`."""
        title, body = notification_text(delivery)
        priority = str(delivery.payload.get("priority", ""))
        message: dict[str, Any] = {
            "topic": self.topic(delivery, address),
            "title": title,
            "message": body,
            "priority": NTFY_DEFAULT_PRIORITY,
        }
        if delivery.kind in ("page", "system"):  # system: monitoring down is as loud as a call
            message["priority"] = NTFY_PRIORITY.get(priority, NTFY_DEFAULT_PRIORITY)
            tags = [NTFY_TAGS.get(priority, NTFY_TAGS["high"])]
            if delivery.payload.get("urgent"):
                tags.append("urgent")
        else:
            tags = [NTFY_TAGS[delivery.kind]]
        message["tags"] = tags
        click = ack_url(delivery)
        if click is not None:
            message["click"] = click
            message["actions"] = [{
                "action": "http",
                "label": ACK_LABEL,
                "url": ack_url(delivery, via="ntfy"),
                "method": "POST",
                "clear": True,
            }]
        return message

    async def send(self, delivery: Delivery, address: str | None) -> str | None:
        body = json.dumps(self.message(delivery, address), separators=(",", ":"))
        status, reply = await http_request(
            self._session, "POST", self._url, timeout=self._timeout, data=body.encode(),
            headers=self._headers,
        )
        answer = json_object(reply)
        if not 200 <= status < 300:
            error = answer.get("error")
            reason = f"HTTP {status}" + (f": {error}" if isinstance(error, str) and error else "")
            raise DeliveryError(mask(reason, address, self._token))
        message_id = answer.get("id")
        return message_id if isinstance(message_id, str) and message_id else None


# --------------------------------------------------------------------------- apprise


class AppriseChannel:
    """Sends through any Apprise URL with Apprise's async API.

    ``{address}`` in the URL is replaced by the responder's address (URL-quoted,
    keeping ``+`` and ``@``). Apprise is told the timeout; a call that still runs
    past it is abandoned (its worker thread ends with the service's own timeout).
    """

    type = "apprise"

    # A high page is a failure the nurse must act on; Apprise services colour or
    # sound by these types.
    NOTIFY_TYPES: Mapping[str, apprise.NotifyType] = {
        "high": apprise.NotifyType.FAILURE,
        "medium": apprise.NotifyType.WARNING,
        "low": apprise.NotifyType.INFO,
    }

    def __init__(self, config: ChannelConfig) -> None:
        if not config.url:
            raise ValueError(f"apprise channel {config.name!r} needs a url")
        self.name = config.name
        self._url = config.url
        self._timeout = config.timeout

    def url(self, address: str | None) -> str:
        if ADDRESS_PLACEHOLDER not in self._url:
            return self._url
        if not address:
            raise DeliveryError("apprise: no address for this responder")
        return self._url.replace(ADDRESS_PLACEHOLDER, quote(address, safe="+@"))

    def notify_type(self, delivery: Delivery) -> apprise.NotifyType:
        if delivery.kind not in ("page", "system"):
            return apprise.NotifyType.INFO
        priority = str(delivery.payload.get("priority", ""))
        return self.NOTIFY_TYPES.get(priority, apprise.NotifyType.FAILURE)

    async def send(self, delivery: Delivery, address: str | None) -> str | None:
        service = apprise.Apprise()
        if not service.add(self.url(address)):
            raise DeliveryError("apprise: the URL is not usable (check its form)")
        title, body = notification_text(delivery)
        link = ack_url(delivery, via="apprise")
        if link is not None:
            body += f"\n{ACK_LABEL}: {link}"  # most of these services have no buttons
        try:
            # a margin over Apprise's own limit, in case one service ignores it
            async with asyncio.timeout(self._timeout + 1):
                result = await service.async_notify(
                    body=body,
                    title=title,
                    notify_type=self.notify_type(delivery),
                    body_format=apprise.NotifyFormat.TEXT,
                    timeout=self._timeout,
                )
        except TimeoutError:
            raise DeliveryError(f"timeout after {format_duration(self._timeout)}") from None
        if result:
            return None
        if result.status == apprise.AppriseResultStatus.TIMEOUT:
            raise DeliveryError(f"timeout after {format_duration(self._timeout)}")
        problems = [entry.message for entry in result.logs() if entry.message]
        reason = problems[-1] if problems else result.status.name.lower()
        url = urlsplit(self._url)
        raise DeliveryError(mask(f"apprise: {reason}", address, url.username, url.password))
