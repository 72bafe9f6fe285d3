"""Shared fixtures: a real Mosquitto per test and a publisher that waits for the broker's ack."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

# the harness's own asserts explain themselves as a test's do
pytest.register_assert_rewrite("tests.harness")

from monitor.logs import PRIVACY  # noqa: E402
from tests.harness.broker import Mosquitto, Publish, require_mosquitto  # noqa: E402
from tests.harness.receivers import Webhook  # noqa: E402

PUBLISH_TIMEOUT = 5.0


@pytest.fixture(autouse=True)
def _privacy_forgets_the_site() -> Iterator[None]:
    """The log redaction is process-wide (structlog's processors are): a runtime started by
    one test must not decide what another test's log lines show."""
    yield
    PRIVACY.reset()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A started Mosquitto on a free 127.0.0.1 port with its own config, stopped afterwards."""
    broker = Mosquitto(tmp_path / "mosquitto", binary=require_mosquitto())
    with broker:
        yield broker


@pytest.fixture
def mqtt_publish(mosquitto: Mosquitto) -> Iterator[Publish]:
    """A function that publishes through one MQTT v5 client and returns once the broker has it."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    connected = threading.Event()
    outcome: list[Any] = []

    def on_connect(
        client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        outcome.append(reason_code)
        connected.set()

    client.on_connect = on_connect
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        if not connected.wait(PUBLISH_TIMEOUT):
            raise TimeoutError(f"no CONNACK from {mosquitto.url}")
        if outcome[0].is_failure:
            raise ConnectionError(f"{mosquitto.url} refused the publisher: {outcome[0]}")

        def publish(topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
            info = client.publish(topic, payload, qos=qos, retain=retain)
            info.wait_for_publish(timeout=PUBLISH_TIMEOUT)
            if not info.is_published():
                raise TimeoutError(f"{topic}: no ack within {PUBLISH_TIMEOUT:g} s")

        yield publish
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
async def hook() -> AsyncIterator[Webhook]:
    """The test site's pager, a real HTTP server."""
    async with Webhook() as webhook:
        yield webhook
