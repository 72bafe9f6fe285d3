"""Decode throughput of the firmware adapters: messages per second, one line per source.

Each source decodes a realistic mix of its own traffic, cycled: for Zigbee2MQTT
mostly a chatty Tuya radar (1-6 messages a second) with a PIR, a door, a button
and availability; for the others, what their devices send between presses.
Pure CPU in one process: no broker, no service. The ingest benchmark
(bench/ingest.py) measures the whole path.

    .venv/bin/python bench/adapters.py [--messages 200000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devices import adapters
from devices.adapters.payload import Rejected
from monitor.core.settings import DeviceConfig, DeviceRole, DeviceSource

Message = tuple[DeviceConfig, str, bytes, bool]


def _device(source: DeviceSource, topic: str, role: DeviceRole) -> DeviceConfig:
    return DeviceConfig(id=topic, source=source, topic=topic, booth="b1", role=role)


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _zigbee2mqtt() -> list[Message]:
    radar = _device("zigbee2mqtt", "zigbee2mqtt/booth1-radar", "motion")
    pir = _device("zigbee2mqtt", "zigbee2mqtt/booth1-pir", "occupancy")
    door = _device("zigbee2mqtt", "zigbee2mqtt/booth1-door", "door")
    button = _device("zigbee2mqtt", "zigbee2mqtt/booth1-button", "call_button")
    tuya = [
        {"state": state, "presence": state != "none", "distance": distance, "linkquality": 156}
        for state, distance in (("move", 1.4), ("presence", 1.1), ("presence", 1.2), ("none", 0))
    ]
    return [
        *((radar, radar.topic, _json(state), False) for state in tuya * 3),
        (
            pir,
            pir.topic,
            _json(
                {
                    "occupancy": True,
                    "battery": 100,
                    "illuminance": 3,
                    "voltage": 3035,
                    "linkquality": 90,
                }
            ),
            False,
        ),
        (door, door.topic, _json({"contact": False, "battery": 91, "linkquality": 120}), False),
        (
            button,
            button.topic,
            _json({"action": "single", "battery": 97, "linkquality": 120}),
            False,
        ),
        (button, button.topic, _json({"action": "", "battery": 97, "linkquality": 120}), True),
        (door, f"{door.topic}/availability", b'{"state":"online"}', True),
        (pir, "zigbee2mqtt/bridge/state", b'{"state":"online"}', True),
    ]


def _esphome() -> list[Message]:
    door = _device("esphome", "booth1/binary_sensor/door/state", "door")
    return [
        (door, door.topic, b"ON", False),
        (door, door.topic, b"OFF", False),
        (door, door.topic, b"ON", True),
        (door, "booth1/status", b"online", True),
    ]


def _tasmota() -> list[Message]:
    t = _device("tasmota", "booth1-button", "call_button")
    sensor = {"Time": "2024-05-01T10:00:00", "Switch1": "OFF"}
    return [
        (t, "tele/booth1-button/SENSOR", _json(sensor), False),
        (t, "stat/booth1-button/RESULT", _json({"Button1": {"Action": "SINGLE"}}), False),
        (t, "stat/booth1-button/RESULT", _json({"POWER": "ON"}), False),
        (t, "tele/booth1-button/LWT", b"Online", True),
    ]


def _shelly() -> list[Message]:
    gen2 = _device("shelly", "shellyplus1-a8032ab12345", "call_button")
    gen1 = _device("shelly", "shellies/shellybutton1-E8DB84D12345", "call_button")

    def notify(method: str, params: dict[str, Any]) -> bytes:
        return _json(
            {
                "src": gen2.topic,
                "dst": f"{gen2.topic}/events",
                "method": method,
                "params": {"ts": 1714557600.12, **params},
            }
        )

    events = [
        {"component": "input:0", "id": 0, "event": event, "ts": 1714557600.1}
        for event in ("btn_down", "btn_up", "single_push")
    ]
    status = {"input:0": {"id": 0, "state": False}}
    return [
        (gen2, f"{gen2.topic}/events/rpc", notify("NotifyEvent", {"events": events}), False),
        (gen2, f"{gen2.topic}/events/rpc", notify("NotifyStatus", status), False),
        (gen2, f"{gen2.topic}/online", b"true", True),
        (gen1, f"{gen1.topic}/input_event/0", _json({"event": "S", "event_cnt": 3}), False),
        (gen1, f"{gen1.topic}/online", b"true", True),
    ]


MIXES = {
    "zigbee2mqtt": _zigbee2mqtt,
    "esphome": _esphome,
    "tasmota": _tasmota,
    "shelly": _shelly,
}


def run(source: str, mix: list[Message], count: int) -> float:
    """Messages per second decoding `count` messages of `mix`; every one must decode."""
    for message in mix:
        result = adapters.decode(*message)
        if isinstance(result, Rejected):
            raise SystemExit(f"{source}: the mix has a rejected message: {result}")
    messages = (mix * (count // len(mix) + 1))[:count]
    decode = adapters.decode
    start = time.perf_counter()
    for device, topic, payload, retained in messages:
        decode(device, topic, payload, retained)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args()
    for source in adapters.SOURCES:
        rate = run(source, MIXES[source](), args.messages)
        print(
            f"{source:12} {rate:>10,.0f} messages/s  ({1e6 / rate:.2f} µs each, "
            f"{args.messages:,} decodes)"
        )


if __name__ == "__main__":
    main()
