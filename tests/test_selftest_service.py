"""Scheduled self-tests through the real service: real Mosquitto, SQLite, HTTP, a hand clock.

Ana (nurse) has the webhook pager and the mqtt channel; Rui (coordinator) and Tom
(technician) the pager; Joe's only channel is a console nobody watches, which cannot be
tested. `[self_test] schedule = "daily 09:00"`, answers within 30 minutes.
"""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from monitor.core.selftest import (
    RoundClosed,
    RoundStarted,
    SelfTests,
    channel_of,
    next_round,
    parse_schedule,
)
from monitor.core.settings import ChannelConfig, SelfTestConfig
from tests.harness.broker import Mosquitto, Publish
from tests.harness.core import make_config
from tests.harness.service import HandClock, Service, eventually, start_service
from tests.harness.site import SITE, Site, responder

pytestmark = pytest.mark.integration

LISBON = ZoneInfo("Europe/Lisbon")
BEFORE = datetime(2026, 3, 2, 8, 59, tzinfo=LISBON).timestamp()  # a Monday, 08:59


def self_tested(site: Site) -> None:
    site.channels = {**site.channels, "bus": {"type": "mqtt"},
                     "journal": {"type": "console"}}
    site.responders = [
        responder("ana", ["nurse"], ["pager", "bus"]),
        responder("rui", ["coordinator"], ["pager"]),
        responder("tom", ["technician"], ["pager"]),
        responder("joe", ["nurse"], ["journal", "pager"]),
    ]
    site.self_test = {"schedule": "daily 09:00", "answer_within": "30m"}


@pytest.fixture
def bus(mosquitto: Mosquitto) -> Iterator[queue.Queue[dict[str, Any]]]:
    """What the mqtt channel publishes to Ana's page topic."""
    got: queue.Queue[dict[str, Any]] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = lambda _c, _u, msg: got.put(json.loads(msg.payload))
    client.connect(mosquitto.host, mosquitto.port)
    client.subscribe(f"boothwatch/{SITE}/pages/ana", qos=1)
    client.loop_start()
    try:
        yield got
    finally:
        client.disconnect()
        client.loop_stop()


def pages_of(svc: Service, kind: str = "test") -> list[dict[str, Any]]:
    return [p for p in svc.hook.pages if p.get("kind") == kind]


async def answer(svc: Service, page: dict[str, Any]) -> str:
    async with svc.http.get(page["ack_url"]) as resp:
        text = await resp.text()
        assert resp.status == 200 and "It reached me" in text and " on pager" in text
    async with svc.http.post(page["ack_url"]) as resp:
        assert resp.status == 200
        return await resp.text()


async def channels(svc: Service) -> dict[str, dict[str, dict[str, Any]]]:
    async with svc.http.get(f"{svc.base}/api/responders") as resp:
        return {r["id"]: {c["name"]: c for c in r["channels"]} for r in await resp.json()}


async def test_scheduled_self_test_pages_every_channel_and_unanswered_ones_are_told(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish,
    bus: queue.Queue[dict[str, Any]],
) -> None:
    """At 09:00 every channel that reaches a person gets a marked test page with its own
    link; taps verify their channel; at 09:30 the coordinator and the technician hear which
    channels nobody confirmed; /api/responders, /metrics and a restart keep it."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, edit=self_tested,
                             clock=HandClock(BEFORE)) as svc:
        svc.advance(59)
        assert pages_of(svc) == []
        svc.advance(1)
        pages = await eventually(lambda: len(pages_of(svc)) == 4 and pages_of(svc))
        on_bus = bus.get(timeout=5)
        assert sorted(p["responder"] for p in pages) == ["ana", "joe", "rui", "tom"]
        for page in [*pages, on_bus]:
            assert page["message"].startswith("TEST PAGE from boothwatch (Sala Mouraria) to ")
            assert page["message"].endswith(" at 2026-03-02 09:00:00+00:00. Tap the link to "
                                            "confirm it reached you.")
            assert page["ack_url"].startswith(f"{svc.base}/ack/")
        assert " via bus " in on_bus["message"] and on_bus["responder"] == "ana"
        assert len({p["ack_url"] for p in [*pages, on_bus]}) == 5
        by = {p["responder"]: p for p in pages}
        delivered = 'boothwatch_self_tests_total{result="delivered"}'
        await eventually(lambda: svc.metric(delivered), 5)  # the broker's PUBACK, too
        assert await eventually(lambda: svc.metric(delivered)) == 5

        svc.advance(120)
        assert "This channel (pager) reaches you" in await answer(svc, by["ana"])
        await answer(svc, by["rui"])
        await answer(svc, by["joe"])
        assert "(pager) reaches you" in await answer(svc, by["rui"])  # twice: harmless
        svc.advance(28 * 60 - 1)
        assert pages_of(svc, "system") == []
        svc.advance(1)  # 09:30: Ana's bus and Tom's pager unanswered
        told = await eventually(lambda: len(pages_of(svc, "system")) == 2
                                and pages_of(svc, "system"))
        assert sorted(t["responder"] for t in told) == ["rui", "tom"]
        assert {t["event"] for t in told} == {"self_test_unanswered"}
        assert told[0]["message"] == (
            "Sala Mouraria: the self-test of 09:00 was not confirmed by Ana on bus; Tom on "
            "pager. A page on these channels may not reach anyone: check them now.")

        seen = await channels(svc)
        assert seen["ana"]["pager"]["last_answered"] == "2026-03-02T09:02:00.000Z"
        assert seen["ana"]["bus"]["last_answered"] is None
        assert seen["ana"]["bus"]["last_delivered"] == "2026-03-02T09:00:00.000Z"
        assert seen["joe"]["journal"] == {"name": "journal", "type": "console",
                                          "last_delivered": None, "last_answered": None}
        answered_at = datetime(2026, 3, 2, 9, 2, tzinfo=LISBON).timestamp()
        assert await svc.metric('boothwatch_channel_last_answered_timestamp_seconds{'
                                'channel="pager",responder="ana"}') == answered_at
        assert await svc.metric('boothwatch_channel_unverified_seconds{'
                                'channel="bus",responder="ana"}') == 31 * 60
        assert await svc.metric('boothwatch_self_tests_total{result="unanswered"}') == 2
        assert await svc.metric('boothwatch_self_tests_total{result="answered"}') == 4
        await svc.runtime.store.flush()

    # a restart remembers each channel's last answer, and the next round is tomorrow
    async with start_service(tmp_path, mosquitto, mqtt_publish, edit=self_tested,
                             clock=HandClock(BEFORE + 3600)) as svc:
        seen = await channels(svc)
        assert seen["ana"]["pager"]["last_answered"] == "2026-03-02T09:02:00.000Z"
        assert seen["ana"]["pager"]["last_delivered"] == "2026-03-02T09:00:00.000Z"
        assert seen["tom"]["pager"]["last_answered"] is None
        assert svc.runtime.selftests.next_deadline() == BEFORE + 86400 + 60


def plan(now: float, schedule: str = "mon-fri 09:00") -> SelfTests:
    config = make_config(channels={"pager": ChannelConfig("pager", "webhook", url="http://x"),
                                   "journal": ChannelConfig("journal", "console")})
    days, at = parse_schedule(schedule)
    return SelfTests(SelfTestConfig(days, at, schedule, answer_within=600), config.responders,
                     config.channels, "Europe/Lisbon", iter(f"{n:026d}" for n in range(99)
                                                             ).__next__,
                     lambda targets, now: ("rui",), now)


def test_the_plan_on_a_hand_stepped_clock() -> None:
    """Rounds on schedule days only, in the site's zone; a late answer still verifies its
    channel; a failed delivery is named; the coordinators hear of what is missing."""
    friday = datetime(2026, 3, 6, 9, 0, tzinfo=LISBON).timestamp()
    p = plan(friday - 60)
    assert p.next_deadline() == friday
    (started,) = p.on_timer(friday)
    assert isinstance(started, RoundStarted)
    assert [(t.responder, t.channel) for t in started.tests] == [("ana", "pager"),
                                                                 ("rui", "pager")]
    assert channel_of(started.tests[0].test) == "pager"
    p.failed(started.tests[1].test, "HTTP 503")
    assert p.next_deadline() == friday + 600
    (closed,) = p.on_timer(friday + 600)
    assert isinstance(closed, RoundClosed)
    assert [(m.responder, m.failed) for m in closed.missing] == [("ana", None),
                                                                  ("rui", "HTTP 503")]
    assert closed.recipients == ("rui",)
    assert p.answered(started.tests[0].test, "ana", friday + 700) == ("ana", "pager")
    assert p.answered(started.tests[0].test, "joe", friday + 700) is None  # no such responder
    assert p.answered("selftest-journal-" + "0" * 26, "ana", friday + 700) is None
    assert p.unverified_for(("ana", "pager"), friday + 800) == 100
    monday = datetime(2026, 3, 9, 9, 0, tzinfo=LISBON).timestamp()
    assert p.next_deadline() == monday  # the weekend has none
    assert next_round(p.config, monday, p.tz) == monday + 86400
    # summer time: 09:00 in Lisbon is 08:00 UTC
    july = datetime(2026, 7, 1, 9, 0, tzinfo=LISBON)
    assert datetime.fromtimestamp(next_round(p.config, july.timestamp() - 1, p.tz),
                                  ZoneInfo("UTC")).hour == 8
    for bad in ("09:00", "daily 9:00", "daily 24:00", "someday 09:00"):
        with pytest.raises(ValueError):
            parse_schedule(bad)
