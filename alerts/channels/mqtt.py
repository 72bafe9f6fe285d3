"""MQTT: publishes the page JSON on the service's own broker connection."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from alerts.delivery import Delivery, DeliveryError, encode_payload
from monitor.core.settings import ChannelConfig

Publish = Callable[[str, bytes], Awaitable[None]]


class MqttChannel:
    """Publishes the page JSON to ``config.topic`` (``{responder}`` is replaced).

    The default topic is ``boothwatch/<site>/pages/<responder>``. `publish` belongs
    to the caller's MQTT client and raises `DeliveryError` when the broker is not
    connected or never acknowledges; ``config.timeout`` bounds it all the same, so
    a publish that hangs becomes a failed attempt instead of a page stuck forever.
    """

    type = "mqtt"
    reaches_a_person = True

    def __init__(self, config: ChannelConfig, publish: Publish, site: str) -> None:
        self.name = config.name
        self._topic = config.topic or f"boothwatch/{site}/pages/{{responder}}"
        self._publish = publish
        self._timeout = config.timeout

    def topic(self, responder: str) -> str:
        # str.replace, not str.format: other braces in a topic are not ours to interpret.
        return self._topic.replace("{responder}", responder)

    async def send(self, delivery: Delivery, address: str | None) -> str | None:
        topic = self.topic(delivery.responder)
        body = encode_payload(delivery.payload)
        try:
            async with asyncio.timeout(self._timeout):
                await self._publish(topic, body)
        except TimeoutError:
            raise DeliveryError.timeout(self._timeout) from None
        return None
