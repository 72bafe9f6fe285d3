"""The Mosquitto fixture starts a real broker that carries messages and keeps sessions."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.harness.broker import Mosquitto, MosquittoError, Publish

pytestmark = pytest.mark.integration

TIMEOUT = 5.0


@contextmanager
def subscriber(
    broker: Mosquitto, topic: str, client_id: str = "", persistent: bool = False
) -> Iterator[queue.Queue[mqtt.MQTTMessage]]:
    """Yield a queue of the messages a QoS 1 subscription to `topic` receives."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    subscribed = threading.Event()

    def on_connect(c: mqtt.Client, u: Any, flags: Any, rc: Any, props: Any) -> None:
        c.subscribe(topic, qos=1)

    def on_subscribe(c: mqtt.Client, u: Any, mid: int, rcs: Any, props: Any) -> None:
        subscribed.set()

    def on_message(c: mqtt.Client, u: Any, message: mqtt.MQTTMessage) -> None:
        received.put(message)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho
    properties.SessionExpiryInterval = 300 if persistent else 0
    client.connect(broker.host, broker.port, clean_start=not persistent, properties=properties)
    client.loop_start()
    try:
        assert subscribed.wait(TIMEOUT), "no SUBACK"
        yield received
    finally:
        client.disconnect()
        client.loop_stop()


def test_publish_reaches_a_subscriber(mosquitto: Mosquitto, mqtt_publish: Publish) -> None:
    """A message published through mqtt_publish arrives at a subscriber on the same broker."""
    with subscriber(mosquitto, "boothwatch/test/booths/+/events") as received:
        mqtt_publish("boothwatch/test/booths/b1/events", b'{"kind":"heartbeat"}')
        message = received.get(timeout=TIMEOUT)
    assert message.topic == "boothwatch/test/booths/b1/events"
    assert message.payload == b'{"kind":"heartbeat"}'
    assert message.qos == 1


def test_config_raises_the_queue_limits(mosquitto: Mosquitto) -> None:
    """The generated config raises the inflight and queued limits and listens on loopback only."""
    lines = mosquitto.config_text().splitlines()
    assert "max_inflight_messages 1000" in lines
    assert "max_queued_messages 100000" in lines
    assert f"listener {mosquitto.port} 127.0.0.1" in lines
    assert "persistence true" in lines
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"


def test_offline_persistent_session_keeps_more_than_the_default_queue(
    mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """A persistent session gets all 1500 QoS 1 messages sent while it was away."""
    topic = "boothwatch/test/booths/b1/events"
    with subscriber(mosquitto, topic, client_id="offline-test", persistent=True):
        pass
    for n in range(1500):
        mqtt_publish(topic, str(n))
    with subscriber(mosquitto, topic, client_id="offline-test", persistent=True) as received:
        got = [int(received.get(timeout=TIMEOUT).payload) for _ in range(1500)]
    assert got == list(range(1500))


def test_restart_keeps_the_port_and_the_log_records_connections(mosquitto: Mosquitto) -> None:
    """Stop and start reuse the port, and the log shows the connections it saw."""
    port = mosquitto.port
    mosquitto.stop()
    assert not mosquitto.running
    mosquitto.start()
    assert mosquitto.port == port
    with subscriber(mosquitto, "x"):
        pass
    assert "New connection from 127.0.0.1" in mosquitto.log_text()


def test_failed_start_raises_with_the_log(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """A broker that cannot bind its port raises MosquittoError quoting what it logged."""
    second = Mosquitto(tmp_path / "second", binary=mosquitto.binary, port=mosquitto.port)
    with pytest.raises(MosquittoError, match="Address already in use"):
        second.start()
    assert not second.running
