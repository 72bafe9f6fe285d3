"""Page endpoint outage (issue 6): a webhook answering 500, and one that hangs.

Real local servers misbehave: an aiohttp app that answers every page with a 500,
and a raw TCP server that accepts the connection, reads the request and never
answers. The whole service runs against a real Mosquitto and SQLite. Pages must
be retried with back-off, handed to the responder's next channel, recorded
attempt by attempt, and nothing may wait for the broken endpoint: not ingest,
and not pages to anyone else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from alerts.channels.webhook import WebhookChannel
from alerts.delivery import PRINTED_ONLY, Delivery, Dispatcher
from alerts.http import client_session
from monitor.core.settings import ChannelConfig
from tests.harness.broker import Mosquitto, Publish, free_port
from tests.harness.receivers import LocalService, Webhook, local_service
from tests.harness.service import Service, event, events_topic, eventually, start_service
from tests.harness.site import Site, responder, webhook

pytestmark = pytest.mark.integration


def broken() -> AbstractAsyncContextManager[LocalService]:
    """A real HTTP server that answers every request with 500 (and records it)."""
    return local_service(lambda _seen: web.Response(status=500, text="internal error"))


class Hanging:
    """A real TCP server that accepts a connection, reads the request, never answers."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/page"
        self.accepted = 0
        self.open = 0  # connections the client has not given up on yet
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Hanging:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        try:
            await reader.read()  # until the client times out and closes
        finally:
            self.open -= 1
            writer.close()


def site(channels: dict[str, tuple[str, str]], ana: list[str],
         bea: list[str] | None = None, bursts: bool = False) -> Callable[[Site], None]:
    """Extra webhook channels (name -> (url, timeout)); Ana's channels in order; Bea, a
    second nurse, with her own channels; no flood limit if the test sends ``bursts``."""
    def edit(site: Site) -> None:
        extra = {name: webhook(url, secret=None, timeout=timeout)
                 for name, (url, timeout) in channels.items()}
        site.channels = {**extra, **site.channels}
        site.responder("ana")["channels"] = ana
        if bea is not None:
            site.responders.insert(1, responder("bea", ["nurse"], bea))
        if bursts:
            site.no_rate_limit()
    return edit


async def timeline(svc: Service, incident: str) -> list[dict[str, Any]]:
    got = [i for i in await svc.incidents() if i["id"] == incident]
    timeline: list[dict[str, Any]] = got[0]["timeline"] if got else []
    return timeline


async def test_a_webhook_answering_500_falls_back_and_every_failure_is_recorded(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Ana's first channel answers 500: her second channel gets the level-1 page at once;
    the failed attempt is in page_attempts, the timeline and the metrics."""
    async with broken() as server:
        edit = site({"broken": (f"{server.url}/page", "2s")}, ana=["broken", "pager"])
        async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h",
                                 edit=edit) as svc:
            svc.publish(events_topic("b1"), event("button", press="call"))
            page = (await svc.hook.wait(1, 5))[0]
            assert (page["responder"], page["level"]) == ("ana", 1)
            assert [(p.json()["responder"], p.json()["level"]) for p in server.requests] == [
                ("ana", 1)]

            async def stored() -> list[dict[str, Any]] | None:
                pages = await svc.runtime.store.pages(page["incident"])
                return pages if pages and pages[0]["status"] == "sent" else None

            (row,) = await eventually(stored)
            assert [(t["channel"], t["ok"], t["error"]) for t in row["tries"]] == [
                ("broken", False, "HTTP 500"), ("pager", True, None)]
            assert (row["channel"], row["attempts"]) == ("pager", 2)
            kinds = [(e["kind"], e.get("channel"), e.get("reason"))
                     for e in await timeline(svc, page["incident"])]
            assert ("page_fallback", "broken", "HTTP 500") in kinds
            assert ("page_sent", "pager", None) in kinds
            assert await svc.metric(
                'boothwatch_pages_total{channel="broken",result="failed"}') == 1.0


async def test_every_channel_failing_is_retried_with_backoff_then_escalates(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Ana's only channel answers 500: every round is retried (the test service backs off
    0.05 s twice), each attempt recorded; then the page is failed with its reason and the
    incident escalates to Rui at once."""
    async with broken() as server:
        edit = site({"broken": (f"{server.url}/page", "2s")}, ana=["broken"])
        async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h",
                                 edit=edit) as svc:
            svc.publish(events_topic("b1"), event("button", press="call"))
            page = (await svc.hook.wait(1, 10))[0]
            assert (page["responder"], page["level"]) == ("rui", 2)
            # one try and two retries at level 1 (the escalation pages Ana there too)
            assert [p.json()["level"] for p in server.requests].count(1) == 3
            await svc.runtime.store.flush()
            pages = await svc.runtime.store.pages(page["incident"])
            ana = next(p for p in pages if (p["responder"], p["level"]) == ("ana", 1))
            assert (ana["status"], ana["attempts"], ana["last_error"]) == ("failed", 3,
                                                                           "HTTP 500")
            assert [(t["number"], t["ok"], t["error"]) for t in ana["tries"]] == [
                (1, False, "HTTP 500"), (2, False, "HTTP 500"), (3, False, "HTTP 500")]
            tries_at = [t["at"] for t in ana["tries"]]
            assert tries_at == sorted(tries_at)
            failed = [e for e in await timeline(svc, page["incident"])
                      if e["kind"] == "page_failed"]
            assert [(e["responder"], e["reason"]) for e in failed] == [("ana", "HTTP 500")]
            assert await svc.metric(  # Ana's level-2 page is failing by now too
                'boothwatch_pages_total{channel="broken",result="failed"}') >= 3.0


async def test_a_page_printed_on_the_console_is_not_delivered(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Ana's pager answers 500 and her fallback is a console nobody watches, as Rui's is in
    the interface's example: each round prints the page and goes on; the page ends failed,
    is counted and logged as printed, never as sent, and the incident escalates to Rui."""
    async with broken() as server:
        edit = site({"broken": (f"{server.url}/page", "2s")}, ana=["broken", "screen"])

        def with_console(s: Site) -> None:
            edit(s)
            s.channels["screen"] = {"type": "console"}

        with capture_logs() as logs:
            async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h",
                                     edit=with_console) as svc:
                svc.publish(events_topic("b1"), event("button", press="call"))
                page = (await svc.hook.wait(1, 10))[0]
                assert (page["responder"], page["level"]) == ("rui", 2)
                await svc.runtime.store.flush()
                pages = await svc.runtime.store.pages(page["incident"])
                ana = next(p for p in pages if (p["responder"], p["level"]) == ("ana", 1))
                assert (ana["status"], ana["attempts"], ana["last_error"]) == (
                    "failed", 6, PRINTED_ONLY)
                assert [(t["channel"], t["ok"], t["error"]) for t in ana["tries"]] == [
                    ("broken", False, "HTTP 500"), ("screen", False, PRINTED_ONLY)] * 3
                kinds = [(e["kind"], e.get("responder"), e.get("level"), e.get("reason"))
                         for e in await timeline(svc, page["incident"])]
                # the reason names the pager's failure, not only the console's printing
                assert ("page_failed", "ana", 1, f"HTTP 500 (broken); {PRINTED_ONLY}") in kinds
                assert not [k for k in kinds if k[:3] == ("page_sent", "ana", 1)]
                assert await svc.metric(
                    'boothwatch_pages_total{channel="screen",result="printed"}') >= 3.0
                assert await svc.metric(
                    'boothwatch_pages_total{channel="screen",result="sent"}') == 0.0
    printed = [e for e in logs if e["event"] == "page_printed_not_delivered"
               and (e["responder"], e["channel"]) == ("ana", "screen")]
    assert [e["final"] for e in printed][:3] == [False, False, True]
    assert not [e for e in logs if e["event"] == "page delivered"
                and e["channel_name"] == "screen"]


async def test_a_hanging_webhook_times_out_and_falls_back(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """The channel's timeout ends an attempt the endpoint never answers; the next channel
    gets the page, and the reason names the timeout."""
    async with Hanging() as hanging:
        edit = site({"hang": (hanging.url, "1s")}, ana=["hang", "pager"])
        async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h",
                                 edit=edit) as svc:
            svc.publish(events_topic("b1"), event("button", press="call"))
            page = (await svc.hook.wait(1, 10))[0]
            assert (page["responder"], page["level"]) == ("ana", 1)
            assert hanging.accepted == 1
            await eventually(lambda: hanging.open == 0)  # we hung up, it did not

            async def tries() -> list[tuple[str, bool, str | None]] | None:
                pages = await svc.runtime.store.pages(page["incident"])
                got = [(t["channel"], t["ok"], t["error"]) for t in pages[0]["tries"]]
                return got if len(got) == 2 else None

            assert await eventually(tries) == [
                ("hang", False, "timeout after 1s"), ("pager", True, None)]


async def test_a_hanging_webhook_holds_up_neither_ingest_nor_other_pages(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Ana's pager hangs (30 s timeout). Meanwhile a burst from another booth is stored
    and acknowledged, and a call there reaches Bea, whose channel works, while Ana's
    requests are still hanging."""
    async with Hanging() as hanging:
        edit = site({"hang": (hanging.url, "30s")}, ana=["hang"], bea=["pager"], bursts=True)
        async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h",
                                 edit=edit) as svc:
            svc.publish(events_topic("b1"), event("button", press="call"))
            first = (await svc.hook.wait(1, 5))[0]
            assert (first["booth"], first["responder"]) == ("b1", "bea")
            await eventually(lambda: hanging.open == 1)
            for n in range(300):
                svc.publish(events_topic("b2"), event("heartbeat", battery=90, id=f"hb-{n}"))
            await eventually(lambda: _stored_events(svc, 301), 10)
            await eventually(lambda: _metric_is(svc, "boothwatch_mqtt_unacked_messages ", 0))
            svc.publish(events_topic("b2"), event("button", press="call"))
            second = (await svc.hook.wait(2, 5))[1]
            assert (second["booth"], second["responder"]) == ("b2", "bea")
            # both of Ana's pages are still waiting on the hanging endpoint
            await eventually(lambda: hanging.open == 2)
            assert hanging.open == hanging.accepted == 2


async def _stored_events(svc: Service, count: int) -> bool:
    return await svc.runtime.store.count("events") == count


async def _metric_is(svc: Service, line_start: str, value: float) -> bool:
    return await svc.metric(line_start) == value


async def test_requests_hanging_on_one_endpoint_leave_connections_for_the_others() -> None:
    """150 pages hang on one endpoint (more than aiohttp's default pool of 100
    connections): a page to another endpoint through the same session still goes out."""
    async with Hanging() as hanging, Webhook() as hook, client_session() as session:
        channels = {
            "hang": WebhookChannel(ChannelConfig(name="hang", type="webhook", url=hanging.url,
                                                 timeout=30.0), session),
            "pager": WebhookChannel(ChannelConfig(name="pager", type="webhook", url=hook.url,
                                                  timeout=30.0), session),
        }
        attempts: list[tuple[str, bool]] = []
        dispatcher = Dispatcher(channels, lambda d, a: attempts.append((d.page_id, a.ok)),
                                lambda d, reason: None)
        for n in range(150):
            dispatcher.submit(_delivery(f"h{n}", "hang"))
        await eventually(lambda: hanging.open == 150, 10)
        dispatcher.submit(_delivery("p1", "pager"))
        await hook.wait(1, 5)
        await eventually(lambda: attempts)
        assert attempts == [("p1", True)] and hanging.open == 150
        await dispatcher.close()


def _delivery(page_id: str, channel: str) -> Delivery:
    return Delivery(page_id=page_id, incident="i1", responder="ana", level=1,
                    channels=(channel,), payload={"kind": "page", "incident": "i1"})
