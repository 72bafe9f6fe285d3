"""Simulated booth devices: scenarios of timed events, played over MQTT.

Two layers share the publishing code at the bottom.

**Canonical steps** (what `boothwatch demo` plays). A scenario is an iterable of
`Step`s in order of `at`, the seconds from its start at speed 1: which booth
says what. The builders below tell the usual stories; `delayed` shifts one,
`merge` interleaves several, and `heartbeats` never ends. `messages` turns a
scenario into what goes on the wire (interface section 4): times divided by the
speed, and every event given an `id` and a `device`. `play` publishes those at
their times, QoS 1, until the scenario ends or the task is cancelled; scenarios
are read lazily, so an endless one is fine.

**Device traffic** (what `boothwatch sim` plays). `acts` tells a named scenario
(`SCENARIOS`) for booths ``b1..bN`` as `Act`s: a device role of a booth doing a
semantic action (`devices.encoders`). `traffic` gives each act to that booth's
device in the chosen format (`FORMATS`) and yields the MQTT messages the
firmware would publish, as `Sent`, times divided by the speed; an act the
format has no device for (a door in a canonical site) is skipped. `run_sim`
publishes them and prints a summary every few seconds.

**Acknowledgements.** Everything goes out at QoS 1, and every PUBACK is checked.
With MQTT 5 (the default) a broker says in the PUBACK when it refused a publish
(Mosquitto: "Not authorized", 0x87, when the ACL does not let the account write
the topic); `run_sim` counts those by reason and booth, prints the first one of
each topic as it comes, and ends with status 1 when any was refused or never
acknowledged. MQTT 3.1.1 has no way to say so: Mosquitto acknowledges a denied
publish and drops it, so there a refusal cannot be seen. Nothing printed shows a
password: URLs are shown by `redact`.

Booth ``b{i}`` has these devices (``devices_config`` gives their ``[[devices]]``
entries, ``booth_overrides`` what each ``[[booths]]`` entry needs with them):

| format | device id | role | model | `topic` |
|---|---|---|---|---|
| zigbee2mqtt | `b{i}-button` | call_button | Aqara WXKG11LM | `zigbee2mqtt/b{i}-button` |
| | `b{i}-door` | door | Aqara MCCGQ11LM | `zigbee2mqtt/b{i}-door` |
| | `b{i}-presence` | motion | Aqara FP1E | `zigbee2mqtt/b{i}-presence` |
| | `b{i}-radar` | motion | Tuya ZY-M100 | `zigbee2mqtt/b{i}-radar` (`flappy`) |
| esphome | `b{i}-button` | call_button | node `b{i}` | `b{i}/binary_sensor/button/state` |
| | `b{i}-door` | door | node `b{i}` | `b{i}/binary_sensor/door/state` |
| | `b{i}-motion` | motion | node `b{i}-radar` | `b{i}-radar/binary_sensor/motion/state` |
| tasmota | `b{i}-button` | call_button | `Button1` | `b{i}-button` |
| | `b{i}-door` | door | `Switch1`, ON = open | `b{i}-door` |
| | `b{i}-sensor` | motion | `Switch1`, ON = moving | `b{i}-sensor` |
| shelly | `b{i}-button` | call_button | Plus i4 (Gen2), odd i | `b{i}-button` |
| | `b{i}-button` | call_button | Button1 (Gen1), even i | `shellies/b{i}-button` |
| | `b{i}-occupancy` | occupancy | canonical event | none: no entry |
| | `b{i}-motion` | motion | canonical event | none: no entry |
| canonical | `b{i}-button` | call_button | canonical event | none: no entry |
| | `b{i}-occupancy` | occupancy | canonical event | none: no entry |
| | `b{i}-motion` | motion | canonical event | none: no entry |

Canonical devices publish on ``boothwatch/<site>/booths/b{i}/events`` with
``device`` set to their id. In `flappy`, a Zigbee2MQTT booth has the chatty Tuya
radar instead of the FP1E. A Zigbee2MQTT site also has ``zigbee2mqtt/bridge/state``.
Shelly makes no sensor that boothwatch reads, so a Shelly site's sensors speak the
canonical event.

Zigbee2MQTT, ESPHome and Tasmota booths are door booths (``occupancy_from =
"door"``, Brave's design: the door closing with presence following starts a
session, the door opening ends it, so a radar that loses a still person cannot
end it); Shelly and canonical booths start and end sessions on occupancy events.

Scenarios (seconds at speed 1; booth ``b{i}`` starts ``5 * (i - 1)`` s after
``b1``; every device first says it is online and reports the empty booth):

| scenario | story per booth | ends |
|---|---|---|
| `normal` | a session of 2.5-4.5 min, moving (reports every 10 s), then leaving | yes |
| `long` | a session of 22-25 min, moving throughout, then leaving | yes |
| `overdose` | 90 s of movement, then still, re-reported every minute for 10 min | yes |
| `call` | a 2 min session; the call button is pressed 30 s in | yes |
| `device-drop` | a 4 min session; 60 s in the motion sensor goes offline and silent | yes |
| `flappy` | a 3 min session with a chatty mmWave: 2-6 messages a second, still / moving | yes |
| `load` | a steady stream of motion reports, `rate` a second over all booths, round robin | no |
| `mix` | booths take `normal`, `long`, `overdose`, `call` in turn | yes |

Battery devices check in every 5 minutes with their battery (a canonical
device with a heartbeat). Everything except `play` and `run_sim` is pure, so a
scenario can be checked without a broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import math
import os
import random
import secrets
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, TextIO, TypeVar
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from devices import encoders as enc
from devices.encoders import Action, Battery, Door, Motion, Occupancy, Online, Press, Role

log = structlog.get_logger(__name__)

Protocol = Literal["5", "3.1.1"]
T = TypeVar("T")  # what a publish was made from, handed back with its PUBACK
CONNECT_TIMEOUT = 10.0
DRAIN_TIMEOUT = 5.0  # at the end of a finite scenario, wait this long for the last PUBACKs
NO_MATCHING_SUBSCRIBERS = 0x10  # MQTT 5 PUBACK: accepted, but nobody subscribed to it


@dataclass(frozen=True, slots=True)
class Step:
    at: float  # seconds from the start of the scenario, at speed 1
    booth: str
    payload: Mapping[str, Any]  # a canonical event without `id` and `device`


@dataclass(frozen=True, slots=True)
class Message:
    at: float  # seconds from the start of playing, at the chosen speed
    topic: str
    payload: bytes
    step: Step  # what it was made from


# --- events ---------------------------------------------------------------------------


def button(press: Literal["call", "presence", "clear"]) -> dict[str, Any]:
    return {"kind": "button", "press": press}


def occupancy(occupied: bool) -> dict[str, Any]:
    return {"kind": "occupancy", "occupied": occupied}


def motion(state: Literal["moving", "still", "absent"]) -> dict[str, Any]:
    return {"kind": "motion", "state": state}


def heartbeat(battery: int | None = None) -> dict[str, Any]:
    return {"kind": "heartbeat"} | ({} if battery is None else {"battery": battery})


# --- scenarios ------------------------------------------------------------------------


def _every(start: float, stop: float, step: float) -> Iterator[float]:
    """start, start + step, ... up to and including stop (multiplied, so no drift)."""
    return itertools.takewhile(lambda t: t <= stop, (start + i * step for i in itertools.count()))


def call(booth: str) -> list[Step]:
    """The person presses the call button."""
    return [Step(0.0, booth, button("call"))]


def overdose(booth: str, moving_for: float = 6.0, every: float = 2.0) -> list[Step]:
    """A session starts, the person moves for a while, then goes still and stays still."""
    moving = [Step(t, booth, motion("moving")) for t in _every(0.0, moving_for - every, every)]
    return [Step(0.0, booth, occupancy(True)), *moving, Step(moving_for, booth, motion("still"))]


def long_session(booth: str, duration: float = 60.0, every: float = 5.0) -> list[Step]:
    """A session with a person moving throughout, for `duration` (past the threshold)."""
    moving = [Step(t, booth, motion("moving")) for t in _every(0.0, duration, every)]
    return [Step(0.0, booth, occupancy(True)), *moving]


def normal(booth: str, stay: float = 15.0, every: float = 5.0) -> list[Step]:
    """A short session: the person moves about, then leaves."""
    moving = [Step(t, booth, motion("moving")) for t in _every(0.0, stay - every, every)]
    return [
        Step(0.0, booth, occupancy(True)),
        *moving,
        Step(stay, booth, occupancy(False)),
        Step(stay, booth, motion("absent")),
    ]


def heartbeats(booths: Sequence[str], every: float = 10.0, battery: int = 100) -> Iterator[Step]:
    """Every device says it is alive, every `every` seconds, forever."""
    for t in _every(0.0, math.inf, every):
        for booth in booths:
            yield Step(t, booth, heartbeat(battery))


def delayed(steps: Iterable[Step], by: float) -> Iterator[Step]:
    for step in steps:
        yield Step(step.at + by, step.booth, step.payload)


def merge(*scenarios: Iterable[Step]) -> Iterator[Step]:
    """One scenario in order of time; at equal times, in the order given."""
    return heapq.merge(*scenarios, key=lambda step: step.at)


# --- on the wire ----------------------------------------------------------------------


def events_topic(site: str, booth: str) -> str:
    return f"boothwatch/{site}/booths/{booth}/events"


def messages(
    site: str, steps: Iterable[Step], speed: float = 1.0, run: str | None = None
) -> Iterator[Message]:
    """The scenario as MQTT messages, with times divided by `speed`.

    Each event gets ``id`` ``sim-<run>-<booth>-<n>`` (n counts per booth from 1)
    and ``device`` ``sim-<booth>``. The service remembers ids for a day, in its
    store too, so a fresh `run` (random by default) keeps a second run against
    the same database from being dropped as duplicates.
    """
    if not (math.isfinite(speed) and speed > 0):
        raise ValueError(f"speed must be a positive number, got {speed!r}")
    run = run or secrets.token_hex(3)
    counts: dict[str, int] = {}
    for step in steps:
        n = counts[step.booth] = counts.get(step.booth, 0) + 1
        body = {**step.payload, "id": f"sim-{run}-{step.booth}-{n}", "device": f"sim-{step.booth}"}
        topic = events_topic(site, step.booth)
        yield Message(step.at / speed, topic, json.dumps(body).encode(), step)



# --- device traffic (boothwatch sim) --------------------------------------------------

Format = Literal["canonical", "zigbee2mqtt", "esphome", "tasmota", "shelly"]
FORMATS: Final[tuple[Format, ...]] = ("canonical", "zigbee2mqtt", "esphome", "tasmota", "shelly")
SCENARIOS: Final = (
    "normal", "long", "overdose", "call", "device-drop", "flappy", "load", "mix",
)
MIX: Final = ("normal", "long", "overdose", "call")  # what `mix` gives booths, in turn
ENDLESS: Final = frozenset({"load"})
DOOR_FORMATS: Final = frozenset({"zigbee2mqtt", "esphome", "tasmota"})
DEFAULT_RATE = 100.0  # load: messages a second of scenario time, over all booths
SUMMARY_EVERY = 5.0  # seconds between summary lines
CHECK_IN = 300.0  # battery devices report their battery this often
STAGGER = 5.0  # booth b{i} starts its story this much after b{i-1}
LOAD_START = 1.0  # the load stream starts after the devices said they are online


@dataclass(frozen=True, slots=True)
class Act:
    at: float  # seconds from the start of the scenario, at speed 1
    booth: str
    role: Role  # which of the booth's devices acts
    action: Action
    scenario: str  # the story this act belongs to (for `mix`, the booth's)


@dataclass(frozen=True, slots=True)
class Sent:
    at: float  # seconds from the start of playing, at the chosen speed
    topic: str
    payload: bytes
    retain: bool
    scenario: str
    device: str  # the device id ("bridge" for the Zigbee2MQTT bridge)
    booth: str | None  # None for the Zigbee2MQTT bridge


def booth_ids(booths: int) -> list[str]:
    return [f"b{i}" for i in range(1, booths + 1)]


def sim_devices(
    fmt: str, booths: int, *, site: str = "site", scenario: str | None = None
) -> list[enc.SimDevice]:
    """Every simulated device of booths b1..bN in format `fmt` (table in the module doc)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out: list[enc.SimDevice] = []
    for i, b in enumerate(booth_ids(booths), start=1):
        out.extend(_booth_devices(fmt, i, b, site, scenario))
    return out


def _booth_devices(
    fmt: str, i: int, b: str, site: str, scenario: str | None
) -> list[enc.SimDevice]:
    D = enc.SimDevice
    match fmt:
        case "zigbee2mqtt":
            z: enc.Source = "zigbee2mqtt"
            radar = (D(f"{b}-radar", z, "zy-m100", f"{z}/{b}-radar", b, "motion")
                     if scenario == "flappy"
                     else D(f"{b}-presence", z, "fp1e", f"{z}/{b}-presence", b, "motion"))
            return [
                D(f"{b}-button", z, "wxkg11lm", f"{z}/{b}-button", b, "call_button"),
                D(f"{b}-door", z, "mccgq11lm", f"{z}/{b}-door", b, "door"),
                radar,
            ]
        case "esphome":
            e: enc.Source = "esphome"
            return [
                D(f"{b}-button", e, e, f"{b}/binary_sensor/button/state", b, "call_button"),
                D(f"{b}-door", e, e, f"{b}/binary_sensor/door/state", b, "door"),
                D(f"{b}-motion", e, e, f"{b}-radar/binary_sensor/motion/state", b, "motion"),
            ]
        case "tasmota":
            t: enc.Source = "tasmota"
            return [
                D(f"{b}-button", t, "tasmota-button", f"{b}-button", b, "call_button"),
                D(f"{b}-door", t, "tasmota-switch", f"{b}-door", b, "door"),
                D(f"{b}-sensor", t, "tasmota-switch", f"{b}-sensor", b, "motion"),
            ]
        case "shelly":
            button = (D(f"{b}-button", "shelly", "shelly-gen2", f"{b}-button", b, "call_button")
                      if i % 2 else
                      D(f"{b}-button", "shelly", "shelly-gen1", f"shellies/{b}-button", b,
                        "call_button"))
            return [button, *_canonical_devices(b, site, buttons=False)]
        case _:
            return _canonical_devices(b, site, buttons=True)


def _canonical_devices(b: str, site: str, *, buttons: bool) -> list[enc.SimDevice]:
    topic = events_topic(site, b)
    c: enc.Source = "canonical"
    out = [
        enc.SimDevice(f"{b}-occupancy", c, c, topic, b, "occupancy"),
        enc.SimDevice(f"{b}-motion", c, c, topic, b, "motion"),
    ]
    if buttons:
        out.insert(0, enc.SimDevice(f"{b}-button", c, c, topic, b, "call_button"))
    return out


def devices_config(fmt: str, booths: int, *, scenario: str | None = None) -> list[dict[str, str]]:
    """The ``[[devices]]`` entries (id, source, topic, booth, role) for booths b1..bN."""
    return [
        d.config() for d in sim_devices(fmt, booths, scenario=scenario)
        if d.source != "canonical"
    ]


def booth_overrides(fmt: str) -> dict[str, str]:
    """What each ``[[booths]]`` entry needs for these devices."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return {"occupancy_from": "door"} if fmt in DOOR_FORMATS else {}


def devices_toml(fmt: str, booths: int, *, scenario: str | None = None) -> str:
    """``[[booths]]`` and ``[[devices]]`` tables to paste into a site config."""

    def table(name: str, entries: Mapping[str, str]) -> list[str]:
        return [f"[[{name}]]", *(f"{k} = {json.dumps(v)}" for k, v in entries.items()), ""]

    lines = [
        f"# boothwatch sim --format {fmt} --booths {booths}: paste into the site config",
        "# (keep your own booth names and thresholds; the booth ids must match)",
        "",
    ]
    for i, b in enumerate(booth_ids(booths), start=1):
        lines += table("booths", {"id": b, "name": f"Booth {i}", **booth_overrides(fmt)})
    entries = devices_config(fmt, booths, scenario=scenario)
    if not entries:
        lines += ["# no [[devices]]: these booths publish the canonical event", ""]
    for entry in entries:
        lines += table("devices", entry)
    return "\n".join(lines).rstrip("\n") + "\n"


# --- scenarios as acts ----------------------------------------------------------------

_Beat = tuple[float, Role, Action]  # (at, role, action) of one booth


def _startup() -> list[_Beat]:
    """Every device is online; the booth is empty, its door open."""
    roles: tuple[Role, ...] = ("call_button", "door", "occupancy", "motion")
    return [
        *((0.0, role, Online(True)) for role in roles),
        (0.0, "door", Door(open=True)),
        (0.0, "occupancy", Occupancy(False)),
        (0.0, "motion", Motion("absent")),
    ]


def _enter(t: float) -> list[_Beat]:
    """The person closes the door behind them; the sensors see them."""
    return [(t, "door", Door(open=False)), (t, "occupancy", Occupancy(True)),
            (t + 2.0, "motion", Motion("moving"))]


def _moving(start: float, stop: float, every: float) -> list[_Beat]:
    return [(t, "motion", Motion("moving")) for t in _every(start, stop, every)]


def _leave(t: float, *, sensor: bool = True) -> list[_Beat]:
    out: list[_Beat] = [(t, "door", Door(open=True)), (t, "occupancy", Occupancy(False))]
    if sensor:
        out.append((t + 3.0, "motion", Motion("absent")))
    return out


def _check_ins(stop: float, battery: int, roles: Sequence[Role]) -> list[_Beat]:
    return [(t, role, Battery(battery)) for t in _every(CHECK_IN, stop, CHECK_IN)
            for role in roles]


def _normal(i: int, start: float) -> list[_Beat]:
    stay = 150.0 + 30.0 * (i % 5)
    return [*_enter(start), *_moving(start + 12.0, start + stay - 1.0, 10.0),
            *_leave(start + stay)]


def _long(i: int, start: float) -> list[_Beat]:
    stay = 22 * 60.0 + 60.0 * (i % 4)
    return [*_enter(start), *_moving(start + 17.0, start + stay - 1.0, 15.0),
            *_leave(start + stay)]


def _overdose(i: int, start: float) -> list[_Beat]:
    still_at = start + 92.0
    stills: list[_Beat] = [
        (t, "motion", Motion("still")) for t in _every(still_at, still_at + 600.0, 60.0)
    ]
    return [*_enter(start), *_moving(start + 7.0, still_at - 1.0, 5.0), *stills]


def _call(i: int, start: float) -> list[_Beat]:
    stay = 120.0
    return [*_enter(start), *_moving(start + 12.0, start + stay - 1.0, 10.0),
            (start + 30.0, "call_button", Press("single")), *_leave(start + stay)]


def _device_drop(i: int, start: float) -> list[_Beat]:
    stay, drop = 240.0, start + 60.0
    return [*_enter(start), *_moving(start + 12.0, drop - 1.0, 10.0),
            (drop, "motion", Online(False)), *_leave(start + stay, sensor=False)]


def _flappy(i: int, start: float) -> list[_Beat]:
    """A Tuya ZY-M100 style radar: 2-6 messages a second, flipping between still and moving."""
    stay = 180.0
    rng = random.Random(i)  # fixed per booth: the same story every run
    chatter: list[_Beat] = []
    t, state = start + 2.0, "moving"
    while t < start + stay:
        chatter.append((t, "motion", Motion("moving" if state == "moving" else "still")))
        if rng.random() < 0.6:
            state = "still" if state == "moving" else "moving"
        t += rng.uniform(1 / 6, 1 / 2)
    return [*_enter(start), *chatter, *_leave(start + stay)]


_STORIES: Final[dict[str, Callable[[int, float], list[_Beat]]]] = {
    "normal": _normal,
    "long": _long,
    "overdose": _overdose,
    "call": _call,
    "device-drop": _device_drop,
    "flappy": _flappy,
}


def story(scenario: str, booth_index: int) -> str:
    """The story the booth with this 0-based index tells in `scenario` (`mix` rotates)."""
    return MIX[booth_index % len(MIX)] if scenario == "mix" else scenario


def acts(scenario: str, booths: Sequence[str], *, rate: float = DEFAULT_RATE) -> Iterator[Act]:
    """`scenario` for these booths, in order of time (endless for `load`)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}, got {scenario!r}")
    per_booth: list[Iterable[Act]] = []
    for i, booth in enumerate(booths):
        told = story(scenario, i)
        beats = _startup()
        if told != "load":
            beats += _STORIES[told](i, 1.0 + STAGGER * i)
            end = max(at for at, _, _ in beats)
            beats += _check_ins(end, 97 - 3 * (i % 10), ("call_button", "door", "occupancy"))
        beats.sort(key=lambda beat: beat[0])  # stable: equal times keep their order
        per_booth.append([Act(at, booth, role, action, told) for at, role, action in beats])
    if scenario == "load":
        per_booth.append(_load(booths, rate))
    return heapq.merge(*per_booth, key=lambda act: act.at)


def _load(booths: Sequence[str], rate: float) -> Iterator[Act]:
    """`rate` motion reports a second over all booths, round robin, each booth alternating."""
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be a positive number, got {rate!r}")
    for k in itertools.count():
        booth = booths[k % len(booths)]
        state: enc.MotionName = "moving" if (k // len(booths)) % 2 == 0 else "still"
        yield Act(LOAD_START + k / rate, booth, "motion", Motion(state), "load")


def traffic(
    site: str,
    fmt: str,
    scenario: str,
    booths: int,
    *,
    speed: float = 1.0,
    rate: float = DEFAULT_RATE,
    run: str | None = None,
) -> Iterator[Sent]:
    """The scenario as the devices of format `fmt` publish it, times divided by `speed`.

    Canonical events get ``id`` ``sim-<run>-<booth>-<n>`` (n counts per booth from
    1); a fresh `run` (random by default) keeps a second run from being dropped as
    duplicates.
    """
    for problem in problems(fmt, scenario, booths, speed, rate, None):
        raise ValueError(problem)
    run = run or secrets.token_hex(3)
    names = booth_ids(booths)
    devices = {(d.booth, d.role): d for d in sim_devices(fmt, booths, site=site,
                                                        scenario=scenario)}
    battery: dict[str, int] = {}
    reports: dict[str, int] = {}
    ids: dict[str, int] = {}
    if fmt == "zigbee2mqtt":
        bridge = enc.zigbee2mqtt_bridge(True)
        yield Sent(0.0, bridge.topic, bridge.payload, bridge.retain, story(scenario, 0),
                   "bridge", None)
    for act in acts(scenario, names, rate=rate):
        device = devices.get((act.booth, act.role))
        if device is None:
            continue
        if isinstance(act.action, Battery):
            battery[device.id] = act.action.percent
        n = reports[device.id] = reports.get(device.id, -1) + 1
        event_id = None
        if device.source == "canonical":
            count = ids[act.booth] = ids.get(act.booth, 0) + 1
            event_id = f"sim-{run}-{act.booth}-{count}"
        wires = enc.encode(device, act.action, battery=battery.get(device.id, _battery(act)),
                           n=n, event_id=event_id)
        if not wires and event_id is not None:
            ids[act.booth] -= 1  # nothing went out: the id stays free
        for wire in wires:
            yield Sent(act.at / speed, wire.topic, wire.payload, wire.retain, act.scenario,
                       device.id, act.booth)


def _battery(act: Act) -> int:
    return 97 - 3 * ((int(act.booth[1:]) - 1) % 10)


def problems(
    fmt: str,
    scenario: str,
    booths: int,
    speed: float,
    rate: float,
    duration: float | None,
    *,
    url: str | None = None,
) -> list[str]:
    """What is wrong with these settings, as messages naming the option."""
    out = []
    if url is not None:
        try:
            parts = urlsplit(url)
            ok = parts.scheme in ("mqtt", "mqtts") and bool(parts.hostname)
            _ = parts.port
        except ValueError:
            ok = False
        if not ok:
            hint = ("; a password with / ? or # in it must be percent-encoded, or left "
                    "out of the URL and set in BOOTHWATCH_MQTT_PASSWORD" if "@" in url else "")
            out.append("--mqtt: expected mqtt://host:port or mqtts://host:port, "
                       f"got {redact(url)!r}{hint}")
    if fmt not in FORMATS:
        out.append(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if scenario not in SCENARIOS:
        out.append(f"--scenario must be one of {', '.join(SCENARIOS)}, got {scenario!r}")
    if booths < 1:
        out.append(f"--booths must be at least 1, got {booths}")
    for name, value in (("--speed", speed), ("--rate", rate), ("--duration", duration)):
        if value is not None and not (math.isfinite(value) and value > 0):
            out.append(f"{name} must be a positive number, got {value!r}")
    return out


def redact(url: str) -> str:
    """`url` with its password, if it has one, shown as ``***``.

    Split by hand rather than with `urlsplit`, so a URL it cannot take (a password
    with a raw ``/`` or ``#``) is redacted too: the last ``@`` ends the user info.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.partition(':')[0]}:***@{host}"


MAX_NAMED = 5  # booths named per refusal reason in a summary line; the rest are counted


class _Summary:
    """What was sent, by scenario, and what the broker made of it: one line every few seconds.

    A publish is accepted, refused (a PUBACK reason code of 0x80 or more, counted by
    reason and booth) or still awaiting its PUBACK. Pure: the clock is passed in.
    """

    def __init__(self, now: Callable[[], float], protocol: Protocol = "5") -> None:
        self.now = now
        # MQTT 3.1.1 cannot refuse in a PUBACK: "accepted" would claim what nobody knows
        self.acked_word = "accepted" if protocol == "5" else "acked"
        self.by_scenario: dict[str, int] = {}
        self.total = 0
        self.accepted = 0
        self.unheard = 0  # accepted, but the broker had no subscriber for it (0x10)
        self.refused: dict[str, dict[str, int]] = {}  # reason -> booth (or device) -> count
        self.refused_topics: set[tuple[str, str]] = set()  # (reason, topic) seen
        self.begin()

    def begin(self) -> None:
        """Start the clock (once connected: the connection's time is no part of the rates)."""
        self.start = self.now()
        self.last = (self.start, 0)  # (time, total) at the last line

    def count(self, sent: Sent) -> None:
        self.by_scenario[sent.scenario] = self.by_scenario.get(sent.scenario, 0) + 1
        self.total += 1

    def settle(self, sent: Sent, reason: ReasonCode) -> str | None:
        """Count the broker's answer to `sent`; the line to print at once for the first
        refusal on a topic for a reason, else None."""
        if not reason.is_failure:
            self.accepted += 1
            if reason.value == NO_MATCHING_SUBSCRIBERS:
                self.unheard += 1
            return None
        name = str(reason)
        who = self.refused.setdefault(name, {})
        key = sent.booth or sent.device
        who[key] = who.get(key, 0) + 1
        if (name, sent.topic) in self.refused_topics:
            return None
        self.refused_topics.add((name, sent.topic))
        return (f"refused: {sent.device} on {sent.topic}: {name} (0x{reason.value:02x}); "
                "later ones on this topic are only counted")

    @property
    def pending(self) -> int:
        return self.total - self.accepted - sum(sum(n.values()) for n in self.refused.values())

    @property
    def ok(self) -> bool:
        """The broker accepted everything that was sent."""
        return not self.refused and self.pending == 0

    def line(self, final: str | None = None) -> str:
        """A progress line, or with `final` ("done", "stopped") the last line of a run."""
        now = self.now()
        elapsed = now - self.start
        parts = ", ".join(f"{name} {n}" for name, n in self.by_scenario.items()) or "nothing"
        rate = self.total / elapsed if elapsed > 0 else 0.0
        if final is not None:
            head = f"{final}: sent {self.total} in {elapsed:.1f}s ({parts}), {rate:.1f}/s"
            return f"{head}; {self.outcome('never acknowledged')}"
        then, before = self.last
        recent = (self.total - before) / (now - then) if now > then else 0.0
        self.last = (now, self.total)
        return (f"[{elapsed:7.1f}s] sent {self.total} ({parts}), {rate:.1f}/s, "
                f"last {now - then:.0f}s {recent:.1f}/s; {self.outcome('awaiting ack')}")

    def outcome(self, pending_word: str) -> str:
        out = f"{self.acked_word} {self.accepted}"
        if self.unheard:
            out += f" ({self.unheard} with no subscriber: nothing read them)"
        if self.refused:
            total = sum(sum(n.values()) for n in self.refused.values())
            out += f", refused {total} ({'; '.join(_named(r, n) for r, n in self.refused.items())})"
        if self.pending:
            out += f", {pending_word} {self.pending}"
        return out


def _named(reason: str, counts: Mapping[str, int]) -> str:
    """"Not authorized: b2 9, b3 9" with at most MAX_NAMED booths, the others counted."""
    named = ", ".join(f"{who} {n}" for who, n in itertools.islice(counts.items(), MAX_NAMED))
    more = len(counts) - MAX_NAMED
    return f"{reason}: {named}" + (f" and {more} more" if more > 0 else "")


async def run_sim(
    url: str,
    site: str,
    fmt: str,
    scenario: str,
    booths: int,
    *,
    speed: float = 1.0,
    rate: float = DEFAULT_RATE,
    duration: float | None = None,
    every: float = SUMMARY_EVERY,
    out: TextIO | None = None,
    protocol: Protocol = "5",
) -> None:
    """Publish the scenario's device traffic in real time, printing a summary to `out`.

    Ends when a finite scenario is done or after `duration` seconds; cancelling
    it (Ctrl-C) stops it. Either way it waits for the last PUBACKs (at most
    `DRAIN_TIMEOUT`) and prints a last line, then raises SystemExit(1) when the
    broker refused a publish or left one unacknowledged. A broker that cannot be
    reached or refuses the connection ends the process with status 2.
    """
    out = out or sys.stdout
    stream: Iterator[Sent] = traffic(site, fmt, scenario, booths, speed=speed, rate=rate)
    if duration is not None:
        stream = itertools.takewhile(lambda sent: sent.at <= duration, stream)
    loop = asyncio.get_running_loop()
    summary = _Summary(loop.time, protocol)

    def settled(sent: Sent, reason: ReasonCode) -> None:
        notice = summary.settle(sent, reason)
        if notice is not None:
            print(notice, file=out, flush=True)

    bounds = f", at most {duration:g}s" if duration is not None else ""
    blind = ("" if protocol == "5" else
             "; MQTT 3.1.1: the broker acks a publish it refuses, so refusals go unseen")
    print(f"boothwatch sim: {booths} {fmt} booth(s), scenario {scenario}, speed {speed:g}"
          f"{bounds} -> {redact(url)} (site {site}{blind}); Ctrl-C to stop",
          file=out, flush=True)
    publisher = _Publisher(url, protocol, settled)
    reporter: asyncio.Task[None] | None = None  # set once connected
    try:
        try:
            await publisher.connect()
        except (OSError, TimeoutError, ConnectionError) as exc:
            print(f"boothwatch sim: cannot publish to {redact(url)}: {exc or 'no answer'}",
                  file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        summary.begin()
        reporter = asyncio.create_task(_report(summary, every, out), name="sim-summary")
        # Ctrl-C stops the sending, and the PUBACKs of what went out still count; a
        # second Ctrl-C stops the wait for them (what is left counts as unacknowledged)
        done = await _unless_stopped(_send(stream, publisher, summary))
        await _unless_stopped(publisher.drain())
    finally:
        if reporter is not None:
            reporter.cancel()
        publisher.close()
    print(summary.line(final="done" if done else "stopped"), file=out, flush=True)
    if not summary.ok:
        raise SystemExit(1)


async def _send(stream: Iterable[Sent], publisher: _Publisher[Sent], summary: _Summary) -> None:
    loop = asyncio.get_running_loop()
    for sent in stream:
        await asyncio.sleep(max(0.0, summary.start + sent.at - loop.time()))
        publisher.publish(sent.topic, sent.payload, sent.retain, sent)
        summary.count(sent)


async def _unless_stopped(aw: Awaitable[None]) -> bool:
    """Await `aw`; False when a cancellation of this task (Ctrl-C) cut it short, which
    ends the wait but not the task."""
    try:
        await aw
    except asyncio.CancelledError:
        task = asyncio.current_task()
        assert task is not None
        task.uncancel()  # handled: later waits of this task are not cut short
        return False
    return True


async def _report(summary: _Summary, every: float, out: TextIO) -> None:
    while True:
        await asyncio.sleep(every)
        print(summary.line(), file=out, flush=True)


# --- publishing -----------------------------------------------------------------------


async def play(
    url: str,
    site: str,
    steps: Iterable[Step],
    speed: float = 1.0,
    protocol: Protocol = "5",
    *,
    client_id: str | None = None,
) -> int:
    """Publish the scenario to the broker at `url` in real time; returns how many were sent.

    paho runs its network loop in its own thread and reconnects by itself; QoS 1
    messages queued meanwhile go out when it is back. A finite scenario ends once
    the broker has acknowledged every message (or after `DRAIN_TIMEOUT`). A refused
    or unacknowledged message is logged as a warning.
    """

    def settled(message: Message, reason: ReasonCode) -> None:
        if reason.is_failure:
            log.warning("sim_refused", topic=message.topic, booth=message.step.booth,
                        reason=str(reason))

    publisher = _Publisher(url, protocol, settled, client_id=client_id)
    loop = asyncio.get_running_loop()
    count = 0
    try:
        await publisher.connect()
        start = loop.time()
        for message in messages(site, steps, speed):
            await asyncio.sleep(max(0.0, start + message.at - loop.time()))
            publisher.publish(message.topic, message.payload, False, message)
            count += 1
            step = message.step
            quiet = step.payload.get("kind") == "heartbeat"
            (log.debug if quiet else log.info)("sim_event", booth=step.booth, **step.payload)
        await publisher.drain()
        if publisher.pending:
            log.warning("sim_unacknowledged", messages=len(publisher.pending))
        return count
    finally:
        publisher.close()


class _Publisher(Generic[T]):
    """One paho client that publishes QoS 1 from the event loop and hands each PUBACK's
    reason code, with what was published, to `settled` (on the event loop).

    A user name and password may come in the URL (``mqtt://user:pass@host``); with a
    user name and no password there, the password is ``BOOTHWATCH_MQTT_PASSWORD``.
    """

    def __init__(self, url: str, protocol: Protocol,
                 settled: Callable[[T, ReasonCode], None],
                 client_id: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("expected mqtt://host:port or mqtts://host:port, "
                             f"got {redact(url)!r}")
        self.host = parts.hostname
        self.port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"boothwatch-sim-{secrets.token_hex(4)}",
            protocol=paho.MQTTv5 if protocol == "5" else paho.MQTTv311,
        )
        self.client.max_inflight_messages_set(1000)
        if parts.scheme == "mqtts":
            self.client.tls_set()
        self.no_password = False
        if parts.username:
            password = parts.password
            password = (unquote(password) if password is not None
                        else os.environ.get("BOOTHWATCH_MQTT_PASSWORD"))
            self.no_password = password is None
            self.client.username_pw_set(unquote(parts.username), password)
        self.settled = settled
        self.pending: dict[int, T] = {}  # by message id, until its PUBACK
        self.all_acked = asyncio.Event()
        self.all_acked.set()
        self.started = False

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        connected: asyncio.Future[ReasonCode] = loop.create_future()

        def on_acked(mid: int, reason: ReasonCode) -> None:  # on the loop thread
            item = self.pending.pop(mid, None)
            if item is not None:
                self.settled(item, reason)
            if not self.pending:
                self.all_acked.set()

        # paho calls these two on its own thread
        def on_connect(_c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
            loop.call_soon_threadsafe(_settle, connected, reason)

        def on_publish(_c: paho.Client, _u: Any, mid: int, reason: ReasonCode,
                       _p: Any) -> None:
            loop.call_soon_threadsafe(on_acked, mid, reason)

        self.client.on_connect = on_connect
        self.client.on_publish = on_publish
        self.client.connect_async(self.host, self.port)
        self.client.loop_start()
        self.started = True
        try:
            reason = await asyncio.wait_for(connected, CONNECT_TIMEOUT)
        except TimeoutError:
            raise TimeoutError(f"no CONNACK within {CONNECT_TIMEOUT:g} s") from None
        if reason.is_failure:
            hint = (" (no password: none in the URL and BOOTHWATCH_MQTT_PASSWORD is not set)"
                    if self.no_password else "")
            raise ConnectionError(f"the broker refused the connection: {reason}{hint}")

    def publish(self, topic: str, payload: bytes, retain: bool, item: T) -> None:
        # the PUBACK callback runs on this thread later, so the mid is registered first
        self.pending[self.client.publish(topic, payload, qos=1, retain=retain).mid] = item
        self.all_acked.clear()

    async def drain(self) -> None:
        """Wait until the broker acknowledged everything (at most `DRAIN_TIMEOUT`);
        what it did not stays in `pending`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_acked.wait(), DRAIN_TIMEOUT)

    def close(self) -> None:
        if self.started:
            self.client.disconnect()
            self.client.loop_stop()


def _settle(fut: asyncio.Future[ReasonCode], reason: ReasonCode) -> None:
    if not fut.done():  # paho calls on_connect again after every reconnect
        fut.set_result(reason)
