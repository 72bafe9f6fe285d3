"""ntfy: the JSON publish API (POST to the server's root URL).

A page gets priority 5/4/3 for high/medium/low, a click URL and an *Acknowledge*
action (ntfy's ``http`` action) that POSTs to the responder's signed ack link, so
a nurse acknowledges from the lock screen. Notices and tests: priority 3, no
action. The topic is the responder's address on the channel, else the channel's
``topic`` template.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import aiohttp

from alerts.delivery import Delivery, DeliveryError
from alerts.http import request
from alerts.text import ACK_LABEL, SOURCE_TEXT, Gettext, ack_url, mask, notification_text
from monitor.core.durations import describe
from monitor.core.settings import RESPONDER_PLACEHOLDER, ChannelConfig

NTFY_TOPIC_RE = re.compile(r"[-_A-Za-z0-9]{1,64}")  # what an ntfy server accepts
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


def topic_problem(template: str) -> str | None:
    """Why a channel's ``topic`` template cannot make ntfy topics, or None."""
    if NTFY_TOPIC_RE.fullmatch(template.replace(RESPONDER_PLACEHOLDER, "x")):
        return None
    return (f"{describe(template)} is not an ntfy topic (letters, digits, - and _, at most 64; "
            f"{RESPONDER_PLACEHOLDER} is replaced by the responder id)")


class NtfyChannel:
    """Publishes to an ntfy server with the JSON API; returns ntfy's message id.

    With ``config.token`` (from ``token_env``) it sends ``Authorization: Bearer``.
    """

    type = "ntfy"
    reaches_a_person = True

    def __init__(self, config: ChannelConfig, session: aiohttp.ClientSession,
                 gettext: Gettext = SOURCE_TEXT) -> None:
        if not config.url:
            raise ValueError(f"ntfy channel {config.name!r} needs a url")
        self.name = config.name
        self._gettext = gettext
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
        title, body = notification_text(delivery, self._gettext)
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
                "label": self._gettext(ACK_LABEL),
                "url": ack_url(delivery, via="ntfy"),
                "method": "POST",
                "clear": True,
            }]
        return message

    async def send(self, delivery: Delivery, address: str | None) -> str | None:
        body = json.dumps(self.message(delivery, address), separators=(",", ":"))
        reply = await request(self._session, "POST", self._url, timeout=self._timeout,
                              data=body.encode(), headers=self._headers)
        answer = reply.json()
        if not reply.ok:
            error = answer.get("error")
            reason = f"HTTP {reply.status}" + (f": {error}" if isinstance(error, str) and error
                                               else "")
            raise DeliveryError(mask(reason, address, self._token))
        message_id = answer.get("id")
        return message_id if isinstance(message_id, str) and message_id else None
