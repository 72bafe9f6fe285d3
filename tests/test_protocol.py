"""The response protocol through the real service: real Mosquitto, real SQLite, real HTTP,
and the ack page in a real Chromium. Time is stepped by hand where escalation matters."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import ViewportSize

from monitor.store import SCHEMA_VERSION, Store
from tests.harness.broker import Mosquitto, Publish
from tests.harness.browser import chromium
from tests.harness.service import (
    HandClock,
    Service,
    event,
    events_topic,
    eventually,
    start_service,
)
from tests.harness.site import SITE

pytestmark = pytest.mark.integration

STEPS_TOPIC = f"boothwatch/{SITE}/steps"
PHONE = ViewportSize(width=390, height=844)


@pytest.fixture
async def service(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> AsyncIterator[Service]:
    """The service with escalation slow enough that nothing moves during a test."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h", repeat="1h",
                             ack_timeout="1h") as svc:
        yield svc


async def call(svc: Service, booth: str = "b1") -> dict[str, Any]:
    """Press call at `booth`; the first page of its incident."""
    start = len(svc.hook.pages)
    svc.publish(events_topic(booth), event("button", press="call"))
    await svc.hook.wait(start + 1)
    return svc.hook.pages[start]


async def incident(svc: Service, incident_id: str) -> dict[str, Any]:
    return next(i for i in await svc.incidents() if i["id"] == incident_id)


async def form(svc: Service, url: str, **fields: str) -> tuple[int, str]:
    async with svc.http.post(url, data=fields) as resp:
        return resp.status, await resp.text()


async def metrics(svc: Service) -> str:
    async with svc.http.get(f"{svc.base}/metrics") as resp:
        return await resp.text()


def sample(text: str, name: str, **labels: str) -> float:
    """One sample of the metrics text, by name and labels (in any order)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if found == labels:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_nurse_answers_on_her_phone_in_chromium(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Sensor-only booth, a stillness page: in Chromium the nurse presses I'm going, I'm at the
    booth, Entered, Naloxone given (2 doses), adds a note and resolves. Presence and every step
    are recorded as hers, through the link."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, stillness="1s", step2="1h",
                             repeat="1h", ack_timeout="1h", clock=HandClock()) as svc:
        svc.publish(events_topic("b1"), event("occupancy", occupied=True))
        svc.publish(events_topic("b1"), event("motion", state="still"))
        await eventually(lambda: svc.runtime.driver.core.booths["b1"].occupied)
        svc.advance(1)
        page = (await svc.hook.wait(1))[0]
        assert page["message"] == "Booth 1: no movement for 1s"
        async with chromium() as chrome:
            phone = await chrome.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
            browser = await phone.new_page()
            await browser.goto(page["ack_url"])
            await browser.get_by_role("button", name="I'm going (ana)").click()
            text = await browser.locator("body").inner_text()
            assert "Acknowledged" in text and "I'm at the booth" in text
            assert "Press presence" not in text
            await browser.screenshot(path=str(tmp_path / "ack-page-going.png"), full_page=True)
            await browser.get_by_role("button", name="I'm at the booth").click()
            assert "You are at the booth: paging has stopped." in await browser.locator(
                "body").inner_text()
            await browser.get_by_role("button", name="Entered the booth").click()
            await browser.get_by_label("Doses").fill("2")
            await browser.get_by_role("button", name="Naloxone given").click()
            assert "Recorded: Naloxone given." in await browser.locator("body").inner_text()
            await browser.get_by_placeholder("A note for the record").fill(
                "breathing again after 2nd dose")
            await browser.get_by_role("button", name="Add note").click()
            done = await browser.locator("li[data-step]").all_inner_texts()
            assert [re.sub(r"^\d\d:\d\d:\d\d ", "", d) for d in done] == [
                "Entered the booth, ana", "Naloxone given (doses: 2), ana",
                "Note: breathing again after 2nd dose, ana"]
            await browser.screenshot(path=str(tmp_path / "ack-page-steps.png"), full_page=True)
            await browser.get_by_label("Overdose: naloxone given").check()
            await browser.get_by_role("button", name="Resolve with this outcome").click()
            assert "Resolved" in await browser.locator("h1").inner_text()
        inc = await incident(svc, page["incident"])
        assert (inc["state"], inc["outcome"]) == ("resolved", "overdose_naloxone")
        assert (inc["presence_by"], inc["presence_at"]) == ("ana", inc["acknowledged_at"])
        assert inc["response"]["to_presence"] is not None
        assert [(s["step"], s["responder"], s["via"], s.get("count")) for s in inc["steps"]] == [
            ("entered", "ana", "link", None), ("naloxone", "ana", "link", 2),
            ("note", "ana", "link", None)]
        assert inc["naloxone_doses"] == 2 and inc["entered_at"] == inc["steps"][0]["at"]
        assert await svc.runtime.store.count("steps") == 3


async def test_presence_and_steps_from_the_ack_page(service: Service) -> None:
    """A step done at the booth is presence; a form sent twice records once; a used link still
    records steps; bad input is 400 saying what the form takes; a resolved incident is 409."""
    svc = service
    page = await call(svc)
    link = page["ack_url"]
    status, text = await form(svc, link)
    assert status == 200 and 'name="seen" value="0"' in text
    assert (await form(svc, f"{link}/steps", step="knocked", seen="0"))[0] == 200
    inc = await incident(svc, page["incident"])
    assert (inc["state"], inc["presence_by"]) == ("attended", "ana")
    assert inc["presence_at"] == inc["steps"][0]["at"]
    # a double tap: both forms carry the same "seen"
    first = await form(svc, f"{link}/steps", step="naloxone", count="1", seen="1")
    second = await form(svc, f"{link}/steps", step="naloxone", count="1", seen="1")
    assert "Recorded: Naloxone given." in first[1]
    assert second[0] == 200 and "Already recorded" in second[1]
    # the page the first press returned counts it: another dose from there is recorded
    assert 'name="seen" value="2"' in first[1]
    assert (await form(svc, f"{link}/steps", step="naloxone", count="1", seen="2"))[0] == 200
    inc = await incident(svc, page["incident"])
    assert [s["step"] for s in inc["steps"]] == ["knocked", "naloxone", "naloxone"]
    assert inc["naloxone_doses"] == 2
    for fields in [{"step": "kicked"}, {"step": "oxygen", "count": "2"},
                   {"step": "naloxone", "count": "11"}, {"step": "naloxone", "count": "two"},
                   {"step": "note", "note": "  "}, {"step": "knocked", "seen": "-1"}]:
        status, text = await form(svc, f"{link}/steps", **fields)
        # the page's own limits keep a person from these: it says what the form takes
        assert status == 400 and "naloxone takes 1 to 10 doses" in text, (fields, text)
    assert len((await incident(svc, page["incident"]))["steps"]) == 3
    status, _ = await svc.post(f"/api/incidents/{page['incident']}/resolve",
                               {"responder": "ana", "outcome": "ok"})
    assert status == 200
    assert (await form(svc, f"{link}/steps", step="oxygen"))[0] == 409
    assert (await form(svc, f"{link}/presence"))[0] == 409
    async with svc.http.get(link) as resp:
        text = await resp.text()
    assert "Steps so far:" in text and "Naloxone given (doses: 1), ana" in text


async def test_a_reopen_page_says_it_reopened(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Ana acknowledges and nobody reaches the booth by the ack timeout: the pages of the
    re-open say so, and the new link's page says it re-opened."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="0.5s", repeat="1h",
                             ack_timeout="40s", clock=HandClock()) as svc:
        page = await call(svc)
        assert page["message"] == "Booth 1: call button pressed"
        assert (await form(svc, page["ack_url"]))[0] == 200
        svc.advance(40)
        pages = (await svc.hook.wait(3))[1:]
        assert {(p["responder"], p["level"]) for p in pages} == {("ana", 2), ("rui", 2)}
        assert {p["message"] for p in pages} == {
            "re-opened: nobody at Booth 1 yet, 40s after Ana acknowledged (call button pressed)"}
        async with svc.http.get(pages[0]["ack_url"]) as resp:
            assert "Re-opened: nobody reached the booth" in await resp.text()


async def test_steps_land_in_order_and_answered_stops_escalation(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """An unresponsive person: steps from the API and from a pager gateway over MQTT land in
    order with their stamps; the gateway's `ems_called` lets escalation go on, `answered`
    stops it without stamping presence; the steps are counted and timed in /metrics."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, stillness="2s", step2="10s",
                             repeat="10s", ack_timeout="1h", clock=HandClock()) as svc:
        clock = svc.runtime.clock
        assert isinstance(clock, HandClock)
        raised_at = clock.now + 2
        svc.publish(events_topic("b1"), event("occupancy", occupied=True))
        svc.publish(events_topic("b1"), event("motion", state="still"))
        await eventually(lambda: svc.runtime.driver.core.booths["b1"].occupied)
        svc.advance(2)
        iid = (await svc.hook.wait(1))[0]["incident"]

        svc.advance(3)
        svc.publish(STEPS_TOPIC, json.dumps({"incident": iid, "responder": "rui",
                                             "step": "ems_called", "note": "from the desk"}))
        await eventually(lambda: svc.runtime.driver.core.incidents[iid].first_steps)
        svc.advance(7)  # level 2 at +10 s: ems_called does not stop escalation
        await svc.hook.wait(3)
        assert svc.hook.since(1) == [("ana", 2), ("rui", 2)]

        svc.advance(1)
        status, body = await svc.post(f"/api/incidents/{iid}/steps",
                                      {"responder": "ana", "step": "answered"})
        assert status == 200
        assert (body["state"], body["presence_at"]) == ("attended", None)
        notice = await eventually(lambda: [n for n in svc.hook.notices
                                           if n["responder"] == "rui"])
        assert notice[0]["message"] == ("The person in Booth 1 answered Ana: nobody else need "
                                        "come")
        # fine, as they said: moving again (a person who stays still is paged afresh)
        svc.publish(events_topic("b1"), event("motion", state="moving"))
        await eventually(lambda: svc.runtime.driver.core.booths["b1"].still_since is None)
        svc.advance(600)
        paged = [e for e in (await incident(svc, iid))["timeline"] if e["kind"] == "page"]
        assert len(paged) == 3  # escalation stopped

        svc.advance(4)
        svc.publish(STEPS_TOPIC, json.dumps({"incident": iid, "responder": "ana",
                                             "step": "entered"}))
        svc.publish(STEPS_TOPIC, json.dumps({"incident": iid, "responder": "ana",
                                             "step": "oxygen", "count": 1}))  # rejected
        svc.publish(STEPS_TOPIC, b"{not json")
        svc.publish(STEPS_TOPIC, json.dumps({"incident": "nope", "responder": "ana",
                                             "step": "knocked"}))
        svc.publish(STEPS_TOPIC, json.dumps({"incident": iid, "responder": "ana",
                                             "step": "naloxone", "count": 2}))
        inc = await eventually(lambda: _with_steps(svc, iid, 4))
        stamps = [(s["step"], s["responder"], s["via"], s.get("count"), s.get("note"),
                   s["at"]) for s in inc["steps"]]
        t = raised_at
        assert stamps == [
            ("ems_called", "rui", "mqtt", None, "from the desk", _iso(t + 3)),
            ("answered", "ana", "api", None, None, _iso(t + 11)),
            ("entered", "ana", "mqtt", None, None, _iso(t + 615)),
            ("naloxone", "ana", "mqtt", 2, None, _iso(t + 615)),
        ]
        # entering is presence, the first one at the booth
        assert (inc["presence_by"], inc["presence_at"]) == ("ana", _iso(t + 615))
        assert inc["response"]["to_enter"] == 615 and inc["response"]["to_naloxone"] == 615
        assert inc["response"]["to_presence"] == 615
        await svc.runtime.store.flush()
        assert await svc.runtime.store.count("steps") == 4

        text = await metrics(svc)
        labels = {"trigger": "unresponsive", "priority": "high", "booth": "b1", "level": "2"}
        assert sample(text, "boothwatch_time_to_enter_seconds_count", **labels) == 1
        assert sample(text, "boothwatch_time_to_naloxone_seconds_sum", **labels) == 615
        assert sample(text, "boothwatch_time_to_presence_seconds_count", **labels) == 1
        assert sample(text, "boothwatch_naloxone_doses_total", booth="b1") == 2
        for step, n in (("answered", 1), ("ems_called", 1), ("knocked", 0)):
            assert sample(text, "boothwatch_protocol_steps_total", step=step,
                          trigger="unresponsive") == n
        for result, n in (("accepted", 3), ("rejected", 2), ("ignored", 1)):
            assert sample(text, "boothwatch_mqtt_steps_total", result=result) == n, result


async def _with_steps(svc: Service, iid: str, count: int) -> dict[str, Any] | None:
    inc = await incident(svc, iid)
    return inc if len(inc["steps"]) >= count else None


def _iso(at: float) -> str:
    from monitor.codec import iso

    text = iso(at)
    assert text is not None
    return text


async def test_bad_steps_are_400_naming_the_field(service: Service) -> None:
    """Each bad body is refused naming its field, and nothing is recorded."""
    svc = service
    iid = (await call(svc))["incident"]
    path = f"/api/incidents/{iid}/steps"
    bad: list[tuple[dict[str, Any], str]] = [
        ({"step": "knocked"}, "responder:"),
        ({"responder": "ana"}, "step: one of knocked, answered, entered, naloxone, oxygen, "
                               "ems_called, ems_arrived, note"),
        ({"responder": "ana", "step": "Naloxone"}, "step: one of"),
        ({"responder": "ana", "step": "naloxone", "count": 0}, "count: a whole number of doses "
                                                               "from 1 to 10"),
        ({"responder": "ana", "step": "naloxone", "count": True}, "count: a whole number"),
        ({"responder": "ana", "step": "naloxone", "count": None}, "count: a whole number"),
        ({"responder": "ana", "step": "naloxone", "count": "2"}, "count: a whole number"),
        ({"responder": "ana", "step": "entered", "count": 1}, "count: only with naloxone"),
        ({"responder": "ana", "step": "note"}, "note: the note step needs its text"),
        ({"responder": "ana", "step": "knocked", "note": "x" * 501}, "note: text of at most "
                                                                     "500 characters"),
    ]
    for body, problem in bad:
        status, answer = await svc.post(path, body)
        assert (status, answer["error"][:len(problem)]) == (400, problem), body
    assert (await incident(svc, iid))["steps"] == []
    status, answer = await svc.post("/api/incidents/nope/steps",
                                    {"responder": "ana", "step": "knocked"})
    assert (status, answer) == (404, {"error": "unknown incident"})
    status, answer = await svc.post(path, {"responder": "ana", "step": "naloxone", "count": 3})
    assert status == 200 and answer["naloxone_doses"] == 3


async def test_a_version_3_store_gets_the_steps_table(tmp_path: Path) -> None:
    """A store made before protocol steps opens with the table added, at this version."""
    path = tmp_path / "old.db"
    store = await Store.open(str(path))
    await store.close()
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE steps")
        db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    store = await Store.open(str(path))
    try:
        assert await store.count("steps") == 0
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            str(SCHEMA_VERSION),)
        assert SCHEMA_VERSION == 4
