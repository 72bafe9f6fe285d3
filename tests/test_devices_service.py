"""Off-the-shelf device payloads through the running service, against a real Mosquitto."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from monitor.core.devices import DeviceView
from monitor.runtime import Runtime
from tests.harness.broker import Mosquitto, Publish
from tests.harness.service import HandClock, eventually, start_service
from tests.harness.site import Site, Table, device

pytestmark = pytest.mark.integration

DEVICES = [
    device("b1-button", "zigbee2mqtt", "zigbee2mqtt/b1-button", "b1", "call_button"),
    device("b1-radar", "zigbee2mqtt", "zigbee2mqtt/b1-radar", "b1", "motion"),
    device("b1-door", "zigbee2mqtt", "zigbee2mqtt/b1-door", "b1", "door"),
    device("b2-call", "esphome", "b2node/binary_sensor/call/state", "b2", "call_button"),
    device("b2-motion", "esphome", "b2node/binary_sensor/pir/state", "b2", "motion"),
    device("b2-tasmota", "tasmota", "b2-button", "b2", "call_button"),
    device("b2-shelly", "shelly", "shellyplus1-b2", "b2", "call_button"),
    device("b2-shelly1", "shelly", "shellies/shelly1-b2", "b2", "presence_button"),
]


def with_devices(devices: list[Table], device_timeout: str = "15m") -> Callable[[Site], None]:
    """The site with ``devices``; with the default ones, b1's occupancy comes from its door."""
    def edit(site: Site) -> None:
        site.devices = devices
        site.defaults["device_timeout"] = device_timeout
        if devices is DEVICES:
            site.booth("b1")["occupancy_from"] = "door"
    return edit


def _booth(runtime: Runtime, booth: str) -> dict[str, Any]:
    return next(b for b in runtime.booths_json() if b["booth"] == booth)


async def test_every_firmware_button_pages_a_call(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Zigbee2MQTT, ESPHome, Tasmota and Shelly buttons each raise a call that pages."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h",
                             edit=with_devices(DEVICES)) as svc:
        hook, rt = svc.hook, svc.runtime
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
        b2: dict[str, Any] = next(i for i in incidents if i["booth"] == "b2")
        repeats = [e for e in b2["timeline"] if e["kind"] == "trigger" and e.get("repeated")]
        assert len(repeats) == 2  # Tasmota and Shelly folded into the same incident
        mqtt_publish("shellies/shelly1-b2/input_event/0", '{"event":"S","event_cnt":1}')
        await eventually(lambda: _booth(rt, "b2")["incident"]["state"] == "attended")


async def test_fp1e_no_movement_behind_a_closed_door_pages_unresponsive(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Door closes, FP1E sees a person who stops moving: unresponsive; no_presence keeps it.
    Time is stepped by hand."""
    clock = HandClock()
    async with start_service(tmp_path, mosquitto, mqtt_publish, stillness="2s", clock=clock,
                             edit=with_devices(DEVICES)) as svc:
        rt = svc.runtime

        async def radar(payload: str) -> None:
            """Half a second on, the radar says ``payload``; return once it is taken in."""
            svc.advance(0.5)
            mqtt_publish("zigbee2mqtt/b1-radar", payload)
            await eventually(lambda: next(d for d in rt.core.device_views()
                                          if d.id == "b1-radar").last_seen == clock.now)

        mqtt_publish("zigbee2mqtt/b1-door", '{"contact":false,"battery":90}')
        mqtt_publish("zigbee2mqtt/b1-door", '{"contact":true,"battery":90}')
        await radar('{"presence":true,"movement":"movement","target_distance":0.8}')
        await eventually(lambda: _booth(rt, "b1")["occupied"])
        await radar('{"presence":true,"movement":"no_movement","target_distance":0.8}')
        await radar('{"presence":false,"movement":"no_presence","target_distance":0}')
        svc.advance(8)  # the readings' debounce, then stillness
        page = (await svc.hook.wait(1))[0]
        assert (page["booth"], page["triggers"], page["priority"]) == (
            "b1", ["unresponsive"], "high")
        assert _booth(rt, "b1")["occupied"] is True  # no_presence did not end the session


async def test_availability_offline_of_occupied_booth_sensor_pages_high(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """z2m availability offline for the occupied booth's radar: device_offline, high."""
    async with start_service(tmp_path, mosquitto, mqtt_publish,
                             edit=with_devices(DEVICES)) as svc:
        hook, rt = svc.hook, svc.runtime
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
    async with start_service(tmp_path, mosquitto, mqtt_publish,
                             edit=with_devices(DEVICES)) as svc:
        hook, rt = svc.hook, svc.runtime
        await asyncio.sleep(1.0)
        assert hook.pages == []
        assert await rt.incidents_json(open_only=False) == ([], 0)


async def test_garbage_on_a_device_topic_is_counted(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """A broken device payload is rejected and counted; the next real press still pages."""
    async with start_service(tmp_path, mosquitto, mqtt_publish,
                             edit=with_devices(DEVICES)) as svc:
        hook, rt = svc.hook, svc.runtime
        mqtt_publish("zigbee2mqtt/b1-button", b"\xff\xfe")
        mqtt_publish("stat/b2-button/RESULT", "{not json")
        mqtt_publish("zigbee2mqtt/b1-button", '{"action":"double"}')
        page = (await hook.wait(1))[0]
        assert page["booth"] == "b1"
        text = rt.metrics.render().decode()
        rejected = [line for line in text.splitlines()
                    if line.startswith("boothwatch_events_rejected_total{")]
        assert sum(float(line.rsplit(" ", 1)[1]) for line in rejected) == 2


CANONICAL = [device("b2-sensor", "canonical", "boothwatch/lisbon-1/booths/b2/events", "b2",
                    "motion")]


async def test_canonical_device_heartbeats_keep_it_online_silence_does_not(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """A canonical device is alive while it sends events; silent past its timeout it pages.
    Time is stepped by hand."""
    clock = HandClock()
    async with start_service(tmp_path, mosquitto, mqtt_publish, clock=clock,
                             edit=with_devices(CANONICAL, device_timeout="1.5s")) as svc:
        topic = "boothwatch/lisbon-1/booths/b2/events"

        def sensor() -> DeviceView:
            return next(d for d in svc.runtime.core.device_views() if d.id == "b2-sensor")

        for _ in range(4):
            # a mains-powered sensor (no battery): it may be silent for device_timeout only
            mqtt_publish(topic, '{"kind":"heartbeat","device":"b2-sensor"}')
            await eventually(lambda: sensor().last_seen == clock.now)
            svc.advance(0.5)
        assert svc.hook.pages == []
        assert sensor().online and sensor().last_seen is not None
        svc.advance(0.9)  # silent 1.4 s
        assert sensor().online
        svc.advance(0.1)
        page = (await svc.hook.wait(1))[0]
        assert (page["booth"], page["triggers"], page["priority"]) == (
            "b2", ["device_offline"], "low")
