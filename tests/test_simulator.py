"""`boothwatch sim`: encoders the adapters read back, scenarios, configs, the real process."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
import threading
import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from devices import adapters
from devices import encoders as enc
from devices import simulator as sim
from devices.adapters.canonical import Parsed, parse_event, parse_topic
from devices.adapters.payload import Rejected
from monitor.config import parse_config
from monitor.core.devices import DeviceRegistry
from monitor.core.events import Button, Door, Heartbeat, MotionState, Occupancy, Press
from monitor.core.events import Motion as MotionEvent
from monitor.core.readings import PRESS_TYPES, Reading
from monitor.core.settings import BoothConfig, DeviceConfig
from tests.harness.broker import Mosquitto

ROOT = Path(__file__).resolve().parent.parent

ACTIONS: list[enc.Action] = [
    *(enc.Press(p) for p in PRESS_TYPES),
    *(enc.Motion(s) for s in ("moving", "still", "absent")),
    enc.Occupancy(True), enc.Occupancy(False),
    enc.Door(open=True), enc.Door(open=False),
    enc.Online(True), enc.Online(False),
    enc.Battery(55), enc.Battery(10),
]


def _kind(action: enc.Action) -> str:
    match action:
        case enc.Press(type=press):
            return f"press:{press}"
        case _:
            return type(action).__name__.lower()


_ALL_PRESSES = {f"press:{p}" for p in PRESS_TYPES}
_FOUR_PRESSES = {"press:single", "press:double", "press:triple", "press:hold"}
# what each simulated device can say, by (model, role): the encoders must not fall silent
SUPPORTED: dict[tuple[str, str], set[str]] = {
    ("wxkg11lm", "call_button"): _ALL_PRESSES | {"online", "battery"},
    ("mccgq11lm", "door"): {"door", "online", "battery"},
    ("fp1e", "motion"): {"motion", "online"},
    ("zy-m100", "motion"): {"motion", "online"},
    ("esphome", "call_button"): {"press:single", "online"},
    ("esphome", "door"): {"door", "online"},
    ("esphome", "motion"): {"motion", "online"},
    ("tasmota-button", "call_button"): _ALL_PRESSES | {"online"},
    ("tasmota-switch", "door"): {"door", "online"},
    ("tasmota-switch", "motion"): {"motion", "online"},
    ("shelly-gen2", "call_button"): _FOUR_PRESSES | {"online"},
    ("shelly-gen1", "call_button"): _FOUR_PRESSES | {"online"},
    # canonical: no door, and offline is silence; online and battery are heartbeats
    ("canonical", "call_button"): _ALL_PRESSES - {"press:release"} | {"online", "battery"},
    ("canonical", "occupancy"): {"occupancy", "online", "battery"},
    ("canonical", "motion"): {"motion", "online", "battery"},
}
BINARY_MODELS = {"esphome", "tasmota-switch"}


def _every_device() -> Iterator[enc.SimDevice]:
    """Each format's devices for two booths (Shelly alternates generations), and the radar."""
    for fmt in sim.FORMATS:
        yield from sim.sim_devices(fmt, 2, site="s")
    yield from (d for d in sim.sim_devices("zigbee2mqtt", 1, scenario="flappy")
                if d.model == "zy-m100")


DEVICES = list(_every_device())


def _id(device: enc.SimDevice) -> str:
    return f"{device.source}:{device.id}:{device.model}"


# --- encoders, read back by the service's adapters -------------------------------------


@pytest.mark.parametrize("device", DEVICES, ids=_id)
def test_every_device_says_what_its_firmware_can(device: enc.SimDevice) -> None:
    """Each device encodes exactly the actions its firmware has words for."""
    said = {_kind(a) for a in ACTIONS if enc.encode(device, a)}
    assert said == SUPPORTED[(device.model, device.role)]


def _readings(device: enc.SimDevice, wires: list[enc.Wire]) -> list[list[Reading]]:
    config = DeviceConfig(**device.config())  # type: ignore[arg-type]  # checked by the config, not here
    subscribed = adapters.topics(config)
    out = []
    for wire in wires:
        assert wire.topic in subscribed, (wire.topic, subscribed)
        result = adapters.decode(config, wire.topic, wire.payload, wire.retain)
        assert not isinstance(result, Rejected), (wire, result)
        out.append(result)
    return out


def _motion_read(device: enc.SimDevice, state: str) -> str:
    """A binary sensor cannot tell a still person from nobody: still goes out as OFF."""
    return "absent" if device.model in BINARY_MODELS and state == "still" else state


@pytest.mark.parametrize("device", [d for d in DEVICES if d.source != "canonical"], ids=_id)
def test_adapters_read_every_encoding_back(device: enc.SimDevice) -> None:
    """What a device publishes for an action, its adapter reads as that action."""
    for action in ACTIONS:
        wires = enc.encode(device, action, battery=80, n=3)
        if not wires:
            continue
        readings = _readings(device, wires)
        flat = [r for rs in readings for r in rs]
        match action:
            case enc.Press(type=press) if device.model == "esphome":
                assert [w.payload for w in wires] == [b"ON", b"OFF"]  # pressed, released
                assert flat == [Reading(binary=True), Reading(binary=False)]
            case enc.Press(type=press):
                assert [r.press for r in flat] == [press], action
            case enc.Motion(state=state) if device.model in BINARY_MODELS:
                assert flat == [Reading(binary=state == "moving")], action
            case enc.Motion(state=state):
                assert [(r.motion, r.occupancy) for r in flat] == [
                    (MotionState(state), state != "absent")
                ], action
            case enc.Door(open=is_open) if device.model in BINARY_MODELS:
                assert flat == [Reading(binary=is_open)], action  # ON = open
            case enc.Door(open=is_open):
                assert [r.contact for r in flat] == [not is_open], action
            case enc.Online(online=online):
                assert flat[0] == Reading(online=online), action
            case enc.Battery(percent=percent):
                assert [r.battery for r in flat] == [percent], action
            case _:
                pytest.fail(f"{device.id} said {action} but nobody reads it")
        assert all(not w.retain for w in wires) or not isinstance(action, enc.Press)


@pytest.mark.parametrize("device", [d for d in DEVICES if d.source != "canonical"], ids=_id)
def test_registry_turns_every_encoding_into_the_same_event(device: enc.SimDevice) -> None:
    """Through the adapter and the device registry, each action means what it meant."""
    booth = BoothConfig(device.booth, "Booth", 1200.0, 180.0, 900.0, occupancy_from="door")
    config = DeviceConfig(**device.config())  # type: ignore[arg-type]  # checked by the config, not here
    b, d = device.booth, device.id
    for action in ACTIONS:
        wires = enc.encode(device, action, battery=80)
        if not wires:
            continue
        registry = DeviceRegistry((config,), {b: booth}, now=0.0)
        # the device came online first, as the simulator has it do (an ESPHome button
        # reports OFF then, the edge its presses start from)
        for wire in enc.encode(device, enc.Online(True)):
            for reading in _readings(device, [wire])[0]:
                registry.handle(d, reading, wire.retain, 0.0)
        events: list[Any] = []
        health: list[str] = []
        for wire in wires:
            for reading in _readings(device, [wire])[0]:
                got, changes = registry.handle(d, reading, wire.retain, 1.0)
                events += got
                health += [change.kind for change in changes]
        match action:
            case enc.Press(type="release"):
                expected: list[Any] = []
            case enc.Press():
                expected = [Button(b, Press.CALL, device=d)]
            case enc.Motion(state=state):
                expected = [MotionEvent(b, MotionState(_motion_read(device, state)), device=d)]
            case enc.Door(open=is_open):
                expected = [Door(b, closed=not is_open, device=d)]
            case _:
                expected = []
        assert events == expected, action
        match action:
            case enc.Online(online=False):
                assert health == ["offline"]
            case enc.Battery(percent=10):
                assert health == ["low_battery"]
            case _:
                assert health == [], action


@pytest.mark.parametrize("device", [d for d in DEVICES if d.source == "canonical"], ids=_id)
def test_canonical_encodings_parse_as_the_same_events(device: enc.SimDevice) -> None:
    """Canonical devices publish interface section 4 events the service parses back."""
    b, d = device.booth, device.id
    for action in ACTIONS:
        wires = enc.encode(device, action, event_id="e1")
        if not wires:
            continue
        [wire] = wires
        assert parse_topic(wire.topic, "s") == b and not wire.retain
        parsed = parse_event(b, wire.payload, {b})
        assert isinstance(parsed, Parsed), parsed
        assert (parsed.event_id, parsed.device) == ("e1", d)
        match action:
            case enc.Press(type=press):
                assert parsed.event == Button(b, Press.CALL, device=d)
                assert press != "release"
            case enc.Motion(state=state):
                assert parsed.event == MotionEvent(b, MotionState(state), device=d)
            case enc.Occupancy(occupied=occupied):
                assert parsed.event == Occupancy(b, occupied, device=d)
            case enc.Online(online=True):
                assert parsed.event == Heartbeat(b, device=d)
            case enc.Battery(percent=percent):
                assert parsed.event == Heartbeat(b, percent, device=d)
            case _:
                pytest.fail(f"{d} said {action}")


def test_a_presence_button_says_presence_or_clear_in_canonical() -> None:
    """single -> presence, double and hold -> clear, release -> nothing."""
    device = enc.SimDevice("b1-staff", "canonical", "canonical", "boothwatch/s/booths/b1/events",
                           "b1", "presence_button")
    said = {p: [json.loads(w.payload)["press"] for w in enc.encode(device, enc.Press(p))]
            for p in ("single", "double", "hold", "release")}
    assert said == {"single": ["presence"], "double": ["clear"], "hold": ["clear"],
                    "release": []}


def test_zigbee2mqtt_payloads_look_like_the_firmware() -> None:
    """The documented shapes, with the state cache's battery and link quality repeated."""
    button, door, presence = sim.sim_devices("zigbee2mqtt", 1)
    [press] = enc.encode(button, enc.Press("single"), battery=97)
    assert press.topic == "zigbee2mqtt/b1-button" and not press.retain
    body = json.loads(press.payload)
    assert (body["action"], body["battery"], type(body["linkquality"])) == ("single", 97, int)
    [still] = enc.encode(presence, enc.Motion("still"))
    assert {k: v for k, v in json.loads(still.payload).items() if k != "linkquality"} == {
        "presence": True, "movement": "no_movement", "target_distance": 0.8,
    }
    assert json.loads(enc.encode(door, enc.Door(open=True))[0].payload)["contact"] is False
    [offline] = enc.encode(presence, enc.Online(False))
    assert offline == enc.Wire("zigbee2mqtt/b1-presence/availability",
                               b'{"state":"offline"}', True)
    radar = next(d for d in sim.sim_devices("zigbee2mqtt", 1, scenario="flappy")
                 if d.role == "motion")
    body = json.loads(enc.encode(radar, enc.Motion("still"), n=0)[0].payload)
    assert (body["state"], body["presence"], body["distance"]) == ("presence", True, 0.8)
    bridge = enc.zigbee2mqtt_bridge(False)
    assert bridge == enc.Wire("zigbee2mqtt/bridge/state", b'{"state":"offline"}', True)
    config = DeviceConfig(**button.config())  # type: ignore[arg-type]  # checked by the config, not here
    assert bridge.topic in adapters.topics(config)
    assert adapters.decode(config, *bridge) == [Reading(online=False)]


def test_availability_is_retained_and_presses_are_not() -> None:
    """LWT, status and online messages are retained, as the firmwares publish them."""
    for device in DEVICES:
        if device.source == "canonical":
            continue
        for wire in enc.encode(device, enc.Online(False)):
            assert wire.retain, (device.id, wire)
        for press in PRESS_TYPES:
            assert not any(w.retain for w in enc.encode(device, enc.Press(press)))


# --- scenarios ------------------------------------------------------------------------


def _finite(scenario: str, fmt: str = "canonical", booths: int = 4, **kw: Any) -> list[sim.Sent]:
    return list(sim.traffic("s", fmt, scenario, booths, run="r1", **kw))


def test_offsets_are_divided_by_the_speed() -> None:
    """At speed 20 every message goes out at a twentieth of its time at speed 1."""
    for fmt in sim.FORMATS:
        slow, fast = _finite("mix", fmt), _finite("mix", fmt, speed=20)
        assert [s.at / 20 for s in slow] == pytest.approx([f.at for f in fast])
        assert [(s.topic, s.payload) for s in slow] == [(f.topic, f.payload) for f in fast]
        assert [s.at for s in slow] == sorted(s.at for s in slow)


@pytest.mark.parametrize("scenario", [s for s in sim.SCENARIOS if s != "load"])
def test_canonical_ids_are_unique_and_every_event_parses(scenario: str) -> None:
    """Every canonical event has its own id, and the service would take every one."""
    sent = _finite(scenario)
    booths = set(sim.booth_ids(4))
    ids = []
    for message in sent:
        booth = parse_topic(message.topic, "s")
        assert booth is not None
        parsed = parse_event(booth, message.payload, booths)
        assert isinstance(parsed, Parsed), parsed
        ids.append(parsed.event_id)
    assert len(ids) == len(set(ids)) > 0
    assert all(i is not None and i.startswith("sim-r1-") for i in ids)
    again = list(sim.traffic("s", "canonical", scenario, 4))  # a fresh run, fresh ids
    assert not {json.loads(m.payload)["id"] for m in again} & set(ids)


@pytest.mark.parametrize("rate", [10.0, 250.0])
@pytest.mark.parametrize("fmt", sim.FORMATS)
def test_load_sends_rate_messages_every_second(fmt: str, rate: float) -> None:
    """Over ten seconds of scenario time, each second holds exactly `rate` messages."""
    booths = 7
    stream = sim.traffic("s", fmt, "load", booths, rate=rate, run="r1")
    window = list(itertools.takewhile(lambda s: s.at < 11.0, stream))
    per_second = Counter(int(s.at) for s in window if s.at >= sim.LOAD_START)
    assert sorted(per_second) == list(range(1, 11))
    assert set(per_second.values()) == {int(rate)}
    loaded = [s for s in window if s.at >= sim.LOAD_START]
    by_booth = Counter(s.device.split("-")[0] for s in loaded)
    assert set(by_booth) == set(sim.booth_ids(booths))
    assert max(by_booth.values()) - min(by_booth.values()) <= 1  # round robin


def test_load_speed_multiplies_the_rate() -> None:
    """--speed 4 compresses load time as it does every other scenario."""
    stream = sim.traffic("s", "canonical", "load", 3, rate=50.0, speed=4.0)
    window = [s for s in itertools.takewhile(lambda s: s.at < 3.0, stream) if s.at >= 1.0]
    assert len(window) == 2 * 50 * 4


def test_mix_gives_booths_the_four_stories_in_turn() -> None:
    """b1 normal, b2 long, b3 overdose, b4 call, b5 normal again."""
    acts = list(sim.acts("mix", sim.booth_ids(6)))
    told = {a.booth: a.scenario for a in acts}
    assert told == {"b1": "normal", "b2": "long", "b3": "overdose", "b4": "call",
                    "b5": "normal", "b6": "long"}
    presses = {a.booth for a in acts if isinstance(a.action, enc.Press)}
    assert presses == {"b4"}
    for booth in ("b1", "b2", "b5", "b6"):  # the ones that leave open the door
        assert any(a.booth == booth and a.action == enc.Door(open=True) and a.at > 0
                   for a in acts)
    b3 = [a.action for a in acts if a.booth == "b3" and a.role == "motion"]
    assert b3[-1] == enc.Motion("still")  # the overdose: stillness that stays
    counts = Counter(s.scenario for s in _finite("mix", booths=6))
    assert set(counts) == {"normal", "long", "overdose", "call"}


def _session(acts: list[sim.Act], booth: str) -> tuple[float, float | None]:
    closed = [a.at for a in acts if a.booth == booth and a.action == enc.Door(open=False)]
    opened = [a.at for a in acts
              if a.booth == booth and a.action == enc.Door(open=True) and a.at > 0]
    return closed[0], (opened[0] if opened else None)


def test_scenarios_tell_their_stories() -> None:
    """Session lengths, stillness, the call, the dropped sensor, the chatty radar."""
    normal = list(sim.acts("normal", ["b1", "b2"]))
    for booth in ("b1", "b2"):
        start, end = _session(normal, booth)
        assert end is not None and 120 <= end - start <= 300  # a few minutes
        moving = [a for a in normal if a.booth == booth and a.action == enc.Motion("moving")]
        assert len(moving) >= 10
    start, end = _session(list(sim.acts("long", ["b1"])), "b1")
    assert end is not None and end - start > 20 * 60
    overdose = list(sim.acts("overdose", ["b1"]))
    motion = [(a.at, a.action) for a in overdose if a.role == "motion"]
    still_at = next(at for at, action in motion if action == enc.Motion("still"))
    assert all(action == enc.Motion("still") for at, action in motion if at >= still_at)
    assert motion[-1][0] - still_at >= 5 * 60 and _session(overdose, "b1")[1] is None
    call = list(sim.acts("call", ["b1"]))
    start, end = _session(call, "b1")
    [press] = [a for a in call if isinstance(a.action, enc.Press)]
    assert end is not None and start < press.at < end and press.role == "call_button"
    drop = list(sim.acts("device-drop", ["b1"]))
    offline = next(a.at for a in drop if a.action == enc.Online(False))
    assert a_session_holds(drop, offline)
    assert not [a for a in drop if a.role == "motion" and a.at > offline]
    flappy = [a for a in sim.acts("flappy", ["b1"]) if a.role == "motion" and 5 < a.at < 180]
    seconds = Counter(int(a.at) for a in flappy)
    assert min(seconds.values()) >= 2 and max(seconds.values()) <= 6
    assert {a.action for a in flappy} == {enc.Motion("still"), enc.Motion("moving")}


def a_session_holds(acts: list[sim.Act], at: float) -> bool:
    start, end = _session(acts, "b1")
    return end is not None and start < at < end


def test_flappy_uses_the_tuya_radar_and_device_drop_says_offline_per_format() -> None:
    """flappy talks Tuya ZY-M100; device-drop's last word from the sensor is offline."""
    flappy = _finite("flappy", "zigbee2mqtt", booths=1)
    radar = [json.loads(s.payload) for s in flappy if s.topic == "zigbee2mqtt/b1-radar"]
    assert len(radar) > 300 and {r["state"] for r in radar} >= {"presence", "move"}
    offline = {
        "zigbee2mqtt": ("zigbee2mqtt/b1-presence/availability", b'{"state":"offline"}'),
        "esphome": ("b1-radar/status", b"offline"),
        "tasmota": ("tele/b1-sensor/LWT", b"Offline"),
    }
    for fmt, (topic, payload) in offline.items():
        sent = _finite("device-drop", fmt, booths=1)
        motion = next(d for d in sim.sim_devices(fmt, 1) if d.role == "motion")
        from_sensor = [s for s in sent if s.device == motion.id]
        assert (from_sensor[-1].topic, from_sensor[-1].payload, from_sensor[-1].retain) == (
            topic, payload, True)
        assert sent[-1].at > from_sensor[-1].at  # the rest of the booth goes on


def test_every_scenario_ends_but_load() -> None:
    """Finite scenarios end by themselves; load goes on for as long as anyone reads."""
    for scenario in sim.SCENARIOS:
        stream = sim.traffic("s", "tasmota", scenario, 2)
        head = list(itertools.islice(stream, 200_000))
        assert (len(head) == 200_000) == (scenario in sim.ENDLESS), scenario


def test_bad_settings_are_reported_by_option() -> None:
    assert sim.problems("zigbee2mqtt", "call", 3, 20.0, 100.0, None, url="mqtt://h:1") == []
    found = sim.problems("xbee", "nap", 0, 0.0, math_inf(), -1.0, url="http://h")
    assert [p.split()[0] for p in found] == [
        "--mqtt:", "--format", "--scenario", "--booths", "--speed", "--rate", "--duration"]
    with pytest.raises(ValueError, match="--speed"):
        next(sim.traffic("s", "canonical", "call", 1, speed=0))


def math_inf() -> float:
    return float("inf")


# --- acknowledgements and what is printed ---------------------------------------------


def test_redact_hides_the_password_of_any_url() -> None:
    """Also of a URL urlsplit cannot take, and in the message about a bad --mqtt."""
    cases = {
        "mqtt://b1:s3cret@host:8883": "mqtt://b1:***@host:8883",
        "mqtt://b1:pa/ss#w@host:1883": "mqtt://b1:***@host:1883",
        "mqtt://b1:p@ss@host": "mqtt://b1:***@host",
        "b1:s3cret@host": "b1:***@host",
        "mqtts://b1@host:8883": "mqtts://b1@host:8883",
        "mqtt://127.0.0.1:1883": "mqtt://127.0.0.1:1883",
    }
    assert {url: sim.redact(url) for url in cases} == cases
    (problem,) = sim.problems("canonical", "call", 1, 1.0, 1.0, None,
                              url="mqtt://b1:pa/ss@host:1883")
    assert "pa/ss" not in problem and "b1:***@host:1883" in problem


def _sent(booth: str, n: int = 0) -> sim.Sent:
    topic = sim.events_topic("s", booth) if n == 0 else f"{booth}/other/{n}"
    return sim.Sent(0.0, topic, b"{}", False, "call", f"{booth}-button", booth)


def _puback(code: int) -> ReasonCode:
    return ReasonCode(PacketTypes.PUBACK, identifier=code)


def test_summary_counts_each_puback_by_reason_and_booth() -> None:
    """Accepted, refused by reason and booth, awaiting: in progress lines and the last line."""
    now = 0.0
    summary = sim._Summary(lambda: now)
    b1, b1_other, b2 = _sent("b1"), _sent("b1", 1), _sent("b2")
    for sent in (b1, b1, b1_other, b2, b2):
        summary.count(sent)
    assert summary.settle(b1, _puback(0x00)) is None
    assert summary.settle(b1, _puback(0x10)) is None  # accepted, with nobody subscribed
    assert summary.settle(b2, _puback(0x87)) == (
        "refused: b2-button on boothwatch/s/booths/b2/events: Not authorized (0x87); "
        "later ones on this topic are only counted")
    assert summary.settle(b1_other, _puback(0x97)) is not None  # another reason
    now = 5.0
    assert summary.line() == (
        "[    5.0s] sent 5 (call 5), 1.0/s, last 5s 1.0/s; accepted 2 (1 with no subscriber: "
        "nothing read them), refused 2 (Not authorized: b2 1; Quota exceeded: b1 1), "
        "awaiting ack 1")
    assert not summary.ok
    assert summary.settle(b2, _puback(0x87)) is None  # the topic was named once
    now = 10.0
    assert summary.line(final="done") == (
        "done: sent 5 in 10.0s (call 5), 0.5/s; accepted 2 (1 with no subscriber: nothing "
        "read them), refused 3 (Not authorized: b2 2; Quota exceeded: b1 1)")


def test_summary_is_ok_only_when_everything_sent_was_accepted() -> None:
    """Unacknowledged publishes fail a run; refusals name five booths and count the rest;
    over MQTT 3.1.1 an ack is not called an acceptance."""
    summary = sim._Summary(lambda: 1.0)
    sent = [_sent(f"b{i}") for i in range(1, 8)]
    for s in sent:
        summary.count(s)
    for s in sent[:6]:
        summary.settle(s, _puback(0x00))
    assert not summary.ok
    assert summary.line(final="stopped").endswith("; accepted 6, never acknowledged 1")
    summary.settle(sent[6], _puback(0x00))
    assert summary.ok

    refused = sim._Summary(lambda: 1.0)
    for s in sent:
        refused.count(s)
        refused.settle(s, _puback(0x87))
    assert refused.line(final="done").endswith(
        "; accepted 0, refused 7 (Not authorized: b1 1, b2 1, b3 1, b4 1, b5 1 and 2 more)")

    blind = sim._Summary(lambda: 1.0, "3.1.1")
    blind.count(sent[0])
    blind.settle(sent[0], _puback(0x00))
    assert blind.ok and blind.line(final="done").endswith("; acked 1")


# --- configs --------------------------------------------------------------------------


def _site(fmt: str, booths: int, devices: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "site": {"id": "s", "name": "Sim site", "timezone": "Europe/Lisbon"},
        "mqtt": {"url": "mqtt://127.0.0.1:1883", "client_id": "boothwatch-s"},
        "store": {"path": "boothwatch.db"},
        "http": {"listen": "127.0.0.1:8080", "public_url": "http://127.0.0.1:8080"},
        "booths": [{"id": b, "name": f"Booth {b}", **sim.booth_overrides(fmt)}
                   for b in sim.booth_ids(booths)],
        "devices": devices,
        "channels": {"screen": {"type": "console"}},
        "responders": [{"id": "ana", "name": "Ana", "roles": ["nurse"], "channels": ["screen"]}],
        "escalation": {p: {"steps": [{"after": 0, "notify": ["role:nurse"]}]}
                       for p in ("high", "medium", "low")},
    }


@pytest.mark.parametrize("scenario", [None, "flappy"])
@pytest.mark.parametrize("fmt", sim.FORMATS)
def test_devices_config_passes_parse_config(fmt: str, scenario: str | None) -> None:
    """The entries and booth overrides are all a config needs; the service takes them."""
    entries = sim.devices_config(fmt, 3, scenario=scenario)
    assert all(set(e) == {"id", "source", "topic", "booth", "role"} for e in entries)
    config = parse_config(_site(fmt, 3, entries), {})
    assert [d.id for d in config.devices] == [e["id"] for e in entries]
    assert {b.occupancy_from for b in config.booths} == (
        {"door"} if fmt in sim.DOOR_FORMATS else {"sensor"})
    for device in config.devices:
        adapters.topics(device)  # the adapter takes every topic
    if fmt == "canonical":
        assert entries == []


@pytest.mark.parametrize("fmt", sim.FORMATS)
def test_print_devices_is_toml_a_config_takes(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`sim --print-devices` prints [[booths]] and [[devices]] that parse as they are."""
    from monitor.cli import main

    assert main(["sim", "--format", fmt, "--booths", "2", "--print-devices"]) == 0
    printed = tomllib.loads(capsys.readouterr().out)
    assert printed["devices"] if fmt != "canonical" else "devices" not in printed
    site = _site(fmt, 2, printed.get("devices", []))
    site["booths"] = printed["booths"]
    parse_config(site, {})


def test_sim_without_scenario_or_site_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from monitor.cli import main

    assert main(["sim", "--format", "esphome", "--booths", "2"]) == 2
    err = capsys.readouterr().err
    assert "--site is required" in err and "--scenario is required" in err


# --- the real process -----------------------------------------------------------------


class _Subscriber:
    """A paho client that records every message on every topic, with its retain flag."""

    def __init__(self, broker: Mosquitto) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        subscribed = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

        def on_connect(c: mqtt.Client, _u: Any, _f: Any, _r: Any, _p: Any) -> None:
            c.subscribe("#", qos=1)

        def on_subscribe(_c: mqtt.Client, _u: Any, _m: Any, _r: Any, _p: Any) -> None:
            subscribed.set()

        def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
            with self.lock:
                self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.connect(broker.host, broker.port)
        client.loop_start()
        assert subscribed.wait(5), "no SUBACK"
        self.client = client

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def topics(self) -> set[str]:
        with self.lock:
            return {topic for topic, _, _ in self.messages}


async def _sim(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor.cli", "sim", *args,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("BOOTHWATCH_")},
    )


@pytest.mark.integration
async def test_sim_publishes_a_zigbee2mqtt_call_and_ends_cleanly(mosquitto: Mosquitto) -> None:
    """The documented topics arrive at the broker, the call press among them; exit 0."""
    subscriber = _Subscriber(mosquitto)
    try:
        proc = await _sim("--mqtt", mosquitto.url, "--site", "s", "--booths", "3",
                          "--format", "zigbee2mqtt", "--scenario", "call", "--speed", "20")
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        await asyncio.sleep(0.5)  # the last deliveries to the subscriber
    finally:
        subscriber.close()
    documented = {d["topic"] for d in sim.devices_config("zigbee2mqtt", 3)}
    expected = documented | {f"{t}/availability" for t in documented}
    expected.add("zigbee2mqtt/bridge/state")
    assert subscriber.topics() == expected
    presses = [json.loads(p) for t, p, r in subscriber.messages if t.endswith("-button")]
    assert [p["action"] for p in presses] == ["single"] * 3
    assert {t for t, p, retain in subscriber.messages if retain} <= {
        t for t in expected if t.endswith(("availability", "bridge/state"))}
    lines = out.decode().splitlines()
    assert lines[0].startswith("boothwatch sim: 3 zigbee2mqtt booth(s), scenario call")
    assert lines[-1].startswith(f"done: sent {len(subscriber.messages)} ")
    assert "(call " in lines[-1]


@pytest.mark.integration
async def test_sim_load_stops_on_sigint_with_exit_0(mosquitto: Mosquitto) -> None:
    """An endless load run prints its summary and stops cleanly on Ctrl-C."""
    proc = await _sim("--mqtt", mosquitto.url, "--site", "s", "--booths", "5",
                      "--format", "canonical", "--scenario", "load", "--rate", "200")
    assert proc.stdout is not None
    header = await asyncio.wait_for(proc.stdout.readline(), 10)
    assert header.startswith(b"boothwatch sim: 5 canonical booth(s), scenario load")
    summary = await asyncio.wait_for(proc.stdout.readline(), 15)
    assert b"sent" in summary and b"(load " in summary
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err.decode()
    assert out.decode().splitlines()[-1].startswith("stopped: sent ")


@pytest.mark.integration
async def test_sim_duration_bounds_a_run(mosquitto: Mosquitto) -> None:
    """--duration ends an endless scenario by itself, exit 0."""
    proc = await _sim("--mqtt", mosquitto.url, "--site", "s", "--booths", "2",
                      "--format", "esphome", "--scenario", "load", "--rate", "50",
                      "--duration", "2")
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    last = out.decode().splitlines()[-1]
    stream = sim.traffic("s", "esphome", "load", 2, rate=50.0)
    expected = len(list(itertools.takewhile(lambda s: s.at <= 2.0, stream)))
    assert last.startswith(f"done: sent {expected} ")  # startup, then 50/s from 1 s to 2 s
