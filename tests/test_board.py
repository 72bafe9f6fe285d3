"""The station board's server side: its page, its stream of changes, and its feed.

Integration tests run the real service against a real Mosquitto and read the stream
over real HTTP with aiohttp's client; the feed's own tests drive it without a service.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from structlog.testing import capture_logs

from monitor.board.feed import DROPPED, BoardFeed, message
from monitor.board.texts import TEXTS
from monitor.config import parse_config
from monitor.metrics import board_gauges
from tests.harness.board import ENV, BoardStream, board_stream, login
from tests.harness.broker import Mosquitto, Publish
from tests.harness.service import HandClock, Service, event, events_topic, eventually, start_service
from tests.harness.site import Site
from tests.test_config import _data

WAIT = 10.0


@pytest.fixture
async def service(tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
                  ) -> AsyncIterator[Service]:
    def edit(site: Site) -> None:
        site.no_rate_limit()  # the stalled board's test floods one sender

    async with start_service(tmp_path, mosquitto, mqtt_publish, env=ENV, edit=edit) as svc:
        yield svc


@pytest.fixture
async def station(service: Service) -> dict[str, str]:
    """The headers of a station logged in at POST /board/login, as a board's page is."""
    return await login(service.http, service.base)


async def _api(svc: Service, path: str, station: dict[str, str]) -> Any:
    async with svc.http.get(svc.base + path, headers=station) as resp:
        assert resp.status == 200
        return await resp.json()


@pytest.mark.integration
async def test_the_stream_sends_a_snapshot_then_every_change(
        tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish) -> None:
    """A snapshot as the API has it, then a call press's booth and incident, an ack, the
    resolve that clears the booth, a check-out: each message's data is what the API serves
    for the same thing."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, env=ENV,
                             clock=HandClock()) as svc:
        station = await login(svc.http, svc.base)
        await _stream_then_changes(svc, station)


async def _duty(svc: Service, station: dict[str, str]) -> list[dict[str, Any]]:
    """GET /api/responders as the boards have it: without the channels."""
    return [{k: v for k, v in r.items() if k != "channels"}
            for r in await _api(svc, "/api/responders", station)]


async def _stream_then_changes(svc: Service, station: dict[str, str]) -> None:
    async with board_stream(svc.http, svc.base, station) as board:
        kind, snapshot = await board.next()
        assert kind == "snapshot"
        assert snapshot["site"] == {"id": "lisbon-1", "name": "Sala Mouraria"}
        assert snapshot["booths"] == await _api(svc, "/api/booths", station)
        assert snapshot["incidents"] == []
        assert snapshot["responders"] == await _duty(svc, station)
        assert snapshot["on_duty"] == ["ana", "rui"]
        assert snapshot["now"] == pytest.approx(svc.runtime.clock(), abs=WAIT)

        svc.publish(events_topic("b1"), event("button", press="call", id="c1"))
        await svc.hook.wait(1)
        # in whatever order: the booth with its incident, the incident raised, then its
        # page delivered (time stands still: that is the last change, so both agree whole)
        got: dict[str, list[Any]] = {"booth": [], "incident": []}
        async with asyncio.timeout(WAIT):
            while not got["incident"] or got["incident"][-1]["timeline"][-1]["kind"] != (
                    "page_sent"):
                kind, data = await board.next()
                got.setdefault(kind, []).append(data)
        (booth,) = [b for b in got["booth"] if b["booth"] == "b1"]
        raised, incident = got["incident"]
        assert (raised["booth"], raised["state"], raised["triggers"]) == ("b1", "open", ["call"])
        assert booth["incident"]["id"] == raised["id"] == incident["id"]
        assert [incident] == await svc.incidents("open", headers=station)
        booths = await _api(svc, "/api/booths", station)
        assert [booth] == [b for b in booths if b["booth"] == "b1"]

        status, _ = await svc.post(f"/api/incidents/{incident['id']}/ack", {"responder": "ana"},
                                   headers=station)
        assert status == 200
        acked = await board.until("incident", lambda i: i["state"] == "acknowledged")
        assert acked["acknowledged_by"] == "ana"
        status, _ = await svc.post(f"/api/incidents/{incident['id']}/resolve",
                                   {"responder": "ana", "outcome": "ok"}, headers=station)
        assert status == 200
        resolved = await board.until("incident", lambda i: i["state"] == "resolved")
        assert (resolved["id"], resolved["outcome"]) == (incident["id"], "ok")
        await board.until("booth", lambda b: b["booth"] == "b1" and b["incident"] is None)

        status, _ = await svc.post("/api/responders/rui/duty", {"on": False}, headers=station)
        assert status == 200
        responders = await board.until("responders")
        assert responders == await _duty(svc, station)
        assert [r["on_duty"] for r in responders] == [True, False]


@pytest.mark.integration
async def test_a_silent_stream_pings_every_second(service: Service,
                                                 station: dict[str, str]) -> None:
    """With nothing changing, a ping with the service's time, so the board knows it is live."""
    async with board_stream(service.http, service.base, station) as board:
        assert (await board.next())[0] == "snapshot"
        kind, ping = await board.next(timeout=3)
        assert kind == "ping" and ping["now"] == pytest.approx(service.runtime.clock(), abs=3)


@pytest.mark.integration
async def test_a_board_that_reconnects_gets_a_fresh_snapshot(service: Service,
                                                            station: dict[str, str]) -> None:
    """The state a board missed while away is in the snapshot it gets on reconnecting."""
    svc = service
    async with board_stream(svc.http, svc.base, station) as board:
        assert (await board.next())[0] == "snapshot"
    svc.publish(events_topic("b2"), event("button", press="call", id="c2"))
    (page,) = await svc.hook.wait(1)
    async with board_stream(svc.http, svc.base, station) as board:
        kind, snapshot = await board.next()
    assert kind == "snapshot"
    assert [i["id"] for i in snapshot["incidents"]] == [page["incident"]]
    assert snapshot["incidents"] == await svc.incidents("open", headers=station)
    b2 = next(b for b in snapshot["booths"] if b["booth"] == "b2")
    assert b2["incident"]["id"] == page["incident"]


async def _drain(board: BoardStream, seen: list[str]) -> None:
    while True:
        kind, data = await board.next(timeout=60)
        seen.append(kind if kind != "incident" else f"incident {data['state']}")


def _stalled(base: str, station: dict[str, str]) -> socket.socket:
    """A board that asks for the stream and never reads it (a tiny receive buffer)."""
    host, port = base.removeprefix("http://").split(":")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect((host, int(port)))
    stalled.sendall(f"GET /board/stream HTTP/1.1\r\nHost: {host}\r\n"
                    f"Cookie: {station['Cookie']}\r\n\r\n".encode())
    return stalled


def _until_cut(stalled: socket.socket) -> bool:
    """Read what the server sent until it closes the connection; True when it did."""
    stalled.settimeout(WAIT)
    try:
        while stalled.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


@pytest.mark.integration
async def test_a_stalled_board_is_dropped_and_pages_go_on(
        service: Service, station: dict[str, str], mosquitto: Mosquitto) -> None:
    """A board that stops reading while booths keep changing is cut and counted; a reading
    board stays; a call is paged and reaches the reading board meanwhile."""
    svc = service
    seen: list[str] = []
    async with board_stream(svc.http, svc.base, station) as live:
        reader = asyncio.create_task(_drain(live, seen))
        stalled = _stalled(svc.base, station)
        try:
            await eventually(lambda: svc.runtime.board.connected == 2, WAIT)
            flood = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            flood.connect(mosquitto.host, mosquitto.port)
            flood.loop_start()
            try:
                # booths b1 and b2 come and go, each a booth change, until the stalled board
                # has fallen its whole queue behind (its socket buffers hold a few hundred)
                sent = 0
                while sent < 8000:
                    for i in range(200):
                        info = flood.publish(events_topic(f"b{1 + i % 2}"),
                                             event("occupancy", occupied=i % 4 < 2), qos=1)
                    await asyncio.to_thread(info.wait_for_publish, WAIT)
                    sent += 200
                    if svc.runtime.board.dropped:
                        break
                    await asyncio.sleep(0.05)
            finally:
                flood.disconnect()
                flood.loop_stop()
            assert svc.runtime.board.dropped == 1, f"not dropped after {sent} changes"
            assert await asyncio.to_thread(_until_cut, stalled), "the stalled board's link stays"
        finally:
            stalled.close()
        svc.publish(events_topic("b1"), event("button", press="call", id="c3"))
        await svc.hook.wait(1)
        await eventually(lambda: "incident open" in seen, WAIT)
        assert await svc.metric("boothwatch_boards_dropped_total") == 1
        assert await svc.metric("boothwatch_boards_connected") == 1
        assert seen.count("booth") >= sent  # the reading board missed nothing
        reader.cancel()


@pytest.mark.integration
async def test_the_metric_counts_connected_boards(service: Service,
                                                 station: dict[str, str]) -> None:
    """boothwatch_boards_connected follows the open streams; a board is expected by default."""
    svc = service

    async def connected(count: int) -> bool:
        return await svc.metric("boothwatch_boards_connected") == count

    assert await connected(0)
    assert await svc.metric("boothwatch_board_expected") == 1
    async with board_stream(svc.http, svc.base, station) as one:
        async with board_stream(svc.http, svc.base, station) as two:
            await one.next()
            await two.next()
            assert await connected(2)
        await eventually(lambda: connected(1), WAIT)
    await eventually(lambda: connected(0), WAIT)


@pytest.mark.integration
async def test_the_page_embeds_its_texts_and_ships_its_files(service: Service,
                                                            station: dict[str, str]) -> None:
    """GET /board: the texts as JSON for the script, the session's CSRF token, nothing from
    elsewhere; its stylesheet and script from the package; no other file; none of it, nor
    the stream, without a session."""
    svc = service
    async with svc.http.get(f"{svc.base}/board", headers=station) as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["Cache-Control"] == "no-store"
        page = await resp.text()
    found = re.search(r'<script type="application/json" id="board-texts">(.*?)</script>', page,
                      re.S)
    assert found is not None and json.loads(found[1]) == TEXTS
    assert f'<meta name="csrf-token" content="{station["X-CSRF-Token"]}">' in page
    assert "Sala Mouraria" in page
    for name, kind in (("board.css", "text/css"), ("board.js", "javascript")):
        async with svc.http.get(f"{svc.base}/board/static/{name}", headers=station) as resp:
            assert resp.status == 200 and kind in resp.content_type, name
    for name in ("nothing.js", "..%2Fhttp.py", "%2E%2E%2Fboard.html"):
        async with svc.http.get(f"{svc.base}/board/static/{name}", headers=station) as resp:
            assert resp.status == 404, name
    for path in ("/board/stream", "/board/static/board.js"):
        async with svc.http.get(svc.base + path) as resp:
            assert resp.status == 401, path
    assert svc.runtime.board.connected == 0


# --- the feed alone -------------------------------------------------------------------


def _feed(limit: int = 3) -> tuple[BoardFeed, list[list[dict[str, Any]]]]:
    duty = [[{"id": "ana", "on_duty": True}]]
    return BoardFeed(lambda: duty[0], limit=limit), duty


async def test_a_board_that_falls_behind_is_cut_and_counted() -> None:
    """The queue is bounded: the message past it drops the board (its link cut, its queue
    freed, its stream told to stop), and the other boards go on."""
    feed, _ = _feed(limit=3)
    cut: list[str] = []
    slow = feed.subscribe(b"{}", cut=lambda: cut.append("slow"))
    fast = feed.subscribe(b"{}", cut=lambda: cut.append("fast"))
    assert fast.queue.get_nowait() == message(b"snapshot", b"{}")
    with capture_logs() as logs:
        for n in range(3):  # the slow one holds its snapshot, 0 and 1: 2 is one too many
            feed.send(b"booth", str(n).encode())
            if n < 2:
                assert fast.queue.get_nowait() == message(b"booth", str(n).encode())
    assert (feed.connected, feed.dropped, cut) == (1, 1, ["slow"])
    assert [(e["event"], e["boards"]) for e in logs] == [("board_dropped", 1)]
    assert slow.queue.get_nowait() == DROPPED and slow.queue.empty()
    assert fast.queue.get_nowait() == message(b"booth", b"2")
    feed.unsubscribe(fast)
    assert feed.connected == 0


async def test_a_board_starts_with_its_snapshot_and_hears_duty() -> None:
    """The snapshot comes first; a check-in at once; a shift change at the next look."""
    feed, duty = _feed(limit=10)
    board = feed.subscribe(b'{"now":1}', cut=lambda: None)
    assert board.queue.get_nowait() == message(b"snapshot", b'{"now":1}')
    feed.send(b"incident", b'{"id":"x"}')
    assert board.queue.get_nowait() == b'event: incident\ndata: {"id":"x"}\n\n'
    feed.duty()
    assert board.queue.get_nowait() == message(b"responders", b'[{"id":"ana","on_duty":true}]')
    watch = asyncio.create_task(feed.watch_duty())
    try:
        duty[0] = [{"id": "ana", "on_duty": False}]  # her shift ended: no event says so
        async with asyncio.timeout(WAIT):
            got = await board.queue.get()
        assert got == message(b"responders", b'[{"id":"ana","on_duty":false}]')
    finally:
        watch.cancel()


def test_with_no_board_a_change_costs_nothing() -> None:
    """No board: nothing is encoded or asked of the roster."""
    def never() -> list[dict[str, Any]]:
        raise AssertionError("duty read with no board")

    feed = BoardFeed(never)
    feed.send(b"booth", b"{}")
    feed.duty()
    assert (feed.connected, feed.dropped) == (0, 0)


def test_the_board_is_expected_in_its_hours_only() -> None:
    """boothwatch_board_expected: 1 inside [board] expected_hours (site time), 0 outside;
    always 1 without the key, never with an empty list."""
    tz = ZoneInfo("Europe/Lisbon")
    data = _data()

    def expected(hours: list[str] | None, hour: int) -> float:
        if hours is not None:
            data["board"] = {"expected_hours": hours}
        config = parse_config(data, {})
        now = dt.datetime(2026, 11, 23, hour, 30, tzinfo=tz).timestamp()  # a Monday
        metrics = {m.name: m.samples[0].value
                   for m in board_gauges(BoardFeed(lambda: []), config, lambda: now)}
        return metrics["boothwatch_board_expected"]

    assert expected(None, 3) == 1
    assert expected(["mon-fri 08:00-22:00"], 21) == 1
    assert expected(["mon-fri 08:00-22:00"], 22) == 0
    assert expected(["sat,sun 08:00-22:00"], 12) == 0
    assert expected(["sun 20:00-08:00"], 7) == 1  # a night shift into Monday
    assert expected([], 12) == 0


@pytest.mark.integration
async def test_a_head_request_for_the_stream_is_refused(service: Service,
                                                       station: dict[str, str]) -> None:
    """HEAD on the stream is 405 and subscribes nothing; the connection still serves."""
    svc = service
    async with svc.http.head(f"{svc.base}/board/stream", headers=station) as resp:
        assert resp.status == 405
    assert svc.runtime.board.connected == 0
    # the same keep-alive connection, not a stream's
    assert await _api(svc, "/api/booths", station)
