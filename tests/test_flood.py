"""Issue 6: one device flooding cannot starve the other booths.

The limiter (monitor/core/flood.py) with a hand-stepped clock, then the whole
service against a real Mosquitto, real SQLite and a real webhook receiver while
one device floods several thousand messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import aiohttp
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from monitor.config import ConfigError, parse_config
from monitor.core.flood import (
    FLOOD_HOLD,
    RATE_LIMITED,
    REPEATED_CALL,
    REPORT_EVERY,
    Kind,
    Limiter,
    Sender,
    cannot_be_a_call,
    held_slot,
    may_call,
    reading_kind,
)
from monitor.core.readings import Reading
from monitor.core.settings import DeviceConfig, RateLimitConfig
from tests.harness.broker import Mosquitto, Publish, free_port
from tests.harness.process import ServiceProcess
from tests.harness.receivers import Webhook
from tests.harness.service import Service, event, events_topic, eventually, start_service
from tests.harness.site import SITE, Site, device, service_site

S1 = Sender("canonical", "b1", "radar")
S2 = Sender("canonical", "b2", None)


def limiter(rate: float = 10, burst: int = 5, repeat: float = 5.0) -> Limiter:
    return Limiter(RateLimitConfig(rate=rate, burst=burst, repeat_call_interval=repeat))


# --- the token bucket -------------------------------------------------------------------


def test_burst_then_rate_then_refill() -> None:
    """`burst` messages pass at once, then one per 1/rate seconds; idle time refills it."""
    lim = limiter(rate=10, burst=5)
    now = 1000.0
    assert [lim.admit(S1, now) for _ in range(7)] == [None] * 5 + [RATE_LIMITED] * 2
    now += 0.1  # one token back
    assert [lim.admit(S1, now) for _ in range(2)] == [None, RATE_LIMITED]
    now += 60  # refills, but never past the burst
    assert [lim.admit(S1, now) for _ in range(6)] == [None] * 5 + [RATE_LIMITED]


def test_senders_have_their_own_buckets() -> None:
    """Sender 1 flooding takes nothing from sender 2."""
    lim = limiter(rate=1, burst=3)
    for _ in range(1000):
        lim.admit(S1, 5.0)
    assert [lim.admit(S2, 5.0) for _ in range(3)] == [None, None, None]
    assert lim.admit(S1, 5.0) == RATE_LIMITED


def test_a_clock_stepping_back_refills_nothing() -> None:
    lim = limiter(rate=10, burst=2)
    assert [lim.admit(S1, 100.0) for _ in range(3)] == [None, None, RATE_LIMITED]
    assert lim.admit(S1, 50.0) == RATE_LIMITED
    assert lim.admit(S1, 50.05) == RATE_LIMITED  # half a token since the step back
    assert lim.admit(S1, 50.15) is None


def test_sustained_flood_passes_rate_times_seconds() -> None:
    """5,000 messages a second for 10 s: burst + rate * 10 pass, the rest are dropped."""
    lim = limiter(rate=10, burst=50)
    passed = 0
    for i in range(50_000):
        passed += lim.admit(S1, 1000.0 + i / 5000) is None
    assert passed == 50 + 99  # 9.998 s of refill after the burst, whole tokens only


# --- life safety: what is never dropped, what is limited more ------------------------------


def test_a_first_call_passes_even_with_the_bucket_empty() -> None:
    """The booth has no call yet: the call opens the incident, flood or not."""
    lim = limiter(rate=1, burst=2)
    for _ in range(100):
        lim.admit(S1, 10.0)
    assert lim.admit(S1, 10.0, Kind.CALL, open_call=None) is None
    assert lim.admit(S1, 10.0, Kind.EDGE, open_call=None) is None
    # the same with a call open: half a press is limited like anything else
    assert lim.admit(S1, 10.0, Kind.EDGE, open_call="inc1") == RATE_LIMITED


def test_repeats_from_a_flooding_sender_are_dropped_for_a_minute() -> None:
    """A stuck button is not a person pressing again: no urgent jump while it floods."""
    lim = limiter(rate=10, burst=5, repeat=0)
    now = 0.0
    for _ in range(6):
        lim.admit(S1, now)  # the sixth is dropped: S1 is flooding from now
    now += 30  # the bucket is full again, but S1 dropped a message 30 s ago
    assert lim.admit(S1, now, Kind.CALL, "inc1") == RATE_LIMITED
    assert lim.admit(S1, now, Kind.OTHER) is None  # other messages pass on tokens
    assert lim.admit(Sender("canonical", "b1", "button"), now, Kind.CALL, "inc1") is None
    now += FLOOD_HOLD  # quiet for a minute: a repeat is a person again
    assert lim.admit(S1, now, Kind.CALL, "inc1") is None


def test_one_repeat_per_interval_per_sender_and_incident() -> None:
    """Repeated presses jump escalation at most once per interval; a new incident starts over."""
    lim = limiter(rate=100, burst=100, repeat=5.0)
    button = Sender("canonical", "b1", "button")
    assert lim.admit(button, 0.0, Kind.CALL, "inc1") is None
    assert lim.admit(button, 1.0, Kind.CALL, "inc1") == REPEATED_CALL
    assert lim.admit(button, 4.9, Kind.CALL, "inc1") == REPEATED_CALL
    assert lim.admit(S1, 4.9, Kind.CALL, "inc1") is None  # a second button in the booth
    assert lim.admit(S2, 4.9, Kind.CALL, "inc2") is None  # another booth
    assert lim.admit(button, 5.0, Kind.CALL, "inc1") is None
    assert lim.admit(button, 6.0, Kind.CALL, "inc3") is None  # a new incident
    # a person pressing fast is not a flood: the next minute's repeats are not held back
    assert lim.flooding(6.0) == 0
    assert lim.admit(button, 11.0, Kind.CALL, "inc3") is None


def test_a_flood_of_calls_opens_one_incident_and_jumps_once() -> None:
    """5,000 calls from one stuck button over 2 s, fed as the core sees them: one first call,
    one urgent jump, everything else dropped."""
    lim = limiter(rate=10, burst=50, repeat=5.0)
    open_call: str | None = None
    verdicts = []
    for i in range(5000):
        verdict = lim.admit(S1, i / 2500, Kind.CALL, open_call)
        verdicts.append(verdict)
        if verdict is None:
            open_call = "inc1"  # the core opened it
    assert verdicts[:2] == [None, None]  # opens; the first repeat (the person: "urgent")
    assert verdicts.count(None) == 2
    assert verdicts.count(REPEATED_CALL) == 48  # the rest of the burst
    assert verdicts.count(RATE_LIMITED) == 4950


def test_held_slots_are_event_kinds_found_without_parsing() -> None:
    assert held_slot(b'{"kind":"motion","state":"still"}') == "motion"
    assert held_slot(event("occupancy", occupied=True, device="motion-1")) == "occupancy"
    assert held_slot(b'{"kind" : "heartbeat"}') == ""  # unusual spacing: the shared slot
    assert held_slot(b"garbage") == ""


def test_take_counts_no_drop() -> None:
    """A held-back message takes a token when there is one; a miss is no new drop."""
    lim = limiter(rate=10, burst=1)
    assert lim.admit(S1, 0.0) is None
    assert lim.admit(S1, 0.0) == RATE_LIMITED
    assert lim.take(S1, 0.05) is False
    assert lim.take(S1, 0.1) is True
    assert lim.report(S1, 0.1) == 1


def test_report_at_most_once_a_period_with_the_count() -> None:
    lim = limiter(rate=1, burst=1)
    lim.admit(S1, 0.0)
    assert lim.report(S1, 0.0) == 0  # nothing dropped yet
    lim.admit(S1, 0.0)
    assert lim.report(S1, 0.0) == 1  # the first drop is logged at once
    for _ in range(500):
        lim.admit(S1, 0.5)
    assert lim.report(S1, 30.0) == 0
    assert lim.report(S1, REPORT_EVERY) == 500
    assert lim.report(S1, 2 * REPORT_EVERY) == 0
    assert lim.flooding(0.5 + FLOOD_HOLD - 0.1) == 1
    assert lim.flooding(0.5 + FLOOD_HOLD) == 0


def test_only_a_payload_that_cannot_be_a_call_skips_parsing() -> None:
    """The runtime limits these before parsing them; every way to write a call is kept."""
    no = [b'{"kind":"motion","state":"moving"}', b'{"kind":"button","press":"clear"}',
          b"not json", b'{"kind":"button","press":"CALL"}', b""]
    maybe = [b'{"kind":"button","press":"call"}', b'{"press":"\\u0063all","kind":"button"}',
             b'{"kind":"motion","state":"still","device":"recall"}']
    assert [cannot_be_a_call(p) for p in no] == [True] * len(no)
    assert [cannot_be_a_call(p) for p in maybe] == [False] * len(maybe)
    assert json.loads(maybe[1])["press"] == "call"


def test_which_device_messages_may_be_a_call() -> None:
    call = DeviceConfig("btn", "esphome", "n/binary_sensor/b/state", "b1", "call_button")
    staff = DeviceConfig("staff", "tasmota", "t1", "b1", "presence_button")
    staff_call = DeviceConfig("staff2", "tasmota", "t2", "b1", "presence_button",
                              actions={"hold": "call"})
    radar = DeviceConfig("radar", "zigbee2mqtt", "zigbee2mqtt/r", "b1", "occupancy")
    assert [may_call(d) for d in (call, staff, staff_call, radar)] == [True, False, True, False]
    assert reading_kind(call, [Reading(binary=True)], False) is Kind.CALL
    assert reading_kind(call, [Reading(binary=False)], False) is Kind.EDGE
    assert reading_kind(call, [Reading(binary=True)], True) is Kind.OTHER  # retained
    assert reading_kind(call, [Reading(battery=90)], False) is Kind.OTHER
    assert reading_kind(staff_call, [Reading(press="hold")], False) is Kind.CALL
    assert reading_kind(staff_call, [Reading(press="single")], False) is Kind.OTHER


# --- configuration ------------------------------------------------------------------------

EXAMPLE = Path(__file__).parent.parent / "deploy" / "boothwatch.toml"


def _with(table: str) -> dict[str, Any]:
    import tomllib

    data = tomllib.loads(EXAMPLE.read_text())
    data.update(tomllib.loads(table))
    return data


def test_rate_limit_defaults_and_keys() -> None:
    import tomllib

    assert parse_config(tomllib.loads(EXAMPLE.read_text()), {}).rate_limit == RateLimitConfig()
    cfg = parse_config(_with('[rate_limit]\nrate = 2.5\nburst = 8\nrepeat_call_interval = "0s"'),
                       {})
    assert cfg.rate_limit == RateLimitConfig(rate=2.5, burst=8, repeat_call_interval=0.0)


def test_every_rate_limit_mistake_is_named_by_its_key() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_with('[rate_limit]\nrate = 0\nburst = 1.5\nrepeat_call_interval = "-1s"\n'
                           'rat = 3'), {})
    problems = err.value.problems
    assert [p.split(":")[0] for p in problems] == [
        "rate_limit.rat", "rate_limit.rate", "rate_limit.burst", "rate_limit.repeat_call_interval"]
    assert 'did you mean "rate"' in problems[0]
    for bad in ("true", '"fast"', "nan", "2e6"):
        with pytest.raises(ConfigError, match=r"^rate_limit\.rate: "):
            parse_config(_with(f"[rate_limit]\nrate = {bad}"), {})
    for bad in ("0", "true", '"50"'):
        with pytest.raises(ConfigError, match=r"^rate_limit\.burst: "):
            parse_config(_with(f"[rate_limit]\nburst = {bad}"), {})


# --- the whole service under a flood --------------------------------------------------------

FLOOD = 4000


def flood(broker: Mosquitto, messages: list[tuple[str, bytes]]) -> None:
    """Publish every message at QoS 1 as fast as the broker takes them; wait for every ack."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(200)
    client.max_queued_messages_set(0)
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert connected.wait(5), "flooder: no CONNACK"
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=30)
    finally:
        client.disconnect()
        client.loop_stop()


def small_limits(site: Site) -> None:
    site.rate_limit = {"rate": 10, "burst": 20, "repeat_call_interval": "5s"}


async def stored_events(svc: Service, db: Path) -> list[dict[str, Any]]:
    """The events table as the service committed it (read-only; WAL lets us read alongside)."""
    await svc.runtime.store.flush()
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT booth, payload FROM events").fetchall()
    return [{"booth": booth, **json.loads(payload)} for booth, payload in rows]


DROPPED_B1 = ('boothwatch_messages_dropped_total{booth="b1",reason="%s",'
              'source="canonical"}')


@pytest.mark.integration
async def test_a_flooding_device_is_dropped_and_other_booths_are_unaffected(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """4,000 motion reports from b1's radar, interleaved with b2's ordinary events and a call
    on b2, and at 3,000 a call from the radar itself: the drops are counted, every b2 event
    is stored, b2's call is paged, and b1's own call opens an incident in mid-flood."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="30s",
                             edit=small_limits) as svc:
        radar = events_topic("b1")
        others = [event("occupancy", occupied=True, id="b2-1", device="pir"),
                  event("motion", state="moving", id="b2-2", device="pir"),
                  event("button", press="call", id="b2-call", device="button"),
                  event("heartbeat", battery=80, id="b2-3", device="pir"),
                  event("motion", state="still", id="b2-4", device="pir")]
        queue = iter(others)
        messages = []
        for i in range(FLOOD):
            state = "moving" if i % 2 else "still"
            messages.append((radar, event("motion", state=state, id=f"f{i}", device="radar")))
            if i % 800 == 400:
                messages.append((events_topic("b2"), next(queue)))
            if i == 3000:  # the same sender: b1's unnamed devices share one bucket; the
                # escape hides the bytes "call" from the drop path's shortcut
                messages.append((radar, b'{"kind":"button","press":"\\u0063all","id":"b1-press"}'))
            if i == 2500:  # another unnamed device: held back in its own kind's slot
                messages.append((radar, event("occupancy", occupied=True, id="occ",
                                              device="timer")))
        # the flood's last word: held back, then handed over once a token is free
        messages.append((radar, event("motion", state="absent", id="last", device="radar")))
        flood(mosquitto, messages)

        pages = await svc.hook.wait(2, 10)
        assert sorted((p["booth"], p["responder"], p["level"]) for p in pages) == [
            ("b1", "ana", 1), ("b2", "ana", 1)]
        db = tmp_path / "boothwatch.db"

        async def all_handled() -> tuple[float, list[dict[str, Any]]] | None:
            dropped = await svc.metric(DROPPED_B1 % "rate_limited")
            stored = await stored_events(svc, db)
            b1 = sum(e["booth"] == "b1" for e in stored)
            return (dropped, stored) if dropped + b1 == FLOOD + 3 else None

        dropped, stored = await eventually(all_handled, 20, every=0.2)
        # every flood message is handled now: still only the two pages
        assert sorted((p["booth"], p["responder"], p["level"]) for p in svc.hook.pages) == [
            ("b1", "ana", 1), ("b2", "ana", 1)]
        assert sorted(e["id"] for e in stored if e["booth"] == "b2") == sorted(
            json.loads(m)["id"] for m in others)
        assert {"b1-press", "last", "occ"} <= {e["id"] for e in stored}
        b1_state = next(b for b in svc.runtime.booths_json() if b["booth"] == "b1")
        assert (b1_state["motion"], b1_state["occupied"]) == ("absent", True)
        # the burst plus 10 a second over the flood's few seconds, not thousands
        assert 20 <= FLOOD - dropped < 200
        assert await svc.metric("boothwatch_senders_flooding") == 1.0
        assert await svc.metric(DROPPED_B1 % "repeated_call") == 0.0
        incidents = sorted((i["booth"], i["triggers"]) for i in await svc.incidents("open"))
        assert incidents == [("b1", ["call"]), ("b2", ["call"])]


async def _at_least(value: Any, floor: float) -> float | None:
    got = float(await value)
    return got if got >= floor else None


@pytest.mark.integration
async def test_a_stuck_call_button_pages_once_and_jumps_once(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """3,000 calls from one stuck button: one incident, one first page, one urgent jump
    (level 2 to both), no storm; a call on the other booth is paged meanwhile."""
    # repeat: the top level's own repeat (1 s by default) would page level 2 again while a
    # loaded box is still working through the flood, which is not a jump
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="30s", repeat="1h",
                             edit=small_limits) as svc:
        stuck = event("button", press="call", device="stuck")
        messages = [(events_topic("b1"), stuck)] * 3000
        messages.insert(1500, (events_topic("b2"), event("button", press="call", id="b2")))
        flood(mosquitto, messages)
        await eventually(lambda: _at_least(svc.metric(DROPPED_B1 % "rate_limited"), 2900), 20)

        async def handled() -> float:  # every message dropped or taken by the core
            return sum([await svc.metric(DROPPED_B1 % reason)
                        for reason in ("rate_limited", "repeated_call")]
                       + [await svc.metric(f'boothwatch_events_total{{kind="button",'
                                           f'result="{result}"}}')
                          for result in ("accepted", "duplicate")])

        await eventually(lambda: _at_least(handled(), len(messages)), 20)
        await svc.hook.wait(4, 10)
        await asyncio.sleep(0.5)  # a page the last messages caused would be in flight
        by_booth = sorted((p["booth"], p["responder"], p["level"], p["urgent"])
                          for p in svc.hook.pages)
        assert by_booth == [("b1", "ana", 1, False), ("b1", "ana", 2, True),
                            ("b1", "rui", 2, True), ("b2", "ana", 1, False)]
        assert await svc.metric(DROPPED_B1 % "repeated_call") >= 10
        incidents = {i["booth"]: i for i in await svc.incidents("open")}
        assert incidents["b1"]["urgent"] is True and incidents["b1"]["level"] == 2
        assert len(await svc.incidents("all")) == 2


DEVICES = [
    device("b1-button", "zigbee2mqtt", "zigbee2mqtt/b1-button", "b1", "call_button"),
    device("b1-radar", "zigbee2mqtt", "zigbee2mqtt/b1-radar", "b1", "motion"),
    device("b2-call", "esphome", "b2node/binary_sensor/call/state", "b2", "call_button"),
]


def small_limits_and_devices(site: Site) -> None:
    small_limits(site)
    site.devices = DEVICES


@pytest.mark.integration
async def test_off_the_shelf_floods_are_limited_per_device_and_calls_get_through(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """b1's Zigbee radar and button both flood; the button's one real press (mid-flood,
    its bucket empty) opens b1's incident, and b2's ESPHome button pages too."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="30s",
                             edit=small_limits_and_devices) as svc:
        chatter = json.dumps({"battery": 97, "linkquality": 120}).encode()
        press = json.dumps({"action": "single", "battery": 97, "linkquality": 120}).encode()
        messages = []
        for i in range(2000):
            radar = {"presence": True, "state": "move" if i % 2 else "presence", "distance": i}
            messages.append(("zigbee2mqtt/b1-radar", json.dumps(radar).encode()))
            messages.append(("zigbee2mqtt/b1-button", press if i == 1500 else chatter))
            if i == 1000:
                messages.append(("b2node/binary_sensor/call/state", b"OFF"))
            if i == 1001:
                messages.append(("b2node/binary_sensor/call/state", b"ON"))
        flood(mosquitto, messages)

        pages = await svc.hook.wait(2, 10)
        assert sorted((p["booth"], p["responder"], p["level"]) for p in pages) == [
            ("b1", "ana", 1), ("b2", "ana", 1)]
        dropped = ('boothwatch_messages_dropped_total{booth="b1",reason="rate_limited",'
                   'source="zigbee2mqtt"}')
        # two senders, each let through its burst plus 10 a second
        assert await eventually(lambda: _at_least(svc.metric(dropped), 3000), 20)
        assert await svc.metric("boothwatch_senders_flooding") == 2.0
        incidents = sorted((i["booth"], i["triggers"]) for i in await svc.incidents("open"))
        assert incidents == [("b1", ["call"]), ("b2", ["call"])]


@pytest.mark.integration
async def test_a_flooding_pager_gateway_is_limited_on_the_ack_topic(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """2,000 acks for an unknown incident: most are dropped before the core sees them, and
    the events topic is not held up."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="30s",
                             edit=small_limits) as svc:
        ack = json.dumps({"incident": "01NOPE", "responder": "ana"}).encode()
        messages = [(f"boothwatch/{SITE}/ack", ack)] * 2000
        messages.insert(1000, (events_topic("b2"), event("button", press="call")))
        flood(mosquitto, messages)
        await svc.hook.wait(1, 10)
        dropped = 'boothwatch_messages_dropped_total{booth="",reason="rate_limited",source="ack"}'

        async def settled() -> float | None:
            ignored = await svc.metric('boothwatch_mqtt_acks_total{result="ignored"}')
            return ignored if ignored + await svc.metric(dropped) == 2000 else None

        ignored = await eventually(settled, 20)
        assert 20 <= ignored < 200  # the burst plus 10 a second reached the core


@pytest.mark.integration
async def test_a_held_back_message_is_acknowledged_only_once_stored(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """A flooding sender's latest message is held back until a token frees; a crash
    meanwhile must not lose it. It stays unacknowledged, so the broker redelivers it to the
    restarted service, which stores it: the core ends with the last thing the device said."""
    async with Webhook() as webhook:
        site = service_site(mqtt_port=mosquitto.port, http_port=free_port(),
                            webhook_url=webhook.url, store=tmp_path / "boothwatch.db")
        # one message at once, then one every 60 s: the second is held back for a minute
        site.rate_limit = {"rate": 0.0167, "burst": 1}
        svc = ServiceProcess.of(site, tmp_path)
        svc.start()
        try:
            await svc.ready()
            mqtt_publish(events_topic("b1"), event("occupancy", occupied=True, id="o1"))
            mqtt_publish(events_topic("b1"), event("motion", state="still", id="m1"))
            await eventually(lambda: "messages_dropped" in svc.log.read_text(), 10)
            svc.kill9()  # m1 is held back, not yet stored
            site.rate_limit = None
            site.write(svc.config)
            svc.start()
            await svc.ready()

            async def b1() -> dict[str, Any] | None:
                async with aiohttp.ClientSession() as http, http.get(
                        f"http://127.0.0.1:{svc.http_port}/api/booths") as resp:
                    booth: dict[str, Any] = next(b for b in await resp.json()
                                                 if b["booth"] == "b1")
                    return booth if booth["motion"] == "still" else None

            booth = await eventually(b1, 10)
            assert booth["occupied"] is True and booth["still_since"] is not None
        finally:
            assert await svc.stop() == 0
        with contextlib.closing(sqlite3.connect(tmp_path / "boothwatch.db")) as conn:
            ids = [json.loads(p)["id"] for (p,) in conn.execute("SELECT payload FROM events")]
        assert sorted(ids) == ["m1", "o1"]
