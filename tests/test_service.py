"""The whole service in-process against a real Mosquitto, real SQLite and real HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.broker import Mosquitto, Publish, retained
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


@pytest.fixture
async def service(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> AsyncIterator[Service]:
    async with start_service(tmp_path, mosquitto, mqtt_publish) as svc:
        yield svc


async def test_call_lifecycle_end_to_end(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Call -> page -> level 2 on time -> ack link -> ack timeout re-open -> presence -> clear.
    Time is stepped by hand."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, clock=HandClock()) as svc:
        svc.publish(events_topic("b1"), event("button", press="call", id="e1"))
        pages = await svc.hook.wait(1)
        first = pages[0]
        assert (first["responder"], first["level"], first["priority"]) == ("ana", 1, "high")
        assert first["site"] == SITE and first["booth"] == "b1"
        assert first["booth_name"] == "Booth 1"
        assert first["triggers"] == ["call"] and first["message"] == "Booth 1: call button pressed"
        assert first["raised_at"].endswith("Z")
        assert first["ack_url"].startswith(svc.base + "/ack/")
        assert svc.hook.bad_signatures == 0
        incident_id = first["incident"]

        # level 2 (nurse and coordinator) 1 s after the call: not before
        svc.advance(0.9)
        assert [i["level"] for i in await svc.incidents("open")] == [1]
        svc.advance(0.1)
        await svc.hook.wait(3, timeout=3)
        assert svc.hook.since(1) == [("ana", 2), ("rui", 2)]

        # GET shows the page and changes nothing
        async with svc.http.get(first["ack_url"]) as resp:
            assert resp.status == 200
            assert "Booth 1" in await resp.text()
        assert (await svc.incidents("open"))[0]["state"] == "open"

        async with svc.http.post(first["ack_url"]) as resp:
            assert resp.status == 200
        inc = (await svc.incidents())[0]
        assert (inc["state"], inc["acknowledged_by"]) == ("acknowledged", "ana")
        count = len(svc.hook.pages)

        # nobody at the booth by ack_timeout (1.5 s): re-opened, next step at once
        svc.advance(1.4)
        assert (await svc.incidents())[0]["state"] == "acknowledged"
        svc.advance(0.1)
        inc = (await svc.incidents())[0]
        assert (inc["state"], inc["reopened"]) == ("open", 1)
        await svc.hook.wait(count + 2, timeout=3)

        status, body = await svc.post(f"/api/incidents/{incident_id}/presence",
                                      {"responder": "rui"})
        assert status == 200 and body["state"] == "attended" and body["presence_by"] == "rui"
        svc.publish(events_topic("b1"), event("button", press="clear"))
        inc = await eventually(
            lambda: _first_with(svc.incidents(), lambda i: i["state"] == "resolved"))
        await svc.runtime.store.flush()
        stored, settled = len(await svc.runtime.store.pages(incident_id)), len(svc.hook.pages)
        svc.advance(1.2)  # a repeat step (every 1 s) would have fired by now
        await svc.runtime.store.flush()  # a page is stored as queued when it is fired
        assert len(await svc.runtime.store.pages(incident_id)) == stored
        assert len(svc.hook.pages) == settled

        for stamp in ("raised_at", "acknowledged_at", "presence_at", "resolved_at"):
            assert inc[stamp] is not None, stamp
        assert inc["resolved_by"] == "booth" and inc["acknowledged_by"] == "ana"
        response = inc["response"]
        assert 0 <= response["to_acknowledge"] <= response["to_presence"]
        assert response["to_presence"] <= response["to_resolve"]
        kinds = [e["kind"] for e in inc["timeline"]]
        for kind in ("trigger", "page", "ack", "presence", "escalated", "state"):
            assert kind in kinds, kind

        assert await svc.metric('boothwatch_time_to_acknowledge_seconds_count{') == 1
        assert await svc.metric('boothwatch_time_to_resolve_seconds_count{') == 1
        assert await svc.metric('boothwatch_pages_total{channel="pager",result="sent"}') >= 5
        state = retained(mosquitto, f"boothwatch/{SITE}/booths/b1/state")
        assert state["incident"] is None and state["booth"] == "b1"
        assert retained(mosquitto, f"boothwatch/{SITE}/status") == {"raw": b"online"}

        status, body = await svc.post(f"/api/incidents/{incident_id}/ack", {"responder": "ana"})
        assert status == 409
        status, body = await svc.post("/api/incidents/nope/ack", {"responder": "ana"})
        assert status == 404


async def _first_with(incidents: Any, predicate: Any) -> dict[str, Any] | None:
    for inc in await incidents:
        if predicate(inc):
            result: dict[str, Any] = inc
            return result
    return None


async def test_garbage_is_counted_and_a_call_right_after_is_paged(service: Service) -> None:
    """Not JSON, wrong types, unknown booth, oversized, bad UTF-8: counted; the next call pages."""
    svc = service
    garbage = {  # reason: (booth, payload)
        "not_json": ("b2", b"{nope"),
        "bad_field": ("b2", event("occupancy", occupied="yes")),
        "unknown_booth": ("b99", event("button", press="call")),
        "too_large": ("b2", b'{"kind":"heartbeat","pad":"' + b"x" * 17_000 + b'"}'),
        "bad_utf8": ("b2", b"\xff\xfe\xfd"),
        "not_object": ("b2", b"[1,2,3]"),
        "unknown_kind": ("b2", event("dance")),
    }
    for booth, payload in garbage.values():
        svc.publish(events_topic(booth), payload)
    svc.publish(events_topic("b1"), event("button", press="call"))
    pages = await svc.hook.wait(1, timeout=2)
    assert pages[0]["booth"] == "b1"
    for reason in garbage:
        line = f'boothwatch_events_rejected_total{{reason="{reason}"}}'
        assert await svc.metric(line) == 1, reason
    assert await svc.metric('boothwatch_events_total{kind="button",result="accepted"}') == 1


async def test_duplicate_event_id_counts_once(service: Service) -> None:
    """The same event id twice is one event; the second is counted as a duplicate."""
    svc = service
    svc.publish(events_topic("b1"), event("occupancy", occupied=True, id="dup-1"))
    svc.publish(events_topic("b1"), event("occupancy", occupied=True, id="dup-1"))
    await eventually(lambda: svc.metric(
        'boothwatch_events_total{kind="occupancy",result="duplicate"}'))
    assert await svc.metric('boothwatch_events_total{kind="occupancy",result="accepted"}') == 1
    await svc.runtime.store.flush()
    assert await svc.runtime.store.count("events") == 1


async def test_unresponsive_and_long_session_with_short_thresholds(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """A still person pages high after `stillness`; an over-long session pages medium.
    Time is stepped by hand."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, clock=HandClock(),
                             stillness="1s", long_session="1.5s", step2="1h") as svc:
        svc.publish(events_topic("b1"), event("occupancy", occupied=True))
        svc.publish(events_topic("b1"), event("motion", state="still"))
        svc.publish(events_topic("b2"), event("occupancy", occupied=True))
        svc.publish(events_topic("b2"), event("motion", state="moving"))
        await eventually(lambda: _booth(svc, "b1")["still_since"] is not None
                         and _booth(svc, "b2")["motion"] == "moving")
        svc.advance(0.9)
        assert await svc.incidents() == []
        svc.advance(0.1)  # stillness
        assert [i["triggers"] for i in await svc.incidents()] == [["unresponsive"]]
        svc.advance(0.5)  # the session's length
        pages = await svc.hook.wait(2, timeout=4)
        by_booth = {p["booth"]: p for p in pages}
        assert by_booth["b1"]["triggers"] == ["unresponsive"]
        assert by_booth["b1"]["priority"] == "high"
        assert by_booth["b2"]["triggers"] == ["long_session"]
        assert by_booth["b2"]["priority"] == "medium"
        svc.publish(events_topic("b2"), event("occupancy", occupied=False))
        inc = await eventually(lambda: _first_with(
            svc.incidents(), lambda i: i["booth"] == "b2" and i["state"] == "resolved"))
        assert inc["outcome"] == "session_ended"
        assert _booth(svc, "b1")["incident"]["state"] == "open"
        assert _booth(svc, "b1")["still_since"] is not None


def _booth(svc: Service, booth: str) -> dict[str, Any]:
    return next(b for b in svc.runtime.booths_json() if b["booth"] == booth)


async def test_api_token_protects_posts_and_forged_links_are_refused(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """With BOOTHWATCH_API_TOKEN set the API needs the bearer token; a forged link gets 403."""
    env = {"BOOTHWATCH_API_TOKEN": "s3cret", "BOOTHWATCH_SECRET": "links"}
    async with start_service(tmp_path, mosquitto, mqtt_publish, env=env) as svc:
        svc.publish(events_topic("b1"), event("button", press="call"))
        page = (await svc.hook.wait(1))[0]
        path = f"/api/incidents/{page['incident']}/ack"
        assert (await svc.post(path, {"responder": "ana"}))[0] == 401
        bad = {"Authorization": "Bearer wrong"}
        assert (await svc.post(path, {"responder": "ana"}, headers=bad))[0] == 401
        forged = page["ack_url"][:-3] + ("aaa" if not page["ack_url"].endswith("aaa") else "bbb")
        async with svc.http.post(forged) as resp:
            assert resp.status == 403
        async with svc.http.get(forged) as resp:
            assert resp.status == 403
        good = {"Authorization": "Bearer s3cret"}
        assert (await svc.incidents("open", headers=good))[0]["state"] == "open"
        status, body = await svc.post(path, {"responder": "ana"}, headers=good)
        assert status == 200 and body["state"] == "acknowledged"
        assert (await svc.post(path, {}, headers=good))[0] == 400


async def test_pager_gateway_acks_over_mqtt(service: Service) -> None:
    """A pager gateway publishing to boothwatch/<site>/ack acknowledges the incident."""
    svc = service
    svc.publish(events_topic("b2"), event("button", press="call"))
    page = (await svc.hook.wait(1))[0]
    svc.publish(f"boothwatch/{SITE}/ack",
                json.dumps({"incident": page["incident"], "responder": "ana"}))
    inc = await eventually(lambda: _first_with(
        svc.incidents(), lambda i: i["state"] == "acknowledged"))
    assert inc["acknowledged_by"] == "ana"
    assert inc["timeline"][-1]["via"] == "mqtt"


async def test_failed_webhook_is_retried_and_recorded(service: Service) -> None:
    """A 503 from the pager is retried; the page row records the attempts and the success."""
    svc = service
    svc.hook.fail_next = 1
    svc.publish(events_topic("b1"), event("button", press="call"))
    page = (await svc.hook.wait(1))[0]
    await svc.runtime.store.flush()
    rows = await eventually(lambda: _sent_pages(svc, page["incident"]))
    assert rows[0]["attempts"] == 2 and rows[0]["status"] == "sent"
    assert await svc.metric('boothwatch_pages_total{channel="pager",result="failed"}') == 1


async def _sent_pages(svc: Service, incident: str) -> list[dict[str, Any]] | None:
    await svc.runtime.store.flush()
    rows = await svc.runtime.store.pages(incident)
    return rows if rows and rows[0]["status"] == "sent" else None


async def test_health_and_readiness(service: Service, mosquitto: Mosquitto) -> None:
    """healthz is 200; readyz is 200 when connected and 503 naming the broker when not."""
    svc = service
    async with svc.http.get(f"{svc.base}/healthz") as resp:
        assert resp.status == 200
    async with svc.http.get(f"{svc.base}/readyz") as resp:
        assert resp.status == 200
    mosquitto.stop()
    await eventually(lambda: not svc.runtime.mqtt.connected)
    async with svc.http.get(f"{svc.base}/readyz") as resp:
        assert resp.status == 503
        assert "broker not connected" in (await resp.json())["reasons"]
    mosquitto.start()
    await eventually(lambda: svc.runtime.mqtt.connected, timeout=40)


async def test_incident_list_is_newest_first_and_says_how_many_there_are(
    service: Service,
) -> None:
    """?limit cuts the list to the newest; X-Total-Count tells that more exist."""
    svc = service
    for booth in ("b1", "b2"):
        svc.publish(events_topic(booth), event("button", press="call"))
    await svc.hook.wait(2)
    async with svc.http.get(f"{svc.base}/api/incidents?state=all&limit=1") as resp:
        assert resp.status == 200
        assert resp.headers["X-Total-Count"] == "2"
        items = await resp.json()
    assert [i["booth"] for i in items] == ["b2"]
    for bad in ("0", "x", "10001"):
        async with svc.http.get(f"{svc.base}/api/incidents?limit={bad}") as resp:
            assert resp.status == 400, bad
