"""`boothwatch demo` as a newcomer runs it, and the simulator scenarios it plays."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import aiohttp
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devices import simulator as sim
from devices.adapters.canonical import Parsed, parse_event, parse_topic
from monitor.demo import BOOTHS, CALL_AT, LONG_SESSION, SITE, STILLNESS, IncidentLines, scenario
from tests.harness.board import board_stream, login
from tests.harness.broker import Mosquitto, free_port
from tests.harness.service import eventually

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


# --- the real process -------------------------------------------------------------------


async def _collect(stream: asyncio.StreamReader, into: list[str]) -> None:
    async for line in stream:
        into.append(line.decode(errors="replace"))


async def test_demo_pages_within_seconds_and_stops_cleanly(tmp_path: Path) -> None:
    """A Booth 1 page reaches stdout, its ack link on the next line, and an [INCIDENT] line
    with its id; the watched console counts it as sent; the logs are in the file the banner
    names, not on the terminal; b1 and b2 incidents show in the API, SIGTERM exits 0."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor.cli", "demo", "--http", f"127.0.0.1:{port}",
        "--db", str(tmp_path / "demo.db"), "--speed", "4",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("BOOTHWATCH_")},
    )
    assert proc.stdout is not None and proc.stderr is not None
    out: list[str] = []
    err: list[str] = []
    err_task = asyncio.create_task(_collect(proc.stderr, err))
    try:
        async with asyncio.timeout(30):
            while not any(line.startswith("[PAGE]") and "Booth 1" in line for line in out):
                line = await proc.stdout.readline()
                assert line, f"demo exited early:\n{''.join(out)}{''.join(err)[-3000:]}"
                out.append(line.decode())
        assert out[0].startswith("boothwatch demo"), out[0]  # the banner comes first
        board = re.fullmatch(rf"  board +{base}/board .*password: (demo-[0-9a-f]{{6}})\)\n",
                             out[1])  # then the board and its login, a new one each run
        assert board, out[1]
        banner = "".join(out)
        for text in (f"{base}/api/incidents?state=all", "/metrics", "Ctrl-C to stop"):
            assert text in banner
        token = re.search(r"-H 'Authorization: Bearer ([\w-]+)'", banner)
        assert token, banner  # the curl command carries the demo's API token
        log_file = next(line.split()[1] for line in out if line.startswith("  logs "))
        out_task = asyncio.create_task(_collect(proc.stdout, out))
        at = len(out)  # the line after the page's
        ack = (await eventually(lambda: out[at:]))[0].rstrip("\n")
        assert ack.startswith(f"  ack: {base}/ack/") and len(ack) <= 160  # two lines of 80
        opened = await eventually(lambda: [line for line in out
                                           if line.startswith("[INCIDENT] Booth 1: opened")])
        incident = opened[0].split()[-1]

        async with aiohttp.ClientSession() as http:

            async def get(path: str) -> Any:
                async with http.get(base + path,
                                    headers={"Authorization": f"Bearer {token[1]}"}) as resp:
                    assert resp.status == 200
                    return await resp.json()

            async def raised() -> bool:
                found = {(i["booth"], t) for i in await get("/api/incidents?state=all")
                         for t in i["triggers"]}
                return {("b1", "call"), ("b2", "unresponsive")} <= found

            await eventually(raised, timeout=30, every=0.5)
            # the printed password logs a station in; its board streams the demo's booths
            station = await login(http, base, board[1])
            async with board_stream(http, base, station) as stream:
                kind, snapshot = await stream.next()
            assert kind == "snapshot" and len(snapshot["booths"]) == len(BOOTHS)
            booths = await get("/api/booths")
            assert sorted(b["booth"] for b in booths) == list(BOOTHS)
            assert incident in {i["id"] for i in await get("/api/incidents?state=all")}
            async with http.get(base + "/metrics") as resp:
                metrics = await resp.text()
            sent = next(line for line in metrics.splitlines() if line.startswith(
                'boothwatch_pages_total{channel="screen",result="sent"}'))
            assert float(sent.split()[-1]) >= 1
            assert 'result="printed"' not in metrics

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        await asyncio.wait_for(asyncio.gather(err_task, out_task), 5)
        assert "Traceback" not in "".join(err), "".join(err)[-3000:]
        assert "sim_event" not in "".join(err + out)
        logs = await asyncio.to_thread(Path(log_file).read_text)
        assert "sim_event" in logs and "page delivered" in logs
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        err_task.cancel()


def test_incident_lines_tell_each_change_once() -> None:
    """Opened (with the id the curl command needs), a new trigger, acknowledged, open again,
    at the booth, resolved: one line each, in whole seconds; an escalation step adds none."""
    lines = IncidentLines()
    incident: dict[str, Any] = {
        "id": "01JD", "booth": "b1", "booth_name": "Booth 1", "priority": "medium",
        "state": "open", "triggers": ["long_session"], "level": 1, "response": {}}

    def change(**fields: Any) -> str | None:
        incident.update(fields)
        return lines.line(dict(incident))

    assert change() == "[INCIDENT] Booth 1: opened (medium: long_session), id 01JD"
    assert change(level=2) is None
    assert change(priority="high", triggers=["long_session", "unresponsive"]) == (
        "[INCIDENT] Booth 1: now high: long_session, unresponsive")
    assert change(state="acknowledged", acknowledged_by="ana",
                  response={"to_acknowledge": 12.345}) == (
        "[INCIDENT] Booth 1: acknowledged by ana after 12s")
    assert change(state="open") == (
        "[INCIDENT] Booth 1: open again (high: long_session, unresponsive): escalation goes "
        "on")
    assert change(state="attended", presence_by="rui",
                  response={"to_acknowledge": 12.3, "to_presence": 75.6}) == (
        "[INCIDENT] Booth 1: rui at the booth after 76s")
    assert change(state="resolved", resolved_by=None, outcome="vacated",
                  response={"to_resolve": 3600}) == (
        "[INCIDENT] Booth 1: resolved after 1h (vacated)")
    assert change(outcome="ok") is None  # recorded afterwards: nothing changed for the room
    assert lines.line({"id": "01JE", "booth": "b2", "state": "open", "priority": "high",
                       "triggers": ["call"]}) == "[INCIDENT] b2: opened (high: call), id 01JE"
    answered = {"id": "01JF", "booth": "b2", "state": "open", "priority": "high",
                "triggers": ["unresponsive"], "presence_by": None, "steps": []}
    lines.line(answered)
    assert lines.line({**answered, "state": "attended", "steps": [
        {"step": "answered", "responder": "rui"}]}) == (
        "[INCIDENT] b2: the person answered rui: nobody else need come")


# --- the scenarios ----------------------------------------------------------------------


def _states(steps: list[sim.Step], kind: str, field: str) -> list[Any]:
    return [s.payload[field] for s in steps if s.payload["kind"] == kind]


def test_scenarios_tell_their_stories() -> None:
    """Each builder's steps say what its docstring promises, in order of time."""
    assert sim.call("b1") == [sim.Step(0.0, "b1", {"kind": "button", "press": "call"})]

    overdose = sim.overdose("b2")
    assert _states(overdose, "occupancy", "occupied") == [True]
    motion = _states(overdose, "motion", "state")
    assert motion[-1] == "still" and set(motion[:-1]) == {"moving"} and len(motion) > 2

    long = sim.long_session("b3")
    assert _states(long, "occupancy", "occupied") == [True]
    assert set(_states(long, "motion", "state")) == {"moving"}
    assert long[-1].at > LONG_SESSION  # still moving after the threshold

    normal = sim.normal("b4")
    assert _states(normal, "occupancy", "occupied") == [True, False]
    assert "still" not in _states(normal, "motion", "state")
    assert normal[-1].at < LONG_SESSION and normal[-1].at < STILLNESS

    for steps in (overdose, long, normal):
        assert [s.at for s in steps] == sorted(s.at for s in steps)


def test_heartbeats_are_endless_and_periodic() -> None:
    beats = list(itertools.islice(sim.heartbeats(["b1", "b2"], every=10.0), 6))
    assert [(s.at, s.booth) for s in beats] == [
        (0.0, "b1"), (0.0, "b2"), (10.0, "b1"), (10.0, "b2"), (20.0, "b1"), (20.0, "b2"),
    ]
    assert all(s.payload["kind"] == "heartbeat" for s in beats)


def test_demo_scenario_is_in_time_order_with_the_call_at_three_seconds() -> None:
    steps = list(itertools.takewhile(lambda s: s.at < 120, scenario()))
    assert [s.at for s in steps] == sorted(s.at for s in steps)
    calls = [s for s in steps if s.payload["kind"] == "button"]
    assert [(s.at, s.booth) for s in calls] == [(CALL_AT, "b1")]
    assert {s.booth for s in steps} == set(BOOTHS)


def test_messages_scale_time_and_carry_unique_ids_and_valid_payloads() -> None:
    """Offsets are divided by the speed; every payload parses as a canonical event."""
    steps = list(itertools.takewhile(lambda s: s.at < 90, scenario()))
    out = list(sim.messages(SITE, steps, speed=4, run="r1"))
    assert [m.at for m in out] == [s.at / 4 for s in steps]
    ids = []
    for message, step in zip(out, steps, strict=True):
        booth = parse_topic(message.topic, SITE)
        assert booth == step.booth
        parsed = parse_event(booth, message.payload, frozenset(BOOTHS))
        assert isinstance(parsed, Parsed), parsed
        assert parsed.device == f"sim-{booth}"
        assert parsed.event_id is not None and parsed.event_id.startswith(f"sim-r1-{booth}-")
        ids.append(parsed.event_id)
        body = json.loads(message.payload)
        assert {k: body[k] for k in step.payload} == dict(step.payload)
    assert len(set(ids)) == len(ids)


def test_each_run_has_its_own_ids() -> None:
    """The service remembers ids in its store: a second run must not look like a replay."""
    first, second = (next(sim.messages(SITE, sim.call("b1"))) for _ in range(2))
    assert json.loads(first.payload)["id"] != json.loads(second.payload)["id"]


@pytest.mark.parametrize("speed", [0, -1, float("nan"), float("inf")])
def test_speed_must_be_positive(speed: float) -> None:
    with pytest.raises(ValueError, match="speed"):
        next(sim.messages(SITE, sim.call("b1"), speed=speed))


async def test_play_publishes_a_scenario_on_time_over_mqtt5(mosquitto: Mosquitto) -> None:
    """`play` sends every step at QoS 1 at its scaled time, then returns the count."""
    got: list[tuple[float, str, bytes]] = []
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    loop = asyncio.get_running_loop()

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        got.append((loop.time(), msg.topic, bytes(msg.payload)))

    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe(f"boothwatch/{SITE}/#", qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        assert await asyncio.to_thread(subscribed.wait, 5)
        steps = sim.merge(sim.normal("b4", stay=2.0, every=1.0), sim.delayed(sim.call("b1"), 1))
        start = loop.time()
        count = await sim.play(mosquitto.url, SITE, steps, speed=2, protocol="5")
        await eventually(lambda: len(got) == count, timeout=5)
    finally:
        client.disconnect()
        client.loop_stop()
    assert count == 6
    assert [(t, json.loads(p)["kind"]) for _, t, p in got][-1] == (
        f"boothwatch/{SITE}/booths/b4/events", "motion")
    call_at = next(at for at, _, p in got if b'"call"' in p) - start
    assert 0.4 < call_at < 1.5, call_at  # 1 s at speed 2
