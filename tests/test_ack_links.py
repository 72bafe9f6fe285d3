"""Single-use ack links and the API's bearer token (issue 6), against the real service:
real Mosquitto, real SQLite, real HTTP; restarts reopen the same store file."""

from __future__ import annotations

import asyncio
import hmac
import html
import re
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.broker import Mosquitto, Publish
from tests.harness.service import HandClock, Service, event, events_topic, start_service
from tests.harness.tokens import respell

pytestmark = pytest.mark.integration


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


def acks(inc: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in inc["timeline"] if e["kind"] == "ack"]


async def post(svc: Service, url: str) -> tuple[int, str]:
    async with svc.http.post(url) as resp:
        return resp.status, await resp.text()


async def test_a_used_link_is_refused_on_replay_even_after_a_restart(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """The link acknowledges once; posted again it gets 403 with a page saying who used it
    and when, and changes nothing (no second ack, the ack timeout not pushed back); the
    same after the service restarts on the same store."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h",
                             ack_timeout="1h") as svc:
        page = await call(svc)
        link = page["ack_url"]
        status, _ = await post(svc, link)
        assert status == 200
        deadline = svc.runtime.core.incidents[page["incident"]].ack_deadline
        before = await incident(svc, page["incident"])
        status, text = await post(svc, link)
        assert status == 403
        assert "already used" in text and "ana acknowledged at" in text
        assert "this page" in text and 'name="outcome"' in text  # the outcome form is still there
        assert svc.runtime.core.incidents[page["incident"]].ack_deadline == deadline
        assert await incident(svc, page["incident"]) == before
        path = link.split("/ack/", 1)[1]
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h",
                             ack_timeout="1h") as svc:
        status, text = await post(svc, f"{svc.base}/ack/{path}")
        assert status == 403 and "already used" in text
        after = await incident(svc, page["incident"])
        assert len(acks(after)) == 1 and after["timeline"] == before["timeline"]
        assert await svc.runtime.store.count("used_ack_links") == 1


async def test_get_never_acknowledges(service: Service) -> None:
    """A link preview (chat apps, mail scanners) fetches the link, maybe repeatedly and
    with HEAD: the page is shown, nothing is acknowledged and the link stays unused."""
    svc = service
    page = await call(svc)
    link = page["ack_url"]
    for agent in ("Slackbot-LinkExpanding 1.0", "WhatsApp/2.23", "Mozilla/5.0"):
        for headers in ({"User-Agent": agent}, {"User-Agent": agent, "Purpose": "prefetch"}):
            async with svc.http.get(link, headers=headers) as resp:
                assert resp.status == 200 and "I'm going" in await resp.text()
            async with svc.http.head(link, headers=headers) as resp:
                assert resp.status == 200
    async with svc.http.get(link + "?via=ntfy") as resp:
        assert resp.status == 200
    inc = await incident(svc, page["incident"])
    assert inc["state"] == "open" and acks(inc) == []
    assert len(svc.runtime.used_links) == 0
    status, _ = await post(svc, link)  # the nurse's own tap still works
    assert status == 200


async def test_tampered_links_get_403_and_change_nothing(service: Service) -> None:
    """An altered token is refused; so is a respelled copy of a used one (the same link)."""
    svc = service
    page = await call(svc)
    link = page["ack_url"]
    base, token = link.split("/ack/", 1)
    payload, stamp, signature = token.split(".")
    other = (await call(svc, "b2"))["ack_url"].split("/ack/", 1)[1]
    tampered = [
        f"{payload}.{stamp}.{signature[:-4]}{'AAAA' if not signature.endswith('AAAA') else 'BBBB'}",
        f"{payload[:-2]}xx.{stamp}.{signature}",
        f"{other.split('.')[0]}.{stamp}.{signature}",  # another incident's payload
        f"{payload}.{stamp}",
    ]
    for bad in tampered:
        for method in ("GET", "POST"):
            async with svc.http.request(method, f"{base}/ack/{bad}") as resp:
                assert resp.status in (403, 404), (bad, resp.status)
                assert resp.status == 403 or bad.count(".") != 2
    assert acks(await incident(svc, page["incident"])) == []
    assert (await post(svc, link))[0] == 200
    status, text = await post(svc, f"{base}/ack/{respell(token)}")
    assert status == 403 and "already used" in text
    assert len(acks(await incident(svc, page["incident"]))) == 1


async def test_a_second_page_has_a_fresh_link(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Acknowledged by link, nobody at the booth by ack_timeout: the incident re-opens and
    Ana is paged again with a new link that works; the old one stays used and says the
    incident is open again. Time is stepped by hand."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="0.5s", repeat="1h",
                             ack_timeout="1s", clock=HandClock()) as svc:
        page = await call(svc)
        assert (await post(svc, page["ack_url"]))[0] == 200
        svc.advance(1)  # the ack timeout: re-opened, the next step (ana and rui) at once
        await svc.hook.wait(3)
        again = next(p for p in svc.hook.pages if p["responder"] == "ana" and p["level"] == 2)
        assert again["ack_url"] != page["ack_url"]
        status, text = await post(svc, page["ack_url"])
        assert status == 403 and "open again" in text
        assert (await post(svc, again["ack_url"]))[0] == 200
        inc = await incident(svc, page["incident"])
        assert inc["state"] == "acknowledged" and len(acks(inc)) == 2


async def test_outcome_through_a_used_link_and_an_ntfy_tap_then_a_browser_tap(
    service: Service
) -> None:
    """The lock-screen button (?via=ntfy) uses the link: a tap on the same link in the
    browser gets 403 naming the button, GET offers the outcome form, the outcome is
    recorded once (409 after)."""
    svc = service
    page = await call(svc)
    link = page["ack_url"]
    assert (await post(svc, f"{link}?via=ntfy"))[0] == 200
    status, text = await post(svc, link)
    assert status == 403 and "Acknowledge button of the notification" in text
    async with svc.http.get(link) as resp:
        text = await resp.text()
        assert resp.status == 200 and "already used" in text and 'name="outcome"' in text
    async with svc.http.post(f"{link}/outcome", data={"outcome": "ok", "note": "fine"}) as resp:
        assert resp.status == 200
    async with svc.http.post(f"{link}/outcome", data={"outcome": "false_alarm"}) as resp:
        assert resp.status == 409
    inc = await incident(svc, page["incident"])
    assert (inc["state"], inc["outcome"], acks(inc)[0]["via"]) == ("resolved", "ok", "ntfy")
    async with svc.http.get(link) as resp:
        assert "This incident is resolved." in await resp.text()


async def test_two_taps_at_once_acknowledge_once(service: Service) -> None:
    """A double tap sends two POSTs together: exactly one acknowledges."""
    svc = service
    page = await call(svc)
    statuses = sorted(s for s, _ in await asyncio.gather(
        *(post(svc, page["ack_url"]) for _ in range(5))))
    assert statuses == [200, 403, 403, 403, 403]
    assert len(acks(await incident(svc, page["incident"]))) == 1


async def test_a_link_of_a_resolved_incident_is_not_spent(service: Service) -> None:
    """Posting the link of a resolved incident answers 409 and records no use."""
    svc = service
    page = await call(svc)
    status, _ = await svc.post(f"/api/incidents/{page['incident']}/resolve",
                               {"responder": "rui"})
    assert status == 200
    assert (await post(svc, page["ack_url"]))[0] == 409
    assert await svc.runtime.store.count("used_ack_links") == 0


# --- the API's bearer token ----------------------------------------------------------------


async def test_bearer_token_is_required_exactly_and_compared_in_constant_time(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With BOOTHWATCH_API_TOKEN set, every /api/... route needs exactly that bearer token
    (missing, wrong, a prefix, a longer one, another scheme: 401, nothing changes), reads
    included; the comparison is hmac.compare_digest; ack links and probes need none."""
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr("monitor.http.hmac.compare_digest", spy)
    env = {"BOOTHWATCH_API_TOKEN": "s3cret-token"}
    async with start_service(tmp_path, mosquitto, mqtt_publish, env=env, step2="1h") as svc:
        page = await call(svc)
        path = f"/api/incidents/{page['incident']}/ack"
        wrong = [None, "", "Bearer", "Bearer ", "Bearer wrong", "Bearer s3cret",
                 "Bearer s3cret-token-and-more", "bearer s3cret-token", "Basic s3cret-token",
                 "Bearer  s3cret-token", "s3cret-token", "Bearer s3cret-tokén"]
        for header in wrong:
            headers = {} if header is None else {"Authorization": header}
            status, body = await svc.post(path, {"responder": "ana"}, headers=headers)
            assert status == 401 and body == {"error": "missing or wrong bearer token"}, header
        assert compared and all(b == b"Bearer s3cret-token" for _, b in compared)
        assert len(compared) == len(wrong) - 1  # a missing header is refused unread
        for read in ("/api/incidents", "/api/booths", "/api/responders", "/api/audit"):
            async with svc.http.get(f"{svc.base}{read}") as resp:
                assert resp.status == 401, read
                assert resp.headers["WWW-Authenticate"] == "Bearer"
        auth = {"Authorization": "Bearer s3cret-token"}
        async with svc.http.get(f"{svc.base}/api/incidents", headers=auth) as resp:
            assert resp.status == 200
            assert [i["state"] for i in await resp.json()] == ["open"]
        for probe in ("/healthz", "/metrics", "/api/openapi.json"):
            async with svc.http.get(f"{svc.base}{probe}") as resp:
                assert resp.status == 200, probe
        status, _ = await svc.post(path, {"responder": "ana"},
                                   headers={"Authorization": "Bearer s3cret-token"})
        assert status == 200
        assert (await post(svc, (await call(svc, "b2"))["ack_url"]))[0] == 200


async def test_a_header_that_is_not_utf8_is_a_401_not_a_500(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Raw bytes in the Authorization header are refused like any wrong token."""
    env = {"BOOTHWATCH_API_TOKEN": "s3cret-token"}
    async with start_service(tmp_path, mosquitto, mqtt_publish, env=env, step2="1h") as svc:
        port = int(svc.base.rsplit(":", 1)[1])
        body = b'{"responder": "ana"}'
        request = (b"POST /api/responders/ana/duty HTTP/1.1\r\nHost: x\r\n"
                   b"Authorization: Bearer \xff\xfe\r\nContent-Type: application/json\r\n"
                   b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n"
                   b"\r\n" + body)

        def send() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(request)
                return sock.recv(1024)

        reply = await asyncio.to_thread(send)
        assert reply.startswith(b"HTTP/1.1 401"), reply[:80]


async def test_a_link_whose_incident_was_never_recorded_offers_what_was_raised_since(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """A crash after paging and before the commit leaves the first page's link naming an
    incident that was never stored; the restart raises the alarm again under a new id (the
    crash bench's "ghost incidents"). That link's page is a 404 offering the incidents raised
    since it was made, each behind a button with a fresh link for the same responder.
    Nothing acts on GET or on the dead link itself; incidents older than the link are not
    offered (the link vouches for its responder, not for what came before it)."""
    # links carry whole seconds of the wall clock: the older incident is raised 2 s before
    # the link is made, the alarm raised again 1 s after it
    clock = HandClock(time.time() - 2)
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h", repeat="1h",
                             ack_timeout="1h", clock=clock) as svc:
        older = await call(svc, "b2")
        ghost = f"{svc.base}/ack/{svc.runtime.tokens.make('01KGH0STGH0STGH0STGH0STGH0', 'ana')}"
        svc.advance(3)
        again = await call(svc, "b1")  # the alarm raised again after the restart

        async with svc.http.get(ghost) as resp:
            assert resp.status == 404
            text = await resp.text()
        assert "not on record" in text and "Booth 1" in text and "Booth 2" not in text
        actions = re.findall(r'<form method="post" action="([^"]+)">', text)
        assert len(actions) == 1 and "I'm going to Booth 1 (ana)" in text
        status, text = await post(svc, ghost)  # the dead link itself acknowledges nothing
        assert status == 404 and "not on record" in text
        for page in (again, older):
            assert acks(await incident(svc, page["incident"])) == []
        assert len(svc.runtime.used_links) == 0

        status, text = await post(svc, html.unescape(actions[0]))
        assert status == 200 and "Acknowledged" in text
        inc = await incident(svc, again["incident"])
        assert inc["state"] == "acknowledged" and inc["acknowledged_by"] == "ana"
        assert (await incident(svc, older["incident"]))["state"] == "open"
        status, _ = await post(svc, html.unescape(actions[0]))  # the fresh link is single use too
        assert status == 403
