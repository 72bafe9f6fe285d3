"""A real broker outage: Mosquitto stopped for 30 s and started again on the same port with
the same persistence directory, under the real `boothwatch run` process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from monitor.config import load_config
from monitor.core.selfwatch import State
from monitor.runtime import Runtime
from tests.harness.broker import Mosquitto, free_port, require_mosquitto, retained
from tests.harness.process import ServiceProcess
from tests.harness.receivers import Webhook
from tests.harness.service import event, events_topic, eventually
from tests.harness.site import SITE, service_site

pytestmark = pytest.mark.integration

OUTAGE = 30.0  # seconds the broker is down
PAGE_AFTER = 5.0  # [mqtt] outage_page_after in this test


class Device:
    """A booth device with a persistent session (fixed id, clean start off, session expiry):
    paho keeps its QoS 1 publishes while the broker is down and sends them on reconnect."""

    def __init__(self, broker: Mosquitto, client_id: str) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.connected = threading.Event()
        self.client.on_connect = lambda *_: self.connected.set()
        self.client.on_disconnect = lambda *_: self.connected.clear()
        # PUBACKs by message id: a publish made while disconnected reports "not connected"
        # at once (is_published raises) though paho keeps it and sends it on reconnect
        self.acked: set[int] = set()
        self.client.on_publish = lambda _c, _u, mid, *_: self.acked.add(mid)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho
        props.SessionExpiryInterval = 3600
        self.client.connect(broker.host, broker.port, clean_start=False, properties=props)
        self.client.loop_start()
        assert self.connected.wait(5), "device did not connect"

    def publish(self, topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def device(mosquitto: Mosquitto) -> Iterator[Device]:
    dev = Device(mosquitto, "booth-b1-button")
    try:
        yield dev
    finally:
        dev.close()


def _system(hook: Webhook, name: str) -> list[dict[str, Any]]:
    return [p for p in hook.pages if p.get("kind") == "system" and p["event"] == name]


def _calls(hook: Webhook) -> list[dict[str, Any]]:
    return [p for p in hook.pages if p.get("kind") == "page"]


async def _get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{port}{path}") as resp:
        return resp.status, await resp.text()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def _log_events(path: Path, name: str) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == name:
                out.append(entry)
    return out


async def test_a_30s_broker_outage_pages_staff_and_loses_nothing(
    tmp_path: Path, mosquitto: Mosquitto, device: Device, hook: Webhook
) -> None:
    """Broker down 30 s: /readyz 503 and the metrics say so, on-duty staff get one
    monitoring-down page over the webhook after 5 s, the service reconnects to its kept
    session, staff get "monitoring restored", and every call sent meanwhile is stored and
    paged."""
    http_port = free_port()
    db = tmp_path / "boothwatch.db"
    site = service_site(mqtt_port=mosquitto.port, http_port=http_port, webhook_url=hook.url,
                        store=db, step2="1h", repeat="1h")
    site.mqtt["outage_page_after"] = f"{PAGE_AFTER:g}s"
    svc = ServiceProcess.of(site, tmp_path)
    log = svc.log
    svc.start()
    try:
        await svc.ready()
        metrics = (await _get(http_port, "/metrics"))[1]
        assert _metric(metrics, "boothwatch_broker_connected") == 1
        assert _metric(metrics, "boothwatch_broker_disconnected_seconds") == 0

        mosquitto.stop()  # a real stop: SIGTERM, Mosquitto saves its persistence file
        stopped = time.time()
        # the button is pressed while the broker is down: paho queues the QoS 1 publish
        queued = device.publish(events_topic("b1"), event("button", press="call", id="c1"))

        async def not_ready() -> bool:
            status, body = await _get(http_port, "/readyz")
            return status == 503 and "broker not connected" in body

        await eventually(not_ready, timeout=5)
        down = await eventually(lambda: _system(hook, "monitoring_down"), timeout=PAGE_AFTER + 10)
        assert time.time() < stopped + OUTAGE  # it came during the outage
        await eventually(lambda: len(_system(hook, "monitoring_down")) == 2, timeout=5)
        down = _system(hook, "monitoring_down")
        assert {p["responder"] for p in down} == {"ana", "rui"}  # both on duty, over the webhook
        first_down_at = min(hook.received_at[hook.pages.index(p)] for p in down)
        assert first_down_at - stopped >= PAGE_AFTER - 0.5  # not before the limit
        assert all(p["priority"] == "high" and p["site"] == SITE and "check the booths"
                   in p["message"] for p in down)
        assert hook.bad_signatures == 0

        metrics = (await _get(http_port, "/metrics"))[1]
        assert _metric(metrics, "boothwatch_broker_connected") == 0
        assert _metric(metrics, "boothwatch_broker_disconnected_seconds") >= PAGE_AFTER - 0.5
        assert _metric(metrics, "boothwatch_monitoring_down") == 1

        await asyncio.sleep(max(0.0, stopped + OUTAGE - time.time()))
        assert len(_system(hook, "monitoring_down")) == 2  # once per outage, no repeats
        assert _system(hook, "monitoring_restored") == [] and _calls(hook) == []
        assert (await _get(http_port, "/readyz"))[0] == 503

        mosquitto.start()  # same port, same persistence directory
        restarted = time.time()
        # a second booth calls as soon as the broker is back, while boothwatch is still
        # waiting out its reconnect backoff: the broker queues it in boothwatch's session
        second = Device(mosquitto, "booth-b2-button")
        try:
            second.publish(events_topic("b2"), event("button", press="call", id="c2"))
            await svc.ready(timeout=15)
            await eventually(lambda: queued.mid in device.acked, timeout=10)
            calls = await eventually(lambda: len(_calls(hook)) >= 2 and _calls(hook), timeout=10)
        finally:
            second.close()
        assert sorted((p["booth"], p["triggers"], p["responder"], p["level"])
                      for p in calls) == [("b1", ["call"], "ana", 1), ("b2", ["call"], "ana", 1)]

        restored = await eventually(lambda: len(_system(hook, "monitoring_restored")) == 2
                                    and _system(hook, "monitoring_restored"), timeout=20)
        assert {p["responder"] for p in restored} == {"ana", "rui"}
        assert {p["outage"] for p in restored} == {p["outage"] for p in down}
        assert all(hook.received_at[hook.pages.index(p)] > restarted for p in restored)
        assert len(_system(hook, "monitoring_down")) == 2

        # the broker kept our session across its restart (persistence), and we reconnected
        connects = _log_events(log, "mqtt_connected")
        assert [c["session_present"] for c in connects] == [False, True], connects
        assert retained(mosquitto, f"boothwatch/{SITE}/status") == {"raw": b"online"}

        metrics = (await _get(http_port, "/metrics"))[1]
        assert _metric(metrics, "boothwatch_broker_connected") == 1
        assert _metric(metrics, "boothwatch_broker_reconnects_total") == 1
        assert _metric(metrics, "boothwatch_monitoring_down") == 0
        sent = {line.split(" ")[0]: float(line.split(" ")[1]) for line in metrics.splitlines()
                if line.startswith("boothwatch_monitoring_messages_total{")}
        assert sent == {
            'boothwatch_monitoring_messages_total{event="monitoring_down",result="sent"}': 2,
            'boothwatch_monitoring_messages_total{event="monitoring_down",result="failed"}': 0,
            'boothwatch_monitoring_messages_total{event="monitoring_restored",result="sent"}': 2,
            'boothwatch_monitoring_messages_total{event="monitoring_restored",result="failed"}':
                0,
            # no self-test round ran: its "unanswered" notice is counted from 0
            'boothwatch_monitoring_messages_total{event="self_test_unanswered",result="sent"}': 0,
            'boothwatch_monitoring_messages_total{event="self_test_unanswered",result="failed"}':
                0,
        }

        status, body = await _get(http_port, "/api/audit?subject=broker")
        assert status == 200
        audit = json.loads(body)
        assert [a["kind"] for a in audit] == ["monitoring_restored", "monitoring_down"]
        assert sorted(r["responder"] for r in audit[1]["recipients"]) == ["ana", "rui"]
    finally:
        assert await svc.stop() == 0

    # everything published during the outage is in the store, and every page is recorded
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        ids = {r[0] for r in conn.execute("SELECT event_id FROM events")}
        kinds = sorted(r[0] for r in conn.execute(
            "SELECT kind FROM pages WHERE status = 'sent'"))
    assert {"c1", "c2"} <= ids
    assert kinds == ["page", "page", "system", "system", "system", "system"]


async def test_a_restart_mid_outage_pages_nobody_twice_and_still_says_restored(
    tmp_path: Path, hook: Webhook
) -> None:
    """Paged, then restarted while the broker is still down: the new process carries on
    with the outage (no second down page) and sends "restored" to those told. The
    message skips a responder's mqtt channel, which needs the broker that is down."""
    broker = Mosquitto(tmp_path / "mosquitto", binary=require_mosquitto(), port=free_port())
    site = service_site(mqtt_port=broker.port, http_port=free_port(), webhook_url=hook.url,
                        store=tmp_path / "boothwatch.db", step2="1h", repeat="1h")
    site.mqtt["outage_page_after"] = "1s"
    site.channels["radio"] = {"type": "mqtt"}
    site.responder("rui")["channels"] = ["radio", "pager"]
    config = site.write(tmp_path / "boothwatch.toml")

    async def run_until(runtime: Runtime, done: Any) -> None:
        task = asyncio.create_task(runtime.run(http=False))
        try:
            await eventually(done, timeout=25)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    first = Runtime(load_config(config), env={})
    await run_until(first, lambda: len(_system(hook, "monitoring_down")) == 2)
    down = _system(hook, "monitoring_down")
    assert {p["responder"] for p in down} == {"ana", "rui"}
    radio = first.metrics.registry.get_sample_value(
        "boothwatch_pages_total", {"channel": "radio", "result": "failed"})
    assert radio == 0  # the mqtt channel was never tried

    second = Runtime(load_config(config), env={})

    async def resumed_and_quiet() -> bool:
        if not second.started.is_set():
            return False
        assert second.health.selfwatch.state is State.PAGED
        await asyncio.sleep(2.5)  # well past the 1 s limit: no second page
        return True

    try:
        await run_until(second, resumed_and_quiet)
        assert len(_system(hook, "monitoring_down")) == 2
        broker.start()
        third = Runtime(load_config(config), env={})
        await run_until(third, lambda: len(_system(hook, "monitoring_restored")) == 2)
    finally:
        broker.stop()
    restored = _system(hook, "monitoring_restored")
    assert {p["responder"] for p in restored} == {"ana", "rui"}
    assert {p["outage"] for p in restored} == {down[0]["outage"]}
    assert len(_system(hook, "monitoring_down")) == 2
