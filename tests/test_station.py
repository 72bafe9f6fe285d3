"""The station login (interface section 9): who may read the API and act from the board."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from monitor.station import (
    ALL_FAILURES,
    COOKIE,
    FAILURE_WINDOW,
    MAX_FAILURES,
    RENEW_AFTER,
    Stations,
)
from tests.harness.broker import Mosquitto, Publish
from tests.harness.service import Service, event, events_topic, start_service

SECRET = "test-secret-for-the-station"
PASSWORD = "correct horse battery"
ENV = {"BOOTHWATCH_SECRET": SECRET, "BOOTHWATCH_BOARD_PASSWORD": PASSWORD}


async def login(svc: Service, password: str, **headers: str) -> aiohttp.ClientResponse:
    async with svc.http.post(f"{svc.base}/board/login", data={"password": password},
                             allow_redirects=False, headers=headers) as resp:
        await resp.read()
        return resp


async def get(svc: Service, path: str, cookie: str | None = None) -> tuple[int, str]:
    headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie else {}
    async with svc.http.get(f"{svc.base}{path}", headers=headers) as resp:
        return resp.status, await resp.text()


async def post(svc: Service, path: str, body: dict[str, Any], cookie: str,
               csrf: str | None) -> int:
    headers = {"Cookie": f"{COOKIE}={cookie}"}
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    async with svc.http.post(f"{svc.base}{path}", json=body, headers=headers) as resp:
        return resp.status


async def state(svc: Service, incident: str) -> str:
    view = await svc.runtime.api.find(incident)
    assert view is not None
    return view.state


async def logins(svc: Service, result: str) -> float:
    async with svc.http.get(f"{svc.base}/metrics") as resp:
        text = await resp.text()
    line = f'boothwatch_station_logins_total{{result="{result}"}}'
    return float(next(x for x in text.splitlines() if x.startswith(line)).split()[-1])


async def test_a_station_logs_in_and_reads_and_acts_with_its_csrf_token(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """The right password sets an HttpOnly SameSite=Strict cookie; with it the API reads,
    and its POSTs act only with the session's CSRF token."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, env=ENV, step2="1h") as svc:
        status, text = await get(svc, "/board")
        assert status == 200 and 'name="password"' in text and 'action="/board/login"' in text
        for read in ("/api/incidents", "/api/booths", "/api/responders", "/api/audit"):
            assert (await get(svc, read))[0] == 401, read
        resp = await login(svc, PASSWORD)
        assert resp.status == 303 and resp.headers["Location"] == "/board"
        morsel = resp.cookies[COOKIE]
        assert morsel["httponly"] and morsel["samesite"] == "Strict" and morsel["path"] == "/"
        cookie = morsel.value
        assert await logins(svc, "ok") == 1
        status, text = await get(svc, "/api/booths", cookie)
        assert status == 200 and '"b1"' in text

        svc.publish(events_topic("b1"), event("button", press="call"))
        page = await svc.hook.wait(1)
        path = f"/api/incidents/{page[0]['incident']}/ack"
        assert await post(svc, path, {"responder": "ana"}, cookie, None) == 403
        assert await post(svc, path, {"responder": "ana"}, cookie, "0" * 64) == 403
        assert await state(svc, page[0]["incident"]) == "open"
        csrf = Stations(SECRET, PASSWORD).session(cookie, 0)
        assert csrf is not None
        assert await post(svc, path, {"responder": "ana"}, cookie, csrf.csrf) == 200
        assert await state(svc, page[0]["incident"]) == "acknowledged"


async def test_a_wrong_password_is_refused_and_limited(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """A wrong password gets 401 and no cookie; after MAX_FAILURES from one address even the
    right one gets 429 with Retry-After; a forged cookie or a post from another site's page
    is refused."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, env=ENV) as svc:
        resp = await login(svc, PASSWORD, Origin="http://evil.example")
        assert resp.status == 403 and COOKIE not in resp.cookies
        for _ in range(MAX_FAILURES):
            resp = await login(svc, "guess")
            assert resp.status == 401 and COOKIE not in resp.cookies
        resp = await login(svc, PASSWORD)
        assert resp.status == 429 and COOKIE not in resp.cookies
        assert 0 < int(resp.headers["Retry-After"]) <= 60
        assert await logins(svc, "wrong") == MAX_FAILURES
        assert await logins(svc, "limited") == 1
        forged = Stations(SECRET, "another password").login("another password", 0)
        assert forged is not None
        assert (await get(svc, "/api/incidents", forged.cookie))[0] == 401
        assert (await get(svc, "/board", forged.cookie))[1].count('name="password"') == 1


async def test_without_a_station_password_the_board_says_so_and_the_api_stays_open(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """No BOOTHWATCH_BOARD_PASSWORD: /board names the variable (403), nobody logs in, and
    with no API token either the API is open as before."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, env={}) as svc:
        status, text = await get(svc, "/board")
        assert status == 403 and "BOOTHWATCH_BOARD_PASSWORD" in text
        assert (await login(svc, "")).status == 403
        assert (await get(svc, "/api/booths"))[0] == 200


def test_a_session_survives_a_restart_and_ends_with_a_new_password() -> None:
    """The cookie is signed with the secret and the password: another process with both
    takes it; a changed password or secret ends it; a tampered cookie is nobody's."""
    session = Stations(SECRET, PASSWORD).login(PASSWORD, 10.0)
    assert session is not None
    again = Stations(SECRET, PASSWORD).session(session.cookie, 20.0)
    assert again is not None and again.csrf == session.csrf
    assert Stations(SECRET, "new password").session(session.cookie, 20.0) is None
    assert Stations("another secret", PASSWORD).session(session.cookie, 20.0) is None
    assert Stations(SECRET, PASSWORD).session(session.cookie[:-2] + "xx", 20.0) is None
    assert Stations(SECRET, None).login("", 0) is None
    assert Stations(SECRET, PASSWORD).login(PASSWORD + " ", 0) is None


def test_a_page_load_a_day_after_login_renews_the_session() -> None:
    """A board reloaded now and then never reaches the end of its 30 days: a session a day
    old or more is replaced by a new one (valid, with its own CSRF token); a newer one is
    kept."""
    stations = Stations(SECRET, PASSWORD)
    session = stations.login(PASSWORD, 1000.0)
    assert session is not None
    assert stations.renewed(session, 1000.0 + RENEW_AFTER - 1) is None
    fresh = stations.renewed(session, 1000.0 + RENEW_AFTER)
    assert fresh is not None and fresh.cookie != session.cookie and fresh.csrf != session.csrf
    again = stations.session(fresh.cookie, 0)
    assert again is not None and again.csrf == fresh.csrf


def test_guessers_elsewhere_never_lock_out_a_station_that_did_not_fail() -> None:
    """Fifty wrong passwords from ten addresses hold back each of them and any address that
    failed too, but not a station that has not guessed wrong."""
    stations = Stations(SECRET, PASSWORD)
    for n in range(ALL_FAILURES):
        stations.failed(f"10.0.0.{n % 10}", 100.0)
    assert stations.retry_after("10.0.0.1", 101.0) > 0
    assert stations.retry_after("192.168.1.20", 101.0) == 0
    stations.failed("192.168.1.21", 101.0)  # one slip of its own: the room's limit holds
    assert stations.retry_after("192.168.1.21", 102.0) > 0
    assert stations.retry_after("10.0.0.1", 100.0 + FAILURE_WINDOW) == 0
