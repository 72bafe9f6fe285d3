"""Webhook: POSTs the page JSON, signed with HMAC-SHA256 when the channel has a secret."""

from __future__ import annotations

import hashlib
import hmac

import aiohttp

from alerts.delivery import Delivery, DeliveryError, encode_payload
from alerts.http import request
from monitor.core.settings import ChannelConfig

SIGNATURE_HEADER = "X-Boothwatch-Signature"


class WebhookChannel:
    """POSTs the page JSON to ``config.url``, signed when ``config.secret`` is set.

    `session` is the process's shared one (`alerts.http.client_session`).
    """

    type = "webhook"
    reaches_a_person = True

    def __init__(self, config: ChannelConfig, session: aiohttp.ClientSession) -> None:
        if not config.url:
            raise ValueError(f"webhook channel {config.name!r} needs a url")
        self.name = config.name
        self._url = config.url
        self._secret = config.secret.encode() if config.secret else None
        self._timeout = config.timeout
        self._session = session

    async def send(self, delivery: Delivery, address: str | None) -> str | None:
        body = encode_payload(delivery.payload)
        headers = {"Content-Type": "application/json"}
        if self._secret is not None:
            digest = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
            headers[SIGNATURE_HEADER] = f"sha256={digest}"
        reply = await request(self._session, "POST", self._url, timeout=self._timeout,
                              data=body, headers=headers)
        if not reply.ok:
            raise DeliveryError(f"HTTP {reply.status}")
        return None
