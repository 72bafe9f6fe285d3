"""The station board's page in a real Chromium against the real service and a real
Mosquitto (its stream and feed alone: `tests/test_board.py`).

One browser, one broker and one `boothwatch run` process serve the whole module (each
test opens its own page on its own booth); the screenshot runs its own service on a
hand clock, so its booth has been still for a while without the test waiting for it.
Every page's console errors and uncaught errors fail its test.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Browser, expect

from monitor.board.texts import TEXTS
from monitor.i18n import BOARD
from tests.harness.broker import Mosquitto, Publish, Publisher, free_port, require_mosquitto
from tests.harness.browser import Board, chromium
from tests.harness.process import ROOT, ServiceProcess
from tests.harness.service import HandClock, event, events_topic, eventually, start_service
from tests.harness.site import Site, booth, device, escalation
from tests.test_i18n import write_catalog

#: the browser tests share the module's event loop, which its browser and service live on
in_module_loop = pytest.mark.asyncio(loop_scope="module")

PASSWORD = "station password for the tests"
TOKEN = "api-token-for-the-tests"
#: the station logs in; the test checks through the API with the bearer token
ENV = {"BOOTHWATCH_BOARD_PASSWORD": PASSWORD, "BOOTHWATCH_API_TOKEN": TOKEN,
       "BOOTHWATCH_SECRET": "board-ui-tests"}
BEARER = {"Authorization": f"Bearer {TOKEN}"}
STILLNESS = 4  # seconds: short enough to watch the countdown run out
ALARM_EVERY = 1.5  # seconds: the alarm repeats sooner than this (board.js: every 1.3 s)
#: `make screenshot` sets it to docs/board.png; the test writes to its own folder otherwise
SCREENSHOT = os.environ.get("BOOTHWATCH_SCREENSHOT")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path_factory.mktemp("mosquitto"), binary=require_mosquitto()) as mq:
        yield mq


@pytest.fixture(scope="module")
def publish(broker: Mosquitto) -> Iterator[Publish]:
    publisher = Publisher(broker.host, broker.port)
    try:
        yield publisher.publish
    finally:
        publisher.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def service(broker: Mosquitto,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServiceProcess]:
    """`boothwatch run` with a booth per test; escalation slow enough not to re-open an
    acknowledged incident while a test looks at it."""
    workdir = tmp_path_factory.mktemp("service")
    site = Site(mqtt_port=broker.port, http_port=free_port(), store=workdir / "boothwatch.db",
                booths=[booth("b1"), booth("b2", stillness=f"{STILLNESS}s"), booth("b3"),
                        booth("b4"), booth("b5", long_session="1s"), booth("b6"),
                        booth("b7")],
                escalation=escalation(step2="30s", repeat="60s", ack_timeout="5m"))
    svc = ServiceProcess.of(site, workdir, env=ENV)
    svc.start()
    try:
        await svc.ready()
        yield svc
    finally:
        await svc.stop()


async def _get(base: str, path: str) -> Any:
    async with aiohttp.ClientSession(headers=BEARER) as http, http.get(base + path) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def _incident(base: str, incident: str) -> dict[str, Any]:
    items = await _get(base, "/api/incidents?state=all")
    found: dict[str, Any] = next(i for i in items if i["id"] == incident)
    return found


@pytest.mark.integration
@in_module_loop
async def test_a_call_alarms_within_a_second_and_is_answered_from_the_board(
        browser: Browser, service: ServiceProcess, publish: Publish) -> None:
    """A call press turns its tile to a sounding alarm within 1 s; "I'm going", "At the
    booth" and "Resolve" with an outcome and a note act as Ana, as the API records."""
    board = await Board.open(browser, service.base, password=PASSWORD, responder="ana")
    tile = board.tile("b1")
    assert await tile.get_attribute("data-state") == "vacant"
    assert await tile.get_attribute("data-incident") is None

    publish(events_topic("b1"), event("button", press="call"))
    await board.expect('[data-booth="b1"][data-priority="high"][data-incident-state="open"]',
                       timeout=1.0)
    assert "call button" in await tile.inner_text()
    await board.expect('#sound[data-alarm="on"]')
    await eventually(lambda: board.tones("square"), timeout=2)  # the alarm sounds
    incident = await tile.get_attribute("data-incident")
    assert incident is not None

    await tile.locator('[data-action="ack"]').click()
    await board.expect('[data-booth="b1"][data-incident-state="acknowledged"]')
    acked = await _incident(service.base, incident)
    assert (acked["state"], acked["acknowledged_by"]) == ("acknowledged", "ana")
    assert "Ana is going" in await tile.inner_text()
    await board.expect('#sound[data-alarm="off"]')  # acknowledged: the alarm stops
    alarm = len(await board.tones("square"))
    await asyncio.sleep(ALARM_EVERY)
    assert len(await board.tones("square")) == alarm

    await tile.locator('[data-action="presence"]').click()
    await board.expect('[data-booth="b1"][data-incident-state="attended"]')
    assert (await _incident(service.base, incident))["presence_by"] == "ana"

    await tile.locator('[data-action="resolve"]').click()
    dialog = board.page.locator("dialog[open]")
    await dialog.get_by_label("False alarm").check()
    await dialog.locator("textarea").fill("pressed by mistake")
    await dialog.locator("[data-submit]").click()
    await board.expect('[data-booth="b1"]:not([data-incident])')
    done = await _incident(service.base, incident)
    assert (done["state"], done["resolved_by"], done["outcome"], done["outcome_note"]) == (
        "resolved", "ana", "false_alarm", "pressed by mistake")
    assert board.errors == []
    await board.close()


@pytest.mark.integration
@in_module_loop
async def test_stillness_counts_down_then_alarms(
        browser: Browser, service: ServiceProcess, publish: Publish) -> None:
    """An occupied booth gone still shows its countdown filling, then the unresponsive
    alarm in words."""
    board = await Board.open(browser, service.base, password=PASSWORD)
    publish(events_topic("b2"), event("occupancy", occupied=True))
    publish(events_topic("b2"), event("motion", state="still"))
    countdown = board.tile("b2").locator('[data-tick="countdown"]')
    await countdown.wait_for(timeout=2000)
    assert await board.tile("b2").get_attribute("data-state") == "occupied"
    fill = countdown.locator(".fill")

    async def width() -> float:
        return float(await fill.evaluate("el => el.getBoundingClientRect().width"))

    first = await width()
    assert "Alarm in" in await countdown.inner_text()
    await eventually(lambda: _wider(width, first), timeout=3)

    await board.expect('[data-booth="b2"][data-priority="high"]', timeout=STILLNESS + 2)
    words = await board.tile("b2").inner_text()
    assert f"no movement for {STILLNESS}s" in words
    assert "Still for" in words
    incident = await board.tile("b2").get_attribute("data-incident")
    async with aiohttp.ClientSession(headers=BEARER) as http:
        async with http.post(f"{service.base}/api/incidents/{incident}/resolve",
                             json={"responder": "rui", "outcome": "ok"}) as resp:
            assert resp.status == 200
    # the person leaves: a still person left behind would be timed (and alarm) again
    publish(events_topic("b2"), event("occupancy", occupied=False))
    await board.expect('[data-booth="b2"][data-state="vacant"]:not([data-incident])')
    assert board.errors == []
    await board.close()


async def _wider(width: Any, than: float) -> bool:
    return bool(await width() > than + 1)


@pytest.mark.integration
@in_module_loop
async def test_a_medium_incident_chimes_once(
        browser: Browser, service: ServiceProcess, publish: Publish) -> None:
    """A session over its limit is a medium incident: one chime, no alarm."""
    board = await Board.open(browser, service.base, password=PASSWORD)
    publish(events_topic("b5"), event("occupancy", occupied=True))
    await board.expect('[data-booth="b5"][data-priority="medium"]', timeout=3)
    assert "session over 1s" in await board.tile("b5").inner_text()
    await eventually(lambda: board.tones("sine"), timeout=2)
    await asyncio.sleep(ALARM_EVERY)
    assert [t["freq"] for t in await board.tones("sine")] == [660, 880]  # one two-note chime
    assert await board.tones("square") == []
    publish(events_topic("b5"), event("occupancy", occupied=False))  # vacancy resolves it
    await board.expect('[data-booth="b5"]:not([data-incident])')
    assert board.errors == []
    await board.close()


@pytest.mark.integration
@in_module_loop
async def test_maintenance_theme_and_responder_are_kept(
        browser: Browser, service: ServiceProcess) -> None:
    """Maintenance on and off from the board as the chosen responder; the responder and
    the night theme are remembered by this board across a reload."""
    board = await Board.open(browser, service.base, password=PASSWORD, responder="rui")
    tile = board.tile("b3")
    await tile.locator('[data-action="maintenance-start"]').click()
    dialog = board.page.locator("dialog[open]")
    await dialog.locator('input[name="reason"]').fill("deep clean")
    await dialog.locator("[data-submit]").click()
    await board.expect('[data-booth="b3"][data-state="maintenance"]')
    booths = await _get(service.base, "/api/booths")
    b3 = next(b for b in booths if b["booth"] == "b3")
    assert (b3["mode"], b3["maintenance"]["by"], b3["maintenance"]["reason"]) == (
        "maintenance", "rui", "deep clean")
    assert "deep clean" in await tile.inner_text()

    await board.page.locator("#theme").click()
    await board.page.reload()  # the session cookie keeps the station logged in
    await board.enable_sound()
    await board.expect('[data-link="live"]')
    assert await board.page.locator("html").get_attribute("data-theme") == "night"
    assert await board.page.locator("[data-responder-picker]").input_value() == "rui"
    # a new tab nobody has touched may not play sound: it says so until tapped
    other = Board(await board.page.context.new_page())
    other.page.on("console", other._console)
    await other.page.goto(f"{service.base}/board")
    await other.expect("#gate")
    assert await other.page.locator('#sound[data-sound="off"]').inner_text() == "SOUND OFF"
    await other.page.locator("#gate").click()
    await other.expect("#gate", hidden=True)
    await other.expect('#sound[data-sound="on"]')
    assert other.errors == []
    await other.page.close()

    await tile.locator('[data-action="maintenance-end"]').click()
    await board.page.locator("dialog[open] [data-submit]").click()
    await board.expect('[data-booth="b3"][data-state="vacant"]')
    assert board.errors == []
    await board.close()


@pytest.mark.integration
@in_module_loop
async def test_protocol_steps_are_recorded_from_the_board(
        browser: Browser, service: ServiceProcess, publish: Publish) -> None:
    """Once someone is going, "Steps" records a protocol step as the chosen responder
    (naloxone with its doses); the tile lists the steps, latest first."""
    board = await Board.open(browser, service.base, password=PASSWORD, responder="ana")
    tile = board.tile("b6")
    publish(events_topic("b6"), event("button", press="call"))
    await board.expect('[data-booth="b6"][data-incident-state="open"]')
    assert await tile.locator('[data-action="steps"]').count() == 0  # nobody going yet
    await tile.locator('[data-action="ack"]').click()
    await board.expect('[data-booth="b6"][data-incident-state="acknowledged"]')
    incident = await tile.get_attribute("data-incident")
    assert incident is not None

    for step, doses in (("Knocked", None), ("Naloxone", "2")):
        await tile.locator('[data-action="steps"]').click()
        dialog = board.page.locator("dialog[open]")
        await dialog.get_by_label(step, exact=True).check()
        if doses is not None:
            await dialog.locator('input[name="count"]').fill(doses)
        await dialog.locator("[data-submit]").click()
        await board.expect("dialog[open]", hidden=True)
    await board.expect('[data-booth="b6"] .steps li:nth-child(2)')
    steps = (await _incident(service.base, incident))["steps"]
    assert [(s["step"], s["responder"], s.get("count")) for s in steps] == [
        ("knocked", "ana", None), ("naloxone", "ana", 2)]
    lines = await tile.locator(".steps li").all_inner_texts()
    assert lines[0].startswith("Naloxone \u00d72 ") and lines[0].endswith(" Ana")
    assert lines[1].startswith("Knocked ")
    async with aiohttp.ClientSession(headers=BEARER) as http:
        async with http.post(f"{service.base}/api/incidents/{incident}/resolve",
                             json={"responder": "ana", "outcome": "overdose_naloxone"}) as resp:
            assert resp.status == 200, await resp.text()
    assert board.errors == []
    await board.close()


@pytest.mark.integration
@in_module_loop
async def test_device_test_and_high_risk_from_the_board(
        browser: Browser, service: ServiceProcess, publish: Publish) -> None:
    """"Test devices" starts the booth's self-test for the chosen responder and the tile
    says so until "End test"; an occupied booth marked high risk (with its route) is so
    in /api/booths and on its tile, and back to standard."""
    board = await Board.open(browser, service.base, password=PASSWORD, responder="rui")
    tile = board.tile("b7")
    await tile.locator('[data-action="test-start"]').click()
    await board.page.locator("dialog[open] [data-submit]").click()
    await board.expect('[data-booth="b7"] .testing')
    assert "DEVICE TEST until" in await tile.inner_text()
    test = await _get(service.base, "/api/booths/b7/test")
    assert (test["running"], test["tester"]) == (True, "rui")
    await tile.locator('[data-action="test-end"]').click()
    await board.page.locator("dialog[open] [data-submit]").click()
    await board.expect('[data-booth="b7"] .testing', hidden=True)
    assert (await _get(service.base, "/api/booths/b7/test"))["running"] is False
    # the toast comes with the POST's answer, which may land after the stream's update
    await expect(board.page.locator("#toast")).to_contain_text("no trigger fired", timeout=5000)

    publish(events_topic("b7"), event("occupancy", occupied=True))
    await tile.locator('[data-action="risk-high"]').click()
    dialog = board.page.locator("dialog[open]")
    await dialog.get_by_label("injecting").check()
    await dialog.locator("[data-submit]").click()
    await board.expect('[data-booth="b7"] [data-risk="high"]')
    assert "HIGH RISK: injecting" in await tile.inner_text()
    b7 = next(b for b in await _get(service.base, "/api/booths") if b["booth"] == "b7")
    assert (b7["risk"], b7["route"], b7["stillness"]) == ("high", "inject", 60.0)
    await tile.locator('[data-action="risk-standard"]').click()
    await board.page.locator("dialog[open] [data-submit]").click()
    await board.expect('[data-booth="b7"] [data-risk="high"]', hidden=True)
    b7 = next(b for b in await _get(service.base, "/api/booths") if b["booth"] == "b7")
    assert b7["risk"] == "standard"
    publish(events_topic("b7"), event("occupancy", occupied=False))
    assert board.errors == []
    await board.close()


@pytest.mark.integration
@in_module_loop
async def test_a_stopped_service_shows_not_watching_and_a_restart_brings_it_back(
        browser: Browser, service: ServiceProcess, publish: Publish) -> None:
    """Stopping the service turns the board into the NOT WATCHING warning with sound
    within 5 s; started again, the board reconnects by itself to the same incident."""
    board = await Board.open(browser, service.base, password=PASSWORD)
    publish(events_topic("b4"), event("button", press="call"))
    await board.expect('[data-booth="b4"][data-incident]')
    incident = await board.tile("b4").get_attribute("data-incident")

    assert board.errors == []
    stopped = time.monotonic()
    assert await service.stop() == 0
    await board.expect("#lost", timeout=5 - (time.monotonic() - stopped))
    await board.expect('[data-link="lost"]', timeout=0.5)
    assert "NOT WATCHING: board disconnected since" in await board.page.locator(
        "#lost").inner_text()
    await board.expect('#sound[data-alarm="on"]', timeout=0.5)
    await eventually(lambda: board.tones("sawtooth"), timeout=2)  # the lost link's beeps

    service.start()
    await service.ready()
    await board.expect("#lost", hidden=True, timeout=15)
    await board.expect('[data-link="live"]', timeout=0.5)
    assert await board.tile("b4").get_attribute("data-incident") == incident
    # the browser reports each failed connection (the stream, the board's probe of the
    # service) while the service is down: those, and nothing else
    assert [e for e in board.errors if "net::ERR_" not in e
            or not ("/board/stream" in e or "/api/responders" in e)] == []
    await board.close()


@pytest.mark.integration
@in_module_loop
async def test_a_wrong_station_password_is_refused(
        browser: Browser, service: ServiceProcess) -> None:
    """A wrong password gets the login form again (401), no board and no API; the right
    one opens the board."""
    board = await Board.new(browser)
    await board.page.goto(f"{service.base}/board")
    assert await board.log_in("not the password") == 401
    assert "Wrong password" in await board.page.locator("body").inner_text()
    assert await board.page.locator("[data-link]").count() == 0
    assert (await board.page.request.get(f"{service.base}/api/incidents")).status == 401
    assert await board.log_in(PASSWORD) == 200
    await board.enable_sound()
    await board.expect('[data-link="live"]')
    assert (await board.page.request.get(f"{service.base}/api/incidents")).status == 200
    # the refused login's answer is the only error the browser reported
    assert [e for e in board.errors if "401" not in e] == [], board.errors
    await board.close()


@pytest.mark.integration
@in_module_loop
async def test_a_silent_stream_shows_not_watching_within_5_s(
        browser: Browser, service: ServiceProcess) -> None:
    """A service that stops answering without closing anything (here: SIGSTOP; a laptop
    asleep or a cable pulled look the same) is noticed by the silence alone."""
    board = await Board.open(browser, service.base, password=PASSWORD)
    assert service.proc is not None
    service.proc.send_signal(signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        await board.expect("#lost", timeout=5)
        # 3 s of silence, counted from the last ping, which came up to 1 s before the stop
        assert time.monotonic() - stopped >= 2
    finally:
        service.proc.send_signal(signal.SIGCONT)
    await board.expect("#lost", hidden=True, timeout=15)
    await board.expect('[data-link="live"]', timeout=0.5)
    assert [e for e in board.errors if "/board/stream" not in e and "/api/responders" not in e
            ] == [], board.errors
    await board.close()


@pytest.mark.integration
@in_module_loop
async def test_a_board_whose_login_ended_keeps_warning_until_logged_in_again(
        browser: Browser, service: ServiceProcess) -> None:
    """The service comes back with a new station password: the board does not go quietly
    to a login form, it keeps NOT WATCHING up (sound too) and offers to log in again."""
    board = await Board.open(browser, service.base, password=PASSWORD)
    assert await service.stop() == 0
    service.env["BOOTHWATCH_BOARD_PASSWORD"] = "a new password"
    try:
        service.start()
        await service.ready()
        relogin = board.page.locator("#relogin")
        await relogin.wait_for(timeout=15_000)
        assert "no longer logged in" in await board.page.locator("#lost").inner_text()
        await board.expect('#sound[data-alarm="on"]', timeout=0.5)
        await relogin.click()
        assert await board.log_in("a new password") == 200
        await board.enable_sound()
        await board.expect('[data-link="live"]')
    finally:
        assert await service.stop() == 0
        service.env["BOOTHWATCH_BOARD_PASSWORD"] = PASSWORD
        service.start()
        await service.ready()
    assert [e for e in board.errors if "net::ERR_" not in e and "401" not in e] == []
    await board.close()


@pytest.mark.integration
@in_module_loop
@pytest.mark.parametrize(("language", "names", "countdown_words"), [
    ("en", "Booth", "Alarm in 1m 2"),
    ("pt_PT", "Cabine", "Alarme daqui a 1 min e 2"),
])
async def test_screenshot_three_booths(
        browser: Browser, mosquitto: Mosquitto, mqtt_publish: Publish, tmp_path: Path,
        language: str, names: str, countdown_words: str) -> None:
    """The README's picture: one booth vacant, one occupied and still with its countdown
    part-filled, one in alarm; written to docs/board.png by `make screenshot` (and in
    European Portuguese beside it, for the translators' page). No text is cut off in
    either language."""
    clock = HandClock()

    def three(site: Site) -> None:
        site.site["language"] = language
        site.booths = [booth(f"b{i}", f"{names} {i}") for i in (1, 2, 3)]
        site.booths[1]["stillness"] = "3m"

    publish = mqtt_publish  # a broker of its own: the module's service has the same site
    async with start_service(tmp_path, mosquitto, publish, clock=clock, edit=three, env=ENV,
                             step2="30s", ack_timeout="5m") as svc:
        board = await Board.open(browser, svc.base, password=PASSWORD,
                                 viewport={"width": 1600, "height": 900})
        publish(events_topic("b2"), event("occupancy", occupied=True))
        publish(events_topic("b2"), event("motion", state="moving"))
        publish(events_topic("b3"), event("occupancy", occupied=True))
        publish(events_topic("b3"), event("motion", state="moving"))
        await eventually(lambda: all(b["occupied"] for b in svc.runtime.api.booths()[1:]))
        svc.advance(4 * 60)
        publish(events_topic("b2"), event("motion", state="still"))
        publish(events_topic("b3"), event("button", press="call"))
        await eventually(lambda: svc.runtime.api.booths()[2]["incident"] is not None)
        svc.advance(100)  # the next ping brings the board the hand clock's time
        await board.expect('[data-booth="b3"][data-priority="high"]')
        countdown = board.tile("b2").locator('[data-tick="countdown"]')
        # the board's clock follows the hand clock from the next ping on
        await eventually(lambda: _text_has(countdown, countdown_words), timeout=3)
        out = tmp_path / "board.png"
        if SCREENSHOT:
            out = Path(SCREENSHOT) if language == "en" else Path(SCREENSHOT).with_stem(
                f"{Path(SCREENSHOT).stem}.{language}")
        await board.page.screenshot(path=str(out if out.is_absolute() else ROOT / out))
        assert [await board.tile(b).get_attribute("data-state") for b in ("b1", "b2", "b3")] == [
            "vacant", "occupied", "occupied"]
        assert await board.clipped() == []
        assert board.errors == []
        await board.close()


#: a tile in every state the board draws, booth by booth (test_every_state_fits)
STATES = ["vacant, device test", "moving", "still, high risk", "maintenance", "unmonitored",
          "acknowledged", "attended with steps", "medium", "reopened", "low battery"]


def every_state(language: str, names: str) -> Callable[[Site], None]:
    def edit(site: Site) -> None:
        site.site["language"] = language
        site.booths = [booth(f"b{i}", f"{names} {i}") for i in range(1, len(STATES) + 1)]
        site.booth("b3").update(stillness="10m", high_risk={"stillness": "5m"})
        site.booth("b5")["device_timeout"] = "1m"
        site.booth("b8")["long_session"] = "1s"
        site.devices = [device("b5-radar", "zigbee2mqtt", "zigbee2mqtt/b5-radar", "b5", "motion"),
                        device("b10-door", "zigbee2mqtt", "zigbee2mqtt/b10-door", "b10", "door")]
    return edit


@pytest.mark.integration
@in_module_loop
@pytest.mark.parametrize(("language", "names"), [("en", "Booth"), ("pt_PT", "Cabine")])
async def test_every_state_fits(
        browser: Browser, mosquitto: Mosquitto, mqtt_publish: Publish, tmp_path: Path,
        language: str, names: str) -> None:
    """Ten booths, each in another state (maintenance, not monitored, an incident someone
    is going to, one reopened...), on the station's screen: no text is cut off, in
    English or in Portuguese, whose words are longer."""
    publish = mqtt_publish
    async with start_service(tmp_path, mosquitto, publish, clock=HandClock(),
                             edit=every_state(language, names), env=ENV, step2="1h",
                             repeat="1h", ack_timeout="2m") as svc:
        api = svc.runtime.api

        def incident(booth: str) -> str:
            found = next(b for b in api.booths() if b["booth"] == booth)["incident"]
            return "" if found is None else str(found["id"])

        async def answer(booth: str, *steps: str) -> None:
            await eventually(lambda: incident(booth) != "")
            for step in steps:
                status, body = await svc.post(f"/api/incidents/{incident(booth)}/{step}",
                                              {"responder": "ana"}, headers=BEARER)
                assert status == 200, body

        publish("zigbee2mqtt/b5-radar", '{"occupancy": false}')
        publish(events_topic("b9"), event("button", press="call"))
        await answer("b9", "ack")
        await eventually(lambda: next(b for b in api.booths() if b["booth"] == "b5")[
            "motion"] is not None)
        svc.advance(3 * 60)  # b9: nobody arrived in time; b5: its sensor is silent
        publish("zigbee2mqtt/b10-door", '{"contact": true, "battery": 3}')
        for b in ("b2", "b3", "b6", "b7", "b8"):
            publish(events_topic(b), event("occupancy", occupied=True))
        publish(events_topic("b2"), event("motion", state="moving"))
        publish(events_topic("b3"), event("motion", state="still"))
        for b in ("b6", "b7"):
            publish(events_topic(b), event("button", press="call"))
        await answer("b6", "ack")
        await answer("b7", "ack", "presence")
        for step in ({"step": "knocked"}, {"step": "entered"}, {"step": "oxygen"},
                     {"step": "naloxone", "count": 2}):
            status, body = await svc.post(f"/api/incidents/{incident('b7')}/steps",
                                          {"responder": "ana", **step}, headers=BEARER)
            assert status == 200, body
        for path, body in (("b3/session", {"risk": "high", "route": "inject", "by": "rui"}),
                           ("b1/test", {"tester": "rui"})):
            status, body = await svc.post(f"/api/booths/{path}", body, headers=BEARER)
            assert status == 200, body
        status, body = await svc.post("/api/booths/b4/maintenance", {
            "until": "2h", "reason": "Deep clean after a spill", "by": "rui"}, headers=BEARER)
        assert status == 200, body
        await eventually(lambda: incident("b10") != "")
        svc.advance(100)  # b3 still for a while, b8 over its session limit
        await eventually(lambda: incident("b8") != "")

        board = await Board.open(browser, svc.base, password=PASSWORD)
        await board.expect('[data-booth="b8"][data-priority="medium"]')
        assert [await board.tile(f"b{i}").get_attribute("data-state")
                for i in range(1, len(STATES) + 1)] == [
            "vacant", "occupied", "occupied", "maintenance", "unmonitored", "occupied",
            "occupied", "occupied", "vacant", "vacant"]
        assert [await board.tile(f"b{i}").get_attribute("data-incident-state")
                for i in (6, 7, 9)] == ["acknowledged", "attended", "open"]
        assert await board.tile("b9").locator(".reopened").count() == 1
        assert await board.tile("b7").locator(".steps li").count() == 4  # 3 and "earlier"
        assert await board.tile("b3").locator('[data-risk="high"]').count() == 1
        assert await board.tile("b1").locator(".testing").count() == 1
        await board.page.screenshot(path=str(tmp_path / "board.png"))
        assert await board.clipped() == []
        assert board.errors == []
        await board.close()


@pytest.mark.integration
@in_module_loop
async def test_a_line_the_clock_makes_longer_is_fitted_again(
        browser: Browser, mosquitto: Mosquitto, mqtt_publish: Publish, tmp_path: Path) -> None:
    """A still booth's line grows as its clock runs ("...há 0 s", "...há 20 min e 40 s"):
    when it no longer fits, the tile's text is made smaller rather than the line cut
    short (a site's own wording, longer than the shipped one)."""
    write_catalog(tmp_path / "locale", "pt_PT", {
        "Still for {duration}": "Sem nenhum movimento detetado há {duration}"}, context=BOARD)

    def edit(site: Site) -> None:
        site.site.update(language="pt_PT", catalogs=str(tmp_path / "locale"))
        site.booths = [booth("b1", "Cabine 1", stillness="1h"), booth("b2"), booth("b3")]

    async with start_service(tmp_path, mosquitto, mqtt_publish, clock=HandClock(), edit=edit,
                             env=ENV) as svc:
        board = await Board.open(browser, svc.base, password=PASSWORD,
                                 viewport={"width": 1280, "height": 800})
        mqtt_publish(events_topic("b1"), event("occupancy", occupied=True))
        mqtt_publish(events_topic("b1"), event("motion", state="still"))
        line = board.tile("b1").locator('[data-tick="still"]')
        await eventually(lambda: _text_has(line, "detetado há 0 s"), timeout=3)
        assert await board.clipped() == []
        size = await _unit(board.tile("b1"))
        svc.advance(20 * 60 + 40)
        await eventually(lambda: _text_has(line, "detetado há 20 min e 40 s"), timeout=3)
        assert await board.clipped() == []  # fitted in the same tick as the words changed
        assert await _unit(board.tile("b1")) < size
        assert board.errors == []
        await board.close()


async def _unit(tile: Any) -> float:
    """The tile's text unit (--u, px), which board.js fits to its content."""
    return float((await tile.evaluate("el => el.style.getPropertyValue('--u')")).removesuffix("px"))


async def _text_has(locator: Any, text: str) -> bool:
    return text in await locator.inner_text()


def test_every_text_of_the_script_is_in_texts_and_every_text_is_used() -> None:
    """The script takes its words from TEXTS only: each key it names exists (a missing one
    would throw on the board), and no text is left unused; the page runs no inline script
    (its Content-Security-Policy forbids it)."""
    script = (ROOT / "monitor/board/static/board.js").read_text(encoding="utf-8")
    named = set(re.findall(r'\bt\("(\w+)"[,)]', script))
    assert named - set(TEXTS) == set()
    # keys the script builds from a prefix and a value: "state_" + state, ...
    prefixes = set(re.findall(r'"(\w+_)" \+', script))
    unused = {k for k in TEXTS if f'"{k}"' not in script
              and not any(k.startswith(p) for p in prefixes)}
    assert unused == set()
    page = (ROOT / "monitor/board/board.html").read_text(encoding="utf-8")
    assert "<script>" not in page and " on" not in page.replace("\n", " ").split("<body>")[1]
