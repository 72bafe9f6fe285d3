"""Issue 15 end to end: session risk, opening hours and busy responders.

The real service (Runtime) with a real Mosquitto, real SQLite and real HTTP; the pager
is a local webhook server. Where a threshold is minutes long, time is stepped by hand.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.harness.broker import Mosquitto, Publish
from tests.harness.service import HandClock, Service, event, events_topic, eventually, start_service
from tests.harness.site import Site, booths, responder

pytestmark = pytest.mark.integration


def booth(svc: Service, booth_id: str = "b1") -> dict[str, Any]:
    return next(b for b in svc.runtime.booths_json() if b["booth"] == booth_id)


async def incident_of(svc: Service, booth_id: str) -> dict[str, Any]:
    incidents = await svc.incidents()
    return next(i for i in incidents if i["booth"] == booth_id)


async def session_starts(svc: Service, **fields: Any) -> None:
    """A session starts at b1 (the occupancy event carries `fields`), its person still."""
    svc.publish(events_topic("b1"), event("occupancy", occupied=True, **fields))
    svc.publish(events_topic("b1"), event("motion", state="still"))
    await eventually(lambda: booth(svc)["occupied"] and booth(svc)["motion"] == "still")


async def test_a_high_risk_session_pages_at_its_shorter_stillness_and_the_next_is_standard(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Marked high at check-in (the occupancy event), a still person pages at 60 s; the
    next session at the booth is standard again: nothing at 60 s, the page at 3 min."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h",
                             clock=HandClock()) as svc:
        await session_starts(svc, risk="high", route="inject")
        shown = booth(svc)
        assert (shown["risk"], shown["route"], shown["stillness"], shown["long_session"]) == (
            "high", "inject", 60.0, 600.0)
        svc.advance(59)
        assert await svc.incidents() == []
        svc.advance(1)
        page = (await svc.hook.wait(1))[0]
        assert (page["responder"], page["triggers"], page["message"]) == (
            "ana", ["unresponsive"], "Booth 1: no movement for 1m (high-risk session)")
        first = await incident_of(svc, "b1")
        assert first["risk"] == "high"
        assert first["timeline"][0]["risk"] == "high"
        status, _ = await svc.post(f"/api/incidents/{first['id']}/resolve",
                                   {"responder": "ana", "outcome": "ok"})
        assert status == 200

        svc.publish(events_topic("b1"), event("occupancy", occupied=False))
        await eventually(lambda: not booth(svc)["occupied"])
        assert (booth(svc)["risk"], booth(svc)["route"]) == ("standard", None)
        await session_starts(svc)
        assert booth(svc)["stillness"] == 180.0
        svc.advance(179)
        assert len(await svc.incidents()) == 1
        svc.advance(1)
        page = (await svc.hook.wait(2))[1]
        assert page["message"] == "Booth 1: no movement for 3m"
        assert await svc.metric(
            'boothwatch_sessions_marked_total{risk="high",route="inject"}') == 1.0
        async with svc.http.get(f"{svc.base}/api/audit?subject=b1") as resp:
            audit = [(a["kind"], a["risk"], a["via"]) for a in await resp.json()]
        assert audit == [("session_marked", "high", "event")]


async def test_staff_mark_a_session_through_the_api(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """A vacant booth has no session to mark (409); a name is refused (400); a person still
    for 90 s marked high pages at once."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h",
                             clock=HandClock()) as svc:
        status, body = await svc.post("/api/booths/b1/session", {"risk": "high"})
        assert status == 409 and "no session" in body["error"]
        await session_starts(svc)
        svc.advance(90)
        status, body = await svc.post("/api/booths/b1/session",
                                      {"risk": "high", "name": "Joana Lima"})
        assert status == 400 and body["error"].startswith("name: unknown field")
        status, body = await svc.post("/api/booths/b1/session", {"risk": "extreme"})
        assert status == 400
        assert (await svc.post("/api/booths/zz/session", {"risk": "high"}))[0] == 404
        assert await svc.incidents() == []
        status, body = await svc.post("/api/booths/b1/session",
                                      {"risk": "high", "route": "smoke", "by": "rui"})
        assert status == 200
        assert (body["risk"], body["route"], body["stillness"]) == (
            "high", "smoke", 60.0)
        assert body["incident"] is not None  # overdue: raised by the mark itself
        page = (await svc.hook.wait(1))[0]
        assert page["message"] == "Booth 1: no movement for 1m (high-risk session)"
        assert await svc.metric('boothwatch_booth_high_risk{booth="b1"}') == 1.0


def closed_now(site: Site) -> None:
    """Opening hours that do not hold now: two hours from two hours ahead, every day; Tom is
    the technician."""
    now = dt.datetime.now(ZoneInfo(site.timezone))
    start, end = now + dt.timedelta(hours=2), now + dt.timedelta(hours=4)
    site.site["hours"] = [f"daily {start:%H:%M}-{end:%H:%M}"]
    site.responders.append(responder("tom", ["technician"], ["pager"]))


async def test_outside_hours_a_long_session_pages_only_the_technician_and_a_call_the_nurse(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Closed: the booths say so; a session over 20 min pages Tom alone at low priority, a
    call at the other booth pages Ana at high; the no-events alert's gauge is 0."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h",
                             clock=HandClock(), edit=closed_now) as svc:
        assert [b["closed"] for b in svc.runtime.booths_json()] == [True, True]
        assert await svc.metric("boothwatch_site_open ") == 0.0
        svc.publish(events_topic("b1"), event("occupancy", occupied=True))
        await eventually(lambda: booth(svc)["occupied"])
        svc.advance(20 * 60)
        page = (await svc.hook.wait(1))[0]
        assert (page["responder"], page["priority"], page["message"]) == (
            "tom", "low", "Booth 1: session over 20m (outside opening hours)")
        long = await incident_of(svc, "b1")
        assert (long["priority"], long["after_hours"]) == ("low", True)

        svc.publish(events_topic("b2"), event("button", press="call"))
        pages = await svc.hook.wait(2)
        assert [(p["responder"], p["booth"], p["priority"]) for p in pages] == [
            ("tom", "b1", "low"), ("ana", "b2", "high")]
        assert (await incident_of(svc, "b2"))["after_hours"] is False


def two_nurses_skipping_busy(site: Site) -> None:
    site.booths = booths(3)
    site.responders.insert(1, responder("bea", ["nurse"], ["pager"]))
    site.escalation["high"]["skip_busy"] = True


async def test_with_skip_busy_the_nurse_attending_booth_1_is_skipped_for_booth_2(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Ana is at booth 1; booth 2's call pages Bea at once and not Ana; the skip is in the
    timeline and counted."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h",
                             edit=two_nurses_skipping_busy) as svc:
        svc.publish(events_topic("b1"), event("button", press="call"))
        await svc.hook.wait(2)
        first = await incident_of(svc, "b1")
        status, _ = await svc.post(f"/api/incidents/{first['id']}/presence",
                                   {"responder": "ana"})
        assert status == 200
        svc.publish(events_topic("b2"), event("button", press="call"))
        pages = await svc.hook.wait(3)
        assert [(p["responder"], p["booth"], p["level"]) for p in pages[2:]] == [
            ("bea", "b2", 1)]
        second = await incident_of(svc, "b2")
        assert [e["responder"] for e in second["timeline"] if e["kind"] == "page"] == ["bea"]
        skipped = [e for e in second["timeline"] if e["kind"] == "busy_skipped"]
        assert [(e["role"], e["responders"], e["booths"]) for e in skipped] == [
            ("nurse", ["ana"], ["b1"])]
        assert await svc.metric(
            'boothwatch_busy_skipped_total{priority="high",role="nurse"}') == 1.0


async def test_when_every_nurse_is_busy_they_are_paged_anyway_and_the_coordinator_told(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Ana at booth 1, Bea on her way to booth 2: booth 3's call still pages both, and Rui
    gets an "all staff engaged" notice."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h",
                             edit=two_nurses_skipping_busy) as svc:
        svc.publish(events_topic("b1"), event("button", press="call"))
        await svc.hook.wait(2)
        status, _ = await svc.post(f"/api/incidents/{(await incident_of(svc, 'b1'))['id']}"
                                   "/presence", {"responder": "ana"})
        assert status == 200
        svc.publish(events_topic("b2"), event("button", press="call"))
        await svc.hook.wait(3)
        status, _ = await svc.post(f"/api/incidents/{(await incident_of(svc, 'b2'))['id']}"
                                   "/ack", {"responder": "bea"})
        assert status == 200
        svc.publish(events_topic("b3"), event("button", press="call"))
        pages = await svc.hook.wait(5)
        assert sorted((p["responder"], p["booth"]) for p in pages[3:]) == [
            ("ana", "b3"), ("bea", "b3")]
        notice = await eventually(lambda: [n for n in svc.hook.notices if n["booth"] == "b3"])
        assert [(n["responder"], n["message"]) for n in notice] == [(
            "rui", "All staff engaged: Booth 3 needs someone, paged all the same: "
                   "Ana at Booth 1; Bea at Booth 2")]
        third = await incident_of(svc, "b3")
        assert [e["roles"] for e in third["timeline"] if e["kind"] == "all_engaged"] == [
            ["nurse"]]
        assert await svc.metric(
            'boothwatch_all_staff_engaged_total{priority="high",role="nurse"}') == 1.0
