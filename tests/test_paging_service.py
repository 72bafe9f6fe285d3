"""Issue 4 end to end: fallback, duty, repeated presses, maintenance, outcomes, notices.

A real Mosquitto, real SQLite, real HTTP; the pager is a local webhook server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.harness.broker import Mosquitto, Publish, free_port
from tests.harness.service import (
    HandClock,
    Service,
    event,
    events_topic,
    eventually,
    start_service,
)
from tests.harness.site import SITE, Site, Table, responder, webhook

pytestmark = pytest.mark.integration


def with_backup_channel(dead_port: int) -> Callable[[Site], None]:
    """Ana's first channel is a webhook nobody listens on; her second is the test pager."""
    def edit(site: Site) -> None:
        site.channels = {"dead": webhook(f"http://127.0.0.1:{dead_port}/page", secret=None,
                                         timeout="1s"), **site.channels}
        site.responder("ana")["channels"] = ["dead", "pager"]
    return edit


def two_nurses(site: Site) -> None:
    site.responders.insert(1, responder("bea", ["nurse"], ["pager"]))


async def raise_call(svc: Service, booth: str = "b1") -> dict[str, Any]:
    svc.publish(events_topic(booth), event("button", press="call"))
    incidents: list[dict[str, Any]] = await eventually(lambda: svc.incidents("open"), 5)
    return incidents[0]


async def test_failing_first_channel_falls_back_to_the_second_in_the_same_step(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Ana's first channel refuses; the same level-1 page reaches her second at once."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="30s",
                             edit=with_backup_channel(free_port())) as svc:
        inc = await raise_call(svc)
        pages = await svc.hook.wait(1, 3)
        assert [(p["responder"], p["level"]) for p in pages] == [("ana", 1)]

        async def timeline_kinds() -> list[tuple[str, str | None]] | None:
            got = next(i for i in await svc.incidents() if i["id"] == inc["id"])
            kinds = [(e["kind"], e.get("channel")) for e in got["timeline"]]
            return kinds if ("page_sent", "pager") in kinds else None

        kinds = await eventually(timeline_kinds)
        assert ("page_fallback", "dead") in kinds
        stored = await svc.runtime.store.pages(inc["id"])
        assert [(t["channel"], t["ok"]) for t in stored[0]["tries"]] == [
            ("dead", False), ("pager", True)]
        assert stored[0]["status"] == "sent" and stored[0]["channel"] == "pager"


async def test_nobody_on_duty_for_the_nurse_role_skips_to_the_coordinator(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Ana checks out (HTTP); a call pages Rui at level 2 at once; the gap is counted."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="30s") as svc:
        status, body = await svc.post("/api/responders/ana/duty", {"on": False})
        assert status == 200 and body["on_duty"] is False
        await raise_call(svc)
        pages = await svc.hook.wait(1, 3)
        assert [(p["responder"], p["level"]) for p in pages] == [("rui", 2)]
        assert await svc.metric(
            'boothwatch_duty_gaps_total{priority="high",role="nurse"}') == 2.0
        assert await svc.metric(
            'boothwatch_escalation_steps_skipped_total{level="1",priority="high"}') == 1.0
        async with svc.http.get(f"{svc.base}/api/responders") as resp:
            duty = {r["id"]: r["on_duty"] for r in await resp.json()}
        assert duty == {"ana": False, "rui": True}


async def test_check_in_and_out_over_mqtt_survives_a_restart(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """A pager gateway checks Bea out on boothwatch/<site>/duty; a restart keeps it."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, edit=two_nurses) as svc:
        mqtt_publish(f"boothwatch/{SITE}/duty", json.dumps({"responder": "bea", "on": False}))
        await eventually(lambda: not svc.runtime.core.roster.on_duty("bea", svc.runtime.clock()))
        mqtt_publish(f"boothwatch/{SITE}/duty", b"not json")
        await eventually(lambda: svc.metric('boothwatch_events_rejected_total{reason="bad_duty"}'))
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="30s",
                             edit=two_nurses) as svc:
        await raise_call(svc)
        pages = await svc.hook.wait(1, 3)
        assert [(p["responder"], p["level"]) for p in pages] == [("ana", 1)]


async def test_two_call_presses_jump_a_level_and_mark_urgent(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="30s") as svc:
        await raise_call(svc)
        await svc.hook.wait(1, 3)
        svc.publish(events_topic("b1"), event("button", press="call"))
        pages = await svc.hook.wait(3, 3)
        assert sorted((p["responder"], p["level"], p["urgent"]) for p in pages[1:]) == [
            ("ana", 2, True), ("rui", 2, True)]
        assert pages[1]["message"].startswith("URGENT: ")
        inc = (await svc.incidents("open"))[0]
        assert inc["urgent"] is True and inc["level"] == 2


async def test_maintenance_suppresses_a_stillness_page_but_not_a_call(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """In maintenance a still person pages nobody (counted, audited); a call still pages.
    Time is stepped by hand."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, stillness="1s",
                             clock=HandClock()) as svc:
        status, booth = await svc.post("/api/booths/b1/maintenance",
                                       {"until": "1h", "reason": "sensor swap", "by": "tech"})
        assert status == 200 and booth["mode"] == "maintenance"
        assert booth["maintenance"]["reason"] == "sensor swap"
        svc.publish(events_topic("b1"), event("occupancy", occupied=True))
        svc.publish(events_topic("b1"), event("motion", state="still"))
        await eventually(lambda: svc.runtime.booths_json()[0]["still_since"] is not None)
        svc.advance(1)  # stillness
        assert await svc.metric(
            'boothwatch_triggers_suppressed_total{booth="b1",trigger="unresponsive"}') == 1
        assert svc.hook.pages == [] and await svc.incidents("open") == []
        await raise_call(svc)
        pages = await svc.hook.wait(1, 3)
        assert pages[0]["message"] == "Booth 1: call button pressed (booth in maintenance)"
        status, booth = await svc.post("/api/booths/b1/maintenance/end", {"by": "tech"})
        assert status == 200 and booth["mode"] == "normal"
        async with svc.http.get(f"{svc.base}/api/audit?subject=b1") as resp:
            kinds = [a["kind"] for a in await resp.json()]
        assert kinds == ["maintenance_ended", "trigger_suppressed", "maintenance_started"]
        status, body = await svc.post("/api/booths/b1/maintenance",
                                      {"until": "2020-01-01T00:00:00Z", "reason": "x",
                                       "by": "tech"})
        assert status == 400 and "future" in body["error"]
        status, _ = await svc.post("/api/booths/zz/maintenance/end", {"by": "tech"})
        assert status == 404


async def test_outcomes_land_in_the_incident_list(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Resolve with an outcome by API; the clear button then an outcome from the ack page."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="30s") as svc:
        first = await raise_call(svc)
        status, body = await svc.post(f"/api/incidents/{first['id']}/resolve",
                                      {"responder": "ana", "outcome": "fine"})
        assert status == 400 and "overdose_naloxone" in body["error"]
        status, body = await svc.post(
            f"/api/incidents/{first['id']}/resolve",
            {"responder": "ana", "outcome": "overdose_naloxone", "note": "2 doses"})
        assert status == 200 and body["outcome"] == "overdose_naloxone"

        second = await raise_call(svc, "b2")
        pages = await svc.hook.wait(2, 3)
        svc.publish(events_topic("b2"), event("button", press="clear"))
        await eventually(lambda: _resolved(svc, second["id"]))
        ack_url = pages[-1]["ack_url"]
        async with svc.http.get(ack_url) as resp:
            html = await resp.text()
        assert "What happened?" in html and 'value="no_one_there"' in html
        async with svc.http.post(f"{ack_url}/outcome",
                                 data={"outcome": "no_one_there", "note": ""}) as resp:
            assert resp.status == 200
        async with svc.http.post(f"{ack_url}/outcome", data={"outcome": "ok"}) as resp:
            assert resp.status == 409  # recorded once
        async with svc.http.post(f"{ack_url}/outcome", data=b"",
                                 headers={"Content-Type": "multipart/form-data"}) as resp:
            assert resp.status == 400  # found by tests/test_fuzz.py: it was a 500
        by_id = {i["id"]: i for i in await svc.incidents()}
        assert (by_id[first["id"]]["outcome"], by_id[first["id"]]["outcome_note"]) == (
            "overdose_naloxone", "2 doses")
        assert by_id[second["id"]]["outcome"] == "no_one_there"
        assert await svc.metric(
            'boothwatch_incident_outcomes_total{outcome="no_one_there",trigger="call"}') == 1.0


async def _resolved(svc: Service, incident: str) -> bool:
    return any(i["id"] == incident and i["state"] == "resolved" for i in await svc.incidents())


async def test_ack_tells_the_others_and_resolve_sends_all_clear(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """The others paged hear who is attending, and all clear once resolved. Time is
    stepped by hand."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="0.2s",
                             clock=HandClock()) as svc:
        inc = await raise_call(svc)
        svc.advance(0.2)
        await svc.hook.wait(3, 3)  # ana L1, then ana and rui at L2
        status, _ = await svc.post(f"/api/incidents/{inc['id']}/ack", {"responder": "ana"})
        assert status == 200
        await eventually(lambda: svc.hook.notices)
        assert [(n["responder"], n["message"]) for n in svc.hook.notices] == [
            ("rui", "Ana is attending Booth 1")]
        status, _ = await svc.post(f"/api/incidents/{inc['id']}/resolve",
                                   {"responder": "ana", "outcome": "ok"})
        await eventually(lambda: len(svc.hook.notices) == 2)
        assert svc.hook.notices[1]["message"] == "Booth 1: all clear"


class PushServer:
    """A local stand-in for an ntfy server and the Pushover API, recording every request."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ntfy: list[dict[str, Any]] = []
        self.pushover: list[dict[str, str]] = []
        self.polls: list[str] = []
        self.cancels: list[str] = []
        self.acknowledged = False
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> PushServer:
        app = web.Application()
        app.router.add_post("/", self._ntfy)
        app.router.add_post("/1/messages.json", self._message)
        app.router.add_get("/1/receipts/{receipt}.json", self._receipt)
        app.router.add_post("/1/receipts/{receipt}/cancel.json", self._cancel)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _ntfy(self, request: web.Request) -> web.Response:
        body = await request.json()
        body["authorization"] = request.headers.get("Authorization")
        self.ntfy.append(body)
        return web.json_response({"id": f"m{len(self.ntfy)}", "event": "message"})

    async def _message(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.pushover.append({k: str(v) for k, v in form.items()})
        n = len(self.pushover)
        reply: dict[str, Any] = {"status": 1, "request": f"req{n}"}
        if form.get("priority") == "2":
            reply["receipt"] = f"rcpt{n}"
        return web.json_response(reply)

    async def _receipt(self, request: web.Request) -> web.Response:
        self.polls.append(request.match_info["receipt"])
        assert request.query.get("token") == "app-token"
        now = int(time.time())
        return web.json_response({
            "status": 1, "acknowledged": int(self.acknowledged),
            "acknowledged_at": now if self.acknowledged else 0,
            "acknowledged_by": "uANA" if self.acknowledged else "",
            "last_delivered_at": now, "expired": 0, "request": "x"})

    async def _cancel(self, request: web.Request) -> web.Response:
        self.cancels.append(request.match_info["receipt"])
        return web.json_response({"status": 1, "request": "c"})


def ana_on(name: str, channel: Table, address: str) -> Callable[[Site], None]:
    """Ana's only channel is ``channel``, with her address on it."""
    def edit(site: Site) -> None:
        site.channels = {name: channel, **site.channels}
        site.responder("ana").update(channels=[name], address={name: address})
    return edit


async def test_ntfy_acknowledge_tap_acknowledges_and_stops_escalation(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ana's phone gets an ntfy push; tapping Acknowledge POSTs the action URL as the app
    does; the incident is acknowledged via ntfy, and level 2 never fires."""
    monkeypatch.setenv("NTFY_TOKEN", "tk_secret")
    async with PushServer() as push:
        edit = ana_on("phone", {"type": "ntfy", "url": push.url, "token_env": "NTFY_TOKEN"},
                      "ana-7f3k")
        async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1.5s",
                                 ack_timeout="1h", edit=edit) as svc:
            inc = await raise_call(svc)
            await eventually(lambda: push.ntfy)
            message = push.ntfy[0]
            assert (message["topic"], message["priority"]) == ("ana-7f3k", 5)
            assert message["authorization"] == "Bearer tk_secret"
            (action,) = message["actions"]
            assert (action["action"], action["label"], action["method"]) == (
                "http", "Acknowledge", "POST")
            async with svc.http.post(action["url"]) as resp:  # the tap
                assert resp.status == 200
            got = (await svc.incidents("open"))[0]
            assert got["id"] == inc["id"] and got["state"] == "acknowledged"
            acks = [e for e in got["timeline"] if e["kind"] == "ack"]
            assert acks[0]["via"] == "ntfy" and acks[0]["responder"] == "ana"
            # escalation is paused: no step 2 is planned, and nobody else was paged
            assert svc.runtime.core.incidents[inc["id"]].escalation.next_at is None
            assert svc.hook.pages == [] and len(push.ntfy) == 1


async def test_pushover_receipt_acknowledged_on_the_phone_acknowledges_the_incident(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A high page goes out as a Pushover emergency with retry/expire from the policy; the
    receipt is polled; once Ana acknowledges on the phone, the incident is hers."""
    monkeypatch.setenv("PUSHOVER_TOKEN", "app-token")
    async with PushServer() as push:
        edit = ana_on("push", {"type": "pushover", "url": push.url,
                               "token_env": "PUSHOVER_TOKEN"}, "uANA")
        async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h",
                                 repeat="45s", edit=edit) as svc:
            inc = await raise_call(svc)
            await eventually(lambda: push.pushover)
            form = push.pushover[0]
            assert (form["user"], form["priority"], form["token"]) == ("uANA", "2", "app-token")
            assert (form["retry"], form["expire"]) == ("45", "10800")
            assert form["url"].startswith(f"{svc.base}/ack/")
            push.acknowledged = True
            await eventually(lambda: _state(svc, inc["id"], "acknowledged"), timeout=15)
            got = (await svc.incidents("open"))[0]
            acks = [e for e in got["timeline"] if e["kind"] == "ack"]
            assert (acks[0]["via"], acks[0]["responder"]) == ("pushover", "ana")
            pages = await svc.runtime.store.pages(inc["id"])
            assert (pages[0]["receipt"], pages[0]["status"]) == ("rcpt1", "acknowledged")


async def test_pushover_retries_are_cancelled_when_acknowledged_elsewhere(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PUSHOVER_TOKEN", "app-token")
    async with PushServer() as push:
        edit = ana_on("push", {"type": "pushover", "url": push.url,
                               "token_env": "PUSHOVER_TOKEN"}, "uANA")
        async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h",
                                 edit=edit) as svc:
            inc = await raise_call(svc)
            await eventually(lambda: push.pushover)
            await eventually(lambda: _has_receipt(svc, inc["id"]))
            status, _ = await svc.post(f"/api/incidents/{inc['id']}/ack", {"responder": "rui"})
            assert status == 200
            await eventually(lambda: push.cancels == ["rcpt1"])


async def _state(svc: Service, incident: str, state: str) -> bool:
    return any(i["id"] == incident and i["state"] == state for i in await svc.incidents())


async def _has_receipt(svc: Service, incident: str) -> bool:
    return any(p["receipt"] for p in await svc.runtime.store.pages(incident))
