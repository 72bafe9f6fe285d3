"""Simulated booth devices: scenarios of timed canonical events, played over MQTT.

A scenario is an iterable of `Step`s in order of `at`, the seconds from its start
at speed 1: which booth says what. The builders below tell the usual stories;
`delayed` shifts one, `merge` interleaves several, and `heartbeats` never ends.
`messages` turns a scenario into what goes on the wire (interface section 4):
times divided by the speed, and every event given an `id` and a `device`.
`play` publishes those at their times, QoS 1, until the scenario ends or the
task is cancelled; scenarios are read lazily, so an endless one is fine.

Everything except `play` is pure, so a scenario can be checked without a broker.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import math
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

log = structlog.get_logger(__name__)

Protocol = Literal["5", "3.1.1"]
CONNECT_TIMEOUT = 10.0
DRAIN_TIMEOUT = 5.0  # at the end of a finite scenario, wait this long for the last PUBACKs


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


async def play(
    url: str,
    site: str,
    steps: Iterable[Step],
    speed: float = 1.0,
    protocol: Protocol = "3.1.1",
    *,
    client_id: str | None = None,
) -> int:
    """Publish the scenario to the broker at `url` in real time; returns how many were sent.

    paho runs its network loop in its own thread and reconnects by itself; QoS 1
    messages queued meanwhile go out when it is back. A finite scenario ends once
    the broker has acknowledged every message (or after `DRAIN_TIMEOUT`).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"expected mqtt://host:port or mqtts://host:port, got {url!r}")
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or f"boothwatch-sim-{secrets.token_hex(4)}",
        protocol=paho.MQTTv5 if protocol == "5" else paho.MQTTv311,
    )
    client.max_inflight_messages_set(1000)
    if parts.scheme == "mqtts":
        client.tls_set()
    loop = asyncio.get_running_loop()
    connected: asyncio.Future[ReasonCode] = loop.create_future()
    unacked: set[int] = set()
    all_acked = asyncio.Event()
    all_acked.set()

    def on_acked(mid: int) -> None:  # on the loop thread
        unacked.discard(mid)
        if not unacked:
            all_acked.set()

    # paho calls these two on its own thread
    def on_connect(_c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        loop.call_soon_threadsafe(_settle, connected, reason)

    def on_publish(_c: paho.Client, _u: Any, mid: int, _r: Any, _p: Any) -> None:
        loop.call_soon_threadsafe(on_acked, mid)

    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect_async(parts.hostname, parts.port or (8883 if parts.scheme == "mqtts" else 1883))
    client.loop_start()
    count = 0
    try:
        reason = await asyncio.wait_for(connected, CONNECT_TIMEOUT)
        if reason.is_failure:
            raise ConnectionError(f"{url} refused the simulator: {reason}")
        start = loop.time()
        for message in messages(site, steps, speed):
            await asyncio.sleep(max(0.0, start + message.at - loop.time()))
            # the PUBACK callback runs on this thread later, so the mid is in the set first
            unacked.add(client.publish(message.topic, message.payload, qos=1).mid)
            all_acked.clear()
            count += 1
            step = message.step
            quiet = step.payload.get("kind") == "heartbeat"
            (log.debug if quiet else log.info)("sim_event", booth=step.booth, **step.payload)
        try:
            await asyncio.wait_for(all_acked.wait(), DRAIN_TIMEOUT)
        except TimeoutError:
            log.warning("sim_unacknowledged", messages=len(unacked))
        return count
    finally:
        client.disconnect()
        client.loop_stop()


def _settle(fut: asyncio.Future[ReasonCode], reason: ReasonCode) -> None:
    if not fut.done():  # paho calls on_connect again after every reconnect
        fut.set_result(reason)
