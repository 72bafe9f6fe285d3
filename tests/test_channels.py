"""Page delivery against a real local aiohttp server: webhook, console, mqtt, dispatcher."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from alerts.channels.console import ConsoleChannel
from alerts.channels.mqtt import MqttChannel
from alerts.channels.webhook import SIGNATURE_HEADER, WebhookChannel
from alerts.delivery import (
    PRINTED_ONLY,
    Attempt,
    Channel,
    Delivery,
    DeliveryError,
    DeliveryKind,
    Dispatcher,
)
from alerts.factory import build_channels
from alerts.text import SOURCE_TEXT
from monitor.core.settings import ChannelConfig

FAST = (0.01, 0.01, 0.01)

PAYLOAD: dict[str, Any] = {
    "incident": "01JDINCIDENT",
    "site": "lisbon-1",
    "booth": "b1",
    "booth_name": "Booth 1",
    "priority": "high",
    "triggers": ["call"],
    "level": 1,
    "responder": "ana",
    "message": "Booth 1: call button pressed",
    "raised_at": "2026-11-23T20:15:03.120Z",
    "ack_url": "http://127.0.0.1:8080/ack/tok",
}


def delivery(
    channel: str | tuple[str, ...] = "hook", incident: str = "01JDINCIDENT",
    responder: str = "ana", n: int = 1, kind: DeliveryKind = "page",
) -> Delivery:
    payload = dict(PAYLOAD, incident=incident, responder=responder)
    channels = (channel,) if isinstance(channel, str) else channel
    return Delivery(f"page-{incident}-{n}", incident, responder, 1, channels, payload, kind=kind)


@dataclass
class Seen:
    """What the test server received."""

    bodies: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    peers: list[Any] = field(default_factory=list)
    statuses: list[int] = field(default_factory=lambda: [200])  # replies in order; last repeats
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Server:
    url: Callable[[str], str]
    seen: Seen


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    seen = Seen()

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        seen.bodies.append(body)
        seen.headers.append(dict(request.headers))
        assert request.transport is not None
        seen.peers.append(request.transport.get_extra_info("peername"))
        status = seen.statuses[min(len(seen.bodies), len(seen.statuses)) - 1]
        return web.Response(status=status, text="ok")

    async def hang(request: web.Request) -> web.Response:
        await request.read()
        seen.arrived.set()
        await seen.release.wait()
        return web.Response(text="late")

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_post("/hang", hang)
    test_server = TestServer(app, host="127.0.0.1", port=0)
    await test_server.start_server()
    try:
        yield Server(lambda path: str(test_server.make_url(path)), seen)
    finally:
        seen.release.set()
        await test_server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@dataclass
class Recorder:
    """The dispatcher's callbacks, recording what they are told."""

    attempts: list[tuple[Delivery, Attempt]] = field(default_factory=list)
    failed: list[tuple[Delivery, str]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_attempt(self, d: Delivery, attempt: Attempt) -> None:
        self.attempts.append((d, attempt))
        self.changed.set()

    def on_failed(self, d: Delivery, reason: str) -> None:
        self.failed.append((d, reason))
        self.changed.set()

    async def until(self, predicate: Callable[[], bool], within: float = 3.0) -> None:
        """Wait until a callback has made `predicate` true."""
        async with asyncio.timeout(within):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    def of(self, incident: str) -> list[Attempt]:
        return [a for d, a in self.attempts if d.incident == incident]


def webhook(
    server: Server, session: aiohttp.ClientSession, secret: str | None = None
) -> WebhookChannel:
    return WebhookChannel(ChannelConfig("hook", "webhook", server.url("/hook"), secret), session)


def hanging(server: Server, session: aiohttp.ClientSession, timeout: float) -> WebhookChannel:
    config = ChannelConfig("slow", "webhook", server.url("/hang"), timeout=timeout)
    return WebhookChannel(config, session)


def dispatcher(rec: Recorder, *channels: Channel, delays: tuple[float, ...] = FAST) -> Dispatcher:
    return Dispatcher(
        {c.name: c for c in channels}, rec.on_attempt, rec.on_failed, retry_delays=delays
    )


# --- webhook ------------------------------------------------------------------------------


async def test_webhook_posts_exactly_the_payload(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """The body is the page JSON, sent as application/json, unsigned without a secret."""
    await webhook(server, session).send(delivery(), None)
    (body,) = server.seen.bodies
    assert json.loads(body) == PAYLOAD
    headers = server.seen.headers[0]
    assert headers["Content-Type"] == "application/json"
    assert SIGNATURE_HEADER not in headers


async def test_webhook_body_is_utf8_json(server: Server, session: aiohttp.ClientSession) -> None:
    """A booth's name and the page's message go out as UTF-8 JSON, not as \\u escapes
    (orjson, about 10 µs less on every page's first step), signed over those bytes."""
    payload = {**PAYLOAD, "booth_name": "Cabine Três", "message": "Chamada: já!"}
    page = Delivery("page-utf8", "01JDINCIDENT", "ana", 1, ("hook",), payload)
    await webhook(server, session, "s3cret").send(page, None)
    body = server.seen.bodies[0]
    assert "Cabine Três".encode() in body and b"\\u" not in body
    assert json.loads(body) == payload
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert server.seen.headers[0][SIGNATURE_HEADER] == f"sha256={expected}"


async def test_webhook_signature_is_hmac_of_raw_body(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """With a secret, the header carries HMAC-SHA256 of the exact bytes received."""
    await webhook(server, session, "s3cret").send(delivery(), None)
    body = server.seen.bodies[0]
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert server.seen.headers[0][SIGNATURE_HEADER] == f"sha256={expected}"


async def test_webhook_reuses_one_connection(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """Two pages in a row travel over the same kept-alive TCP connection."""
    channel = webhook(server, session)
    await channel.send(delivery(n=1), None)
    await channel.send(delivery(n=2), None)
    assert len(server.seen.peers) == 2
    assert server.seen.peers[0] == server.seen.peers[1]


async def test_webhook_non_2xx_is_a_delivery_error(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """A 503 (or a redirect) is a failed attempt named by its status."""
    server.seen.statuses = [503, 302, 204]
    channel = webhook(server, session)
    with pytest.raises(DeliveryError, match=r"^HTTP 503$"):
        await channel.send(delivery(), None)
    with pytest.raises(DeliveryError, match=r"^HTTP 302$"):
        await channel.send(delivery(), None)
    await channel.send(delivery(), None)


async def test_webhook_connection_refused(session: aiohttp.ClientSession) -> None:
    """Nobody listening is a failed attempt saying so."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = ChannelConfig("hook", "webhook", f"http://127.0.0.1:{port}/hook", timeout=2.0)
    with pytest.raises(DeliveryError, match=r"^connection refused$"):
        await WebhookChannel(config, session).send(delivery(), None)


async def test_webhook_timeout(server: Server, session: aiohttp.ClientSession) -> None:
    """A receiver slower than the channel timeout is a failed attempt."""
    with pytest.raises(DeliveryError, match=r"^timeout after 0\.2s$"):
        await hanging(server, session, 0.2).send(delivery("slow"), None)


def test_webhook_needs_a_url() -> None:
    """A webhook channel without a url is a configuration bug caught at start."""
    with pytest.raises(ValueError, match="needs a url"):
        WebhookChannel(ChannelConfig("hook", "webhook"), None)  # type: ignore[arg-type]  # refused first


# --- console and mqtt --------------------------------------------------------------------


async def test_console_writes_one_line() -> None:
    """The console channel writes one readable line, the ack link on a line of its own."""
    stream = io.StringIO()
    console = ConsoleChannel(ChannelConfig("console", "console"), stream)
    await console.send(delivery("console"), None)
    page = Delivery("p2", "A", "rui", 2, ("console",),
                    dict(PAYLOAD, message="Booth 1: call button pressed\nagain", urgent=True))
    await console.send(page, None)
    await console.send(Delivery("p3", "A", "rui", 0, ("console",),
                                {"message": "Ana is attending Booth 1"}, kind="notice"), None)
    assert stream.getvalue().splitlines() == [
        "[PAGE] Booth 1: call button pressed -> ana (HIGH, level 1)",
        "  ack: http://127.0.0.1:8080/ack/tok",
        "[PAGE] Booth 1: call button pressed again -> rui (HIGH, level 2, URGENT)",
        "  ack: http://127.0.0.1:8080/ack/tok",
        "[NOTICE] Ana is attending Booth 1 -> rui",
    ]


async def test_console_broken_stream_is_a_delivery_error() -> None:
    """Writing to a closed stream fails the attempt instead of crashing the task."""
    stream = io.StringIO()
    stream.close()
    console = ConsoleChannel(ChannelConfig("console", "console"), stream)
    with pytest.raises(DeliveryError, match="console write failed"):
        await console.send(delivery("console"), None)


Published = list[tuple[str, bytes]]


def recording_publish() -> tuple[Published, Callable[[str, bytes], Awaitable[None]]]:
    calls: Published = []

    async def publish(topic: str, body: bytes) -> None:
        calls.append((topic, body))

    return calls, publish


async def test_mqtt_default_topic_and_json_body() -> None:
    """Without a topic, pages go to boothwatch/<site>/pages/<responder> as JSON."""
    calls, publish = recording_publish()
    channel = MqttChannel(ChannelConfig("mqtt", "mqtt"), publish, "lisbon-1")
    await channel.send(delivery("mqtt", responder="rui"), None)
    ((topic, body),) = calls
    assert topic == "boothwatch/lisbon-1/pages/rui"
    assert json.loads(body) == dict(PAYLOAD, responder="rui")


async def test_mqtt_topic_placeholder() -> None:
    """{responder} in a configured topic is replaced; other text is left alone."""
    calls, publish = recording_publish()
    config = ChannelConfig("mqtt", "mqtt", topic="pagers/{responder}/in")
    await MqttChannel(config, publish, "lisbon-1").send(delivery("mqtt"), None)
    assert calls[0][0] == "pagers/ana/in"


async def test_mqtt_publish_failure_and_hang() -> None:
    """The caller's DeliveryError passes through; a publish that hangs times out."""

    async def not_connected(topic: str, body: bytes) -> None:
        raise DeliveryError("broker not connected")

    async def hangs(topic: str, body: bytes) -> None:
        await asyncio.Event().wait()

    with pytest.raises(DeliveryError, match=r"^broker not connected$"):
        await MqttChannel(ChannelConfig("m", "mqtt"), not_connected, "s").send(delivery("m"), None)
    config = ChannelConfig("m", "mqtt", timeout=0.05)
    with pytest.raises(DeliveryError, match=r"^timeout after 0\.05s$"):
        await MqttChannel(config, hangs, "s").send(delivery("m"), None)


async def test_build_channels(session: aiohttp.ClientSession) -> None:
    """One channel of the right kind per configured entry, keyed like the config."""
    _, publish = recording_publish()
    configs = {
        "hook": ChannelConfig("hook", "webhook", "http://127.0.0.1:1/x"),
        "mqtt": ChannelConfig("mqtt", "mqtt"),
        "console": ChannelConfig("console", "console"),
    }
    channels = build_channels(configs, session, publish, "lisbon-1", io.StringIO(),
                              gettext=SOURCE_TEXT)
    assert {k: (c.name, c.type) for k, c in channels.items()} == {
        "hook": ("hook", "webhook"),
        "mqtt": ("mqtt", "mqtt"),
        "console": ("console", "console"),
    }


# --- dispatcher ---------------------------------------------------------------------------


async def test_retries_until_success(server: Server, session: aiohttp.ClientSession) -> None:
    """Two 503s then 200: two failed attempts, success on the third, no on_failed."""
    server.seen.statuses = [503, 503, 200]
    rec = Recorder()
    d = dispatcher(rec, webhook(server, session))
    d.submit(delivery())
    await d.drain(3.0)
    assert [(a.number, a.ok, a.error, a.final) for _, a in rec.attempts] == [
        (1, False, "HTTP 503", False),
        (2, False, "HTTP 503", False),
        (3, True, None, True),
    ]
    assert all(a.latency >= 0 for _, a in rec.attempts)
    assert rec.failed == []
    assert d.pending == 0


async def test_on_failed_once_after_all_retries(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """An always-failing receiver gets len(retry_delays)+1 attempts, then one on_failed."""
    server.seen.statuses = [500, 500, 500, 502]
    rec = Recorder()
    d = dispatcher(rec, webhook(server, session))
    page = delivery()
    d.submit(page)
    await d.drain(3.0)
    assert [a.number for a in rec.of(page.incident)] == [1, 2, 3, 4]
    assert [a.final for a in rec.of(page.incident)] == [False, False, False, True]
    assert rec.failed == [(page, "HTTP 502")]
    assert len(server.seen.bodies) == 4


async def test_hanging_channel_does_not_delay_another(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """While one page hangs until its timeout, a page to a healthy endpoint goes through."""
    slow = hanging(server, session, 0.2)
    rec = Recorder()
    d = dispatcher(rec, slow, webhook(server, session), delays=(0.01,))
    d.submit(delivery("slow", incident="A"))
    await asyncio.wait_for(server.seen.arrived.wait(), 2.0)
    d.submit(delivery("hook", incident="B"))
    await rec.until(lambda: len(rec.of("B")) == 1)
    assert rec.of("B")[0].ok
    assert rec.of("A") == []  # still hanging when B was delivered
    await d.drain(3.0)
    assert [(a.ok, a.error) for a in rec.of("A")] == [(False, "timeout after 0.2s")] * 2
    assert [(p.incident, reason) for p, reason in rec.failed] == [("A", "timeout after 0.2s")]
    assert all(a.latency >= 0.2 for a in rec.of("A"))


async def test_cancel_stops_retries(server: Server, session: aiohttp.ClientSession) -> None:
    """cancel() during the retry wait ends that incident's pages without on_failed."""
    server.seen.statuses = [503]
    rec = Recorder()
    d = dispatcher(rec, webhook(server, session), delays=(0.3, 0.3, 0.3))
    d.submit(delivery(incident="A", responder="ana"))
    d.submit(delivery(incident="A", responder="rui"))
    d.submit(delivery(incident="B"))
    await rec.until(lambda: len(rec.attempts) == 3)
    with capture_logs() as logs:
        d.cancel("A")
    assert sorted(e["responder"] for e in logs if e["event"] == "page retries cancelled") == [
        "ana",
        "rui",
    ]
    await asyncio.sleep(0.05)
    assert d.pending == 1  # A's tasks ended without waiting out their retry delay
    await rec.until(lambda: len(rec.of("B")) == 2)  # B goes on retrying
    assert len(rec.of("A")) == 2
    d.cancel("B")
    await d.drain(1.0)
    assert rec.failed == []
    assert d.pending == 0


async def test_cancel_during_attempt_lets_it_finish(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """An attempt in progress when cancel() comes is reported (final), then nothing more."""
    slow = hanging(server, session, 0.2)
    rec = Recorder()
    d = dispatcher(rec, slow, delays=(0.01, 0.01))
    d.submit(delivery("slow"))
    await asyncio.wait_for(server.seen.arrived.wait(), 2.0)
    d.cancel("01JDINCIDENT")
    server.seen.release.set()
    await d.drain(2.0)
    assert [(a.number, a.ok, a.final) for _, a in rec.attempts] == [(1, True, True)]
    assert rec.failed == []


async def test_unknown_channel_fails_at_once() -> None:
    """A page for a channel that does not exist fails every round without waiting."""
    rec = Recorder()
    d = dispatcher(rec, delays=())
    page = delivery("nowhere")
    d.submit(page)
    assert rec.attempts == []  # submit itself never calls back
    await d.drain(1.0)
    assert rec.attempts == [(page, Attempt(1, "nowhere", False, "unknown channel", 0.0, True))]
    assert rec.failed == [(page, "unknown channel")]


async def test_failing_callbacks_do_not_kill_delivery() -> None:
    """Exceptions from on_attempt/on_failed are logged; retries and on_failed still happen."""
    calls: list[str] = []

    def on_attempt(d: Delivery, a: Attempt) -> None:
        calls.append(f"attempt {a.number}")
        raise RuntimeError("store is down")

    def on_failed(d: Delivery, reason: str) -> None:
        calls.append(f"failed {reason}")
        raise RuntimeError("core is down")

    async def not_connected(topic: str, body: bytes) -> None:
        raise DeliveryError("broker not connected")

    channel = MqttChannel(ChannelConfig("mqtt", "mqtt"), not_connected, "s")
    d = Dispatcher({"mqtt": channel}, on_attempt, on_failed, retry_delays=(0.01,))
    with capture_logs() as logs:
        d.submit(delivery("mqtt"))
        await d.drain(1.0)
    assert calls == ["attempt 1", "attempt 2", "failed broker not connected"]
    levels = {e["event"]: e["log_level"] for e in logs}
    assert levels["on_attempt callback failed"] == "error"
    assert levels["on_failed callback failed"] == "critical"
    assert all("payload" not in e and "message" not in e for e in logs)


async def test_channel_bug_counts_as_failed_attempt() -> None:
    """A channel raising something other than DeliveryError is retried and escalated."""

    class Broken:
        name = "broken"
        type = "console"
        reaches_a_person = True

        async def send(self, delivery: Delivery, address: str | None) -> str | None:
            raise KeyError("oops")

    rec = Recorder()
    d = dispatcher(rec, Broken(), delays=(0.01,))
    d.submit(delivery("broken"))
    await d.drain(1.0)
    assert [a.error for _, a in rec.attempts] == ["internal error: KeyError"] * 2
    assert rec.failed[0][1] == "internal error: KeyError"


async def test_close_cancels_everything(server: Server, session: aiohttp.ClientSession) -> None:
    """close() cancels pending retries and hanging attempts, logging each abandoned page."""
    slow = hanging(server, session, 5.0)
    rec = Recorder()
    d = dispatcher(rec, slow, delays=(5.0,))
    d.submit(delivery("slow"))
    await asyncio.wait_for(server.seen.arrived.wait(), 2.0)
    with capture_logs() as logs:
        await asyncio.wait_for(d.close(), 1.0)
    assert d.pending == 0
    assert [e["event"] for e in logs] == ["page abandoned at shutdown"]
    assert rec.failed == []


async def test_drain_returns_at_timeout(server: Server, session: aiohttp.ClientSession) -> None:
    """drain() gives up after its timeout and leaves the delivery running."""
    slow = hanging(server, session, 5.0)
    d = dispatcher(Recorder(), slow)
    d.submit(delivery("slow"))
    await asyncio.wait_for(d.drain(0.05), 1.0)
    assert d.pending == 1
    await d.close()


@pytest.mark.parametrize("delays", [(-1.0,), (float("nan"),)])
def test_dispatcher_refuses_bad_delays(delays: tuple[float, ...]) -> None:
    """Negative or NaN retry delays are a configuration bug."""
    with pytest.raises(ValueError):
        dispatcher(Recorder(), delays=delays)


async def test_failed_channel_falls_back_to_the_next_at_once(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """The first channel refuses; the second gets the page in the same round, no back-off."""
    refused = WebhookChannel(ChannelConfig("dead", "webhook", "http://127.0.0.1:1/x"), session)
    rec = Recorder()
    d = dispatcher(rec, refused, webhook(server, session), delays=(5.0,))
    page = delivery(("dead", "hook"))
    d.submit(page)
    await d.drain(2.0)  # a back-off of 5 s would make this time out
    assert [(a.number, a.channel, a.ok, a.final) for _, a in rec.attempts] == [
        (1, "dead", False, False),
        (2, "hook", True, True),
    ]
    assert rec.attempts[0][1].error == "connection refused"
    assert len(server.seen.bodies) == 1
    assert rec.failed == []


async def test_a_console_nobody_watches_prints_but_does_not_deliver(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """An unwatched console prints the page, reported as printed (not ok), and the round
    goes on to the next channel; with nothing after it every round prints, then on_failed.
    A watched console delivers."""
    stream = io.StringIO()
    screen = ConsoleChannel(ChannelConfig("screen", "console"), stream)
    rec = Recorder()
    d = dispatcher(rec, screen, webhook(server, session), delays=(0.01,))
    fell_back, alone = delivery(("screen", "hook"), incident="A"), delivery("screen", incident="B")
    d.submit(fell_back)
    d.submit(alone)
    await d.drain(2.0)
    assert [(a.channel, a.ok, a.printed, a.error) for a in rec.of("A")] == [
        ("screen", False, True, PRINTED_ONLY), ("hook", True, False, None)]
    assert [(a.ok, a.printed, a.final) for a in rec.of("B")] == [
        (False, True, False), (False, True, True)]
    assert rec.failed == [(alone, PRINTED_ONLY)]
    assert stream.getvalue().count("[PAGE]") == 3  # it did print, every time

    watched = ConsoleChannel(ChannelConfig("screen", "console", watched=True), io.StringIO())
    rec = Recorder()
    d = dispatcher(rec, watched)
    d.submit(delivery("screen"))
    await d.drain(1.0)
    assert [(a.ok, a.printed, a.final) for _, a in rec.attempts] == [(True, False, True)]
    assert rec.failed == []


async def test_every_channel_failing_backs_off_then_fails_once(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """Each round tries every channel in order; after the last round, one on_failed."""
    server.seen.statuses = [500]
    refused = WebhookChannel(ChannelConfig("dead", "webhook", "http://127.0.0.1:1/x"), session)
    rec = Recorder()
    d = dispatcher(rec, refused, webhook(server, session), delays=(0.01,))
    page = delivery(("dead", "hook"))
    d.submit(page)
    await d.drain(2.0)
    assert [(a.number, a.channel, a.final) for _, a in rec.attempts] == [
        (1, "dead", False), (2, "hook", False), (3, "dead", False), (4, "hook", True),
    ]
    assert rec.failed == [(page, "HTTP 500")]


async def test_cancel_stops_pages_but_not_notices(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """An acknowledgement cancels the incident's page retries; its notices keep trying."""
    server.seen.statuses = [503, 200]
    rec = Recorder()
    d = dispatcher(rec, webhook(server, session), delays=(0.2,))
    d.submit(delivery(incident="A", responder="ana"))
    d.submit(delivery(incident="A", responder="rui", kind="notice"))
    await rec.until(lambda: len(rec.attempts) == 2)
    d.cancel("A")
    await d.drain(2.0)
    notices = [a for p, a in rec.attempts if p.kind == "notice"]
    pages = [a for p, a in rec.attempts if p.kind == "page"]
    assert len(pages) == 1  # the page stopped after its first attempt
    assert notices[-1].ok
    assert rec.failed == []


async def test_receipt_and_address_reach_the_record() -> None:
    """The responder's address for the channel is passed in; the receipt comes back."""
    seen: list[str | None] = []

    class Receipted:
        name = "push"
        type = "console"
        reaches_a_person = True

        async def send(self, delivery: Delivery, address: str | None) -> str | None:
            seen.append(address)
            return "r-123"

    rec = Recorder()
    d = dispatcher(rec, Receipted())
    page = Delivery("p1", "A", "ana", 1, ("push",), dict(PAYLOAD), addresses={"push": "uKEY"})
    d.submit(page)
    await d.drain(1.0)
    assert seen == ["uKEY"]
    assert [(a.ok, a.receipt) for _, a in rec.attempts] == [(True, "r-123")]


def test_delivery_checks_itself() -> None:
    """No channels, or an unknown kind, is a bug where the delivery is made."""
    with pytest.raises(ValueError):
        Delivery("p", "A", "ana", 1, (), {})
    with pytest.raises(ValueError):
        Delivery("p", "A", "ana", 1, ("x",), {}, kind="shout")  # type: ignore[arg-type]  # the bug
