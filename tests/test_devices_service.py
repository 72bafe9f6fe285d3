"""Off-the-shelf device payloads through the running service, against a real Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from monitor.config import load_config
from monitor.runtime import Runtime
from tests.mosquitto import Mosquitto, Publish, free_port
from tests.service import Webhook, eventually, write_config

pytestmark = pytest.mark.integration

DEVICES = """
[[devices]]
id = "b1-button"
source = "zigbee2mqtt"
topic = "zigbee2mqtt/b1-button"
booth = "b1"
role = "call_button"

[[devices]]
id = "b1-radar"
source = "zigbee2mqtt"
topic = "zigbee2mqtt/b1-radar"
booth = "b1"
role = "motion"

[[devices]]
id = "b1-door"
source = "zigbee2mqtt"
topic = "zigbee2mqtt/b1-door"
booth = "b1"
role = "door"

[[devices]]
id = "b2-call"
source = "esphome"
topic = "b2node/binary_sensor/call/state"
booth = "b2"
role = "call_button"

[[devices]]
id = "b2-motion"
source = "esphome"
topic = "b2node/binary_sensor/pir/state"
booth = "b2"
role = "motion"

[[devices]]
id = "b2-tasmota"
source = "tasmota"
topic = "b2-button"
booth = "b2"
role = "call_button"

[[devices]]
id = "b2-shelly"
source = "shelly"
topic = "shellyplus1-b2"
booth = "b2"
role = "call_button"

[[devices]]
id = "b2-shelly1"
source = "shelly"
topic = "shellies/shelly1-b2"
booth = "b2"
role = "presence_button"
"""


@contextlib.asynccontextmanager
async def service(
    tmp_path: Path, broker: Mosquitto, hook: Webhook, devices: str = DEVICES,
    device_timeout: str = "15m", **config: str
) -> AsyncIterator[Runtime]:
    path = write_config(tmp_path / "boothwatch.toml", mqtt_port=broker.port,
                        http_port=free_port(), webhook_url=hook.url,
                        db=tmp_path / "boothwatch.db", **config)
    text = path.read_text().replace('device_timeout = "15m"',
                                    f'device_timeout = "{device_timeout}"')
    if devices is DEVICES:
        text = text.replace('id = "b1"\nname = "Booth 1"',
                            'id = "b1"\nname = "Booth 1"\noccupancy_from = "door"')
    path.write_text(text + devices)
    runtime = Runtime(load_config(path), env={}, retry_delays=(0.05,))
    task = asyncio.create_task(runtime.run())
    try:
        await asyncio.wait_for(runtime.started.wait(), 10)
        await eventually(lambda: runtime.mqtt.ready, 10)
        yield runtime
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def _booth(runtime: Runtime, booth: str) -> dict[str, object]:
    return next(b for b in runtime.booths_json() if b["booth"] == booth)


async def test_every_firmware_button_pages_a_call(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Zigbee2MQTT, ESPHome, Tasmota and Shelly buttons each raise a call that pages."""
    async with Webhook() as hook, service(tmp_path, mosquitto, hook, step2="1h") as rt:
        mqtt_publish("zigbee2mqtt/b1-button", '{"action":"single","battery":97,"linkquality":120}')
        page = (await hook.wait(1))[0]
        assert (page["booth"], page["triggers"], page["priority"]) == ("b1", ["call"], "high")

        presses = [
            ("b2node/binary_sensor/call/state", "OFF"),
            ("b2node/binary_sensor/call/state", "ON"),  # the OFF -> ON edge is a press
            ("stat/b2-button/RESULT", '{"Button1":{"Action":"SINGLE"}}'),
            ("shellyplus1-b2/events/rpc", json.dumps({"method": "NotifyEvent", "params": {
                "events": [{"component": "input:0", "event": "single_push"}]}})),
        ]
        for topic, payload in presses:
            mqtt_publish(topic, payload)
        page = (await hook.wait(2))[1]
        assert (page["booth"], page["triggers"]) == ("b2", ["call"])
        await asyncio.sleep(0.3)
        incidents, _total = await rt.incidents_json(open_only=True)
        b2 = next(i for i in incidents if i["booth"] == "b2")
        repeats = [e for e in b2["timeline"] if e["kind"] == "trigger" and e.get("repeated")]
        assert len(repeats) == 2  # Tasmota and Shelly folded into the same incident
        mqtt_publish("shellies/shelly1-b2/input_event/0", '{"event":"S","event_cnt":1}')
        await eventually(lambda: _booth(rt, "b2")["incident"]["state"] == "attended")


async def test_fp1e_no_movement_behind_a_closed_door_pages_unresponsive(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Door closes, FP1E sees a person who stops moving: unresponsive; no_presence keeps it."""
    async with Webhook() as hook, service(tmp_path, mosquitto, hook, stillness="2s") as rt:
        mqtt_publish("zigbee2mqtt/b1-door", '{"contact":false,"battery":90}')
        mqtt_publish("zigbee2mqtt/b1-door", '{"contact":true,"battery":90}')
        mqtt_publish("zigbee2mqtt/b1-radar",
                     '{"presence":true,"movement":"movement","target_distance":0.8}')
        await eventually(lambda: _booth(rt, "b1")["occupied"])
        mqtt_publish("zigbee2mqtt/b1-radar",
                     '{"presence":true,"movement":"no_movement","target_distance":0.8}')
        await asyncio.sleep(0.5)
        mqtt_publish("zigbee2mqtt/b1-radar",
                     '{"presence":false,"movement":"no_presence","target_distance":0}')
        page = (await hook.wait(1, timeout=8))[0]
        assert (page["booth"], page["triggers"], page["priority"]) == (
            "b1", ["unresponsive"], "high")
        assert _booth(rt, "b1")["occupied"] is True  # no_presence did not end the session


async def test_availability_offline_of_occupied_booth_sensor_pages_high(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """z2m availability offline for the occupied booth's radar: device_offline, high."""
    async with Webhook() as hook, service(tmp_path, mosquitto, hook) as rt:
        mqtt_publish("zigbee2mqtt/b1-radar", '{"presence":true,"movement":"movement"}')
        mqtt_publish("zigbee2mqtt/b1-door", '{"contact":true}')
        await eventually(lambda: _booth(rt, "b1")["occupied"])
        mqtt_publish("zigbee2mqtt/b1-radar/availability", '{"state":"offline"}', retain=True)
        page = (await hook.wait(1))[0]
        assert (page["triggers"], page["priority"]) == (["device_offline"], "high")
        assert _booth(rt, "b1")["unmonitored"] is True
        mqtt_publish("zigbee2mqtt/b1-radar/availability", "online", retain=True)  # 1.x form
        await eventually(lambda: _booth(rt, "b1")["incident"] is None)


async def test_retained_button_message_on_restart_pages_nothing(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """A button state retained on the broker is replayed on subscribe: it is not a press."""
    mqtt_publish("zigbee2mqtt/b1-button", '{"action":"single","battery":97}', retain=True)
    mqtt_publish("stat/b2-button/RESULT", '{"Button1":{"Action":"SINGLE"}}', retain=True)
    async with Webhook() as hook, service(tmp_path, mosquitto, hook) as rt:
        await asyncio.sleep(1.0)
        assert hook.pages == []
        assert await rt.incidents_json(open_only=False) == ([], 0)


async def test_garbage_on_a_device_topic_is_counted(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """A broken device payload is rejected and counted; the next real press still pages."""
    async with Webhook() as hook, service(tmp_path, mosquitto, hook) as rt:
        mqtt_publish("zigbee2mqtt/b1-button", b"\xff\xfe")
        mqtt_publish("stat/b2-button/RESULT", "{not json")
        mqtt_publish("zigbee2mqtt/b1-button", '{"action":"double"}')
        page = (await hook.wait(1))[0]
        assert page["booth"] == "b1"
        text = rt.metrics.render().decode()
        rejected = [line for line in text.splitlines()
                    if line.startswith("boothwatch_events_rejected_total{")]
        assert sum(float(line.rsplit(" ", 1)[1]) for line in rejected) == 2


CANONICAL = """
[[devices]]
id = "b2-sensor"
source = "canonical"
topic = "boothwatch/lisbon-1/booths/b2/events"
booth = "b2"
role = "motion"
"""


async def test_canonical_device_heartbeats_keep_it_online_silence_does_not(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """A canonical device is alive while it sends events; silent past its timeout it pages."""
    async with Webhook() as hook, service(tmp_path, mosquitto, hook, devices=CANONICAL,
                                          device_timeout="1.5s") as rt:
        topic = "boothwatch/lisbon-1/booths/b2/events"
        for _ in range(4):
            # a mains-powered sensor (no battery): it may be silent for device_timeout only
            mqtt_publish(topic, '{"kind":"heartbeat","device":"b2-sensor"}')
            await asyncio.sleep(0.5)
        assert hook.pages == []
        device = next(d for d in rt.core.device_views() if d.id == "b2-sensor")
        assert device.online and device.last_seen is not None
        page = (await hook.wait(1, timeout=4))[0]
        assert (page["booth"], page["triggers"], page["priority"]) == (
            "b2", ["device_offline"], "low")
