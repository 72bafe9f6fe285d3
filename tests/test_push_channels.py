"""ntfy, Pushover and Apprise channels against real local HTTP servers; Pushover receipts; config.

Each service's test server checks the exact request the service documents:
ntfy's JSON publish API (POST to the root URL), Pushover's messages and
receipts API (form fields, paths, token), Apprise's json:// notifier.
"""

from __future__ import annotations

import asyncio
import itertools
import tomllib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from alerts.channels.apprise import AppriseChannel
from alerts.channels.ntfy import NtfyChannel
from alerts.channels.pushover import PushoverChannel, is_emergency, pushover_timing
from alerts.delivery import Attempt, Delivery, DeliveryError, DeliveryKind, Dispatcher
from alerts.factory import build_channels
from alerts.receipts import ReceiptWatcher
from alerts.text import SOURCE_TEXT, notification_text
from monitor.config import ConfigError, parse_config
from monitor.core.settings import ChannelConfig, Policy, Step
from monitor.summary import summary
from tests.harness.receivers import LocalService, Seen, local_service
from tests.harness.site import example_site

ACK = "http://127.0.0.1:8080/ack/tok.en"
PAGE: dict[str, Any] = {
    "kind": "page",
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
    "ack_url": ACK,
    "urgent": False,
}
NOTICE: dict[str, Any] = {
    "kind": "notice", "incident": "01JDINCIDENT", "site": "lisbon-1", "booth": "b3",
    "booth_name": "Booth 3", "responder": "ana", "priority": "high",
    "message": "Rui is attending Booth 3",
}  # fmt: skip
TEST: dict[str, Any] = {
    "kind": "test", "site": "lisbon-1", "responder": "ana",
    "message": "TEST PAGE from boothwatch: no action needed",
}  # fmt: skip
USER_KEY = "uQiRzpo4DXghDmr9QzzfQu27cmVRsG"
APP_TOKEN = "azGDORePK8gMaC0QOYAMyEEuzJnyUi"
_ids = itertools.count(1)


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait until `condition()` holds (checked every few ms), failing after 5 s."""
    async with asyncio.timeout(5):
        # the watcher exposes no event for its state: this only waits, it times nothing
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


def delivery(
    channel: str = "ch", kind: DeliveryKind = "page", incident: str = "01JDINCIDENT",
    **payload: Any,
) -> Delivery:
    base = {"page": PAGE, "notice": NOTICE, "test": TEST}[kind]
    return Delivery(f"page-{next(_ids)}", incident, "ana", 1, (channel,),
                    {**base, **payload}, kind=kind)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def ntfy(service: LocalService, session: aiohttp.ClientSession, **kw: Any) -> NtfyChannel:
    return NtfyChannel(ChannelConfig("ch", "ntfy", url=service.url + "/", **kw), session)


# --- ntfy -----------------------------------------------------------------------------------


async def test_ntfy_page_is_the_documented_json_publish(session: aiohttp.ClientSession) -> None:
    """A high page: POST to the root URL, bearer token, priority 5, click and an ack action."""
    def reply(seen: Seen) -> web.StreamResponse:
        return web.json_response({"id": "hwQ2YpKdmg", "time": 1700000000, "event": "message",
                                  "topic": "ana-x7"})

    async with local_service(reply) as service:
        channel = ntfy(service, session, token="tk_secret")
        receipt = await channel.send(delivery(), "ana-x7")
        [seen] = service.requests
    assert receipt == "hwQ2YpKdmg"
    assert (seen.method, seen.path, seen.query) == ("POST", "/", {})
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Authorization"] == "Bearer tk_secret"
    assert seen.json() == {
        "topic": "ana-x7",
        "title": "HIGH · Booth 1",
        "message": "Booth 1: call button pressed",
        "priority": 5,
        "tags": ["rotating_light"],
        "click": ACK,
        "actions": [{
            "action": "http",
            "label": "Acknowledge",
            "url": ACK + "?via=ntfy",
            "method": "POST",
            "clear": True,
        }],
    }


@pytest.mark.parametrize(
    ("kind", "payload", "priority", "tags", "actions"),
    [
        ("page", {"priority": "medium"}, 4, ["warning"], True),
        ("page", {"priority": "low"}, 3, ["bell"], True),
        ("page", {"urgent": True}, 5, ["rotating_light", "urgent"], True),
        ("notice", {}, 3, ["information_source"], False),
        ("test", {}, 3, ["test_tube"], False),
    ],
)
def test_ntfy_priority_tags_and_actions(
    kind: DeliveryKind, payload: dict[str, Any], priority: int, tags: list[str], actions: bool,
) -> None:
    """Pages map the incident priority; notices and tests are 3 with no action or click."""
    # no session: nothing here reaches the network
    channel = NtfyChannel(ChannelConfig("ch", "ntfy", url="http://127.0.0.1:1"), None)  # type: ignore[arg-type]
    message = channel.message(delivery(kind=kind, **payload), "ana-x7")
    assert (message["priority"], message["tags"]) == (priority, tags)
    assert ("actions" in message, "click" in message) == (actions, actions)
    if payload.get("urgent"):
        assert message["title"] == "HIGH · Booth 1 · URGENT (repeated calls)"


async def test_ntfy_topic_template_and_no_token(session: aiohttp.ClientSession) -> None:
    """Without an address the topic comes from the template; no token, no Authorization."""
    async with local_service() as service:
        channel = ntfy(service, session, topic="bw-{responder}")
        await channel.send(delivery(kind="test"), None)
        [seen] = service.requests
    assert seen.json()["topic"] == "bw-ana"
    assert "Authorization" not in seen.headers
    with pytest.raises(DeliveryError, match=r"^ntfy: no topic"):
        await ntfy(service, session).send(delivery(), None)
    with pytest.raises(DeliveryError, match=r"^ntfy: not a valid topic"):
        await ntfy(service, session).send(delivery(), "ana/x")


async def test_ntfy_error_replies(session: aiohttp.ClientSession) -> None:
    """ntfy's JSON error text, a plain 500, a hang and a closed port become short reasons."""
    replies = iter([
        web.json_response({"code": 40301, "http": 403, "error": "forbidden"}, status=403),
        web.json_response({"error": "topic ana-x7 is reserved"}, status=400),
        web.Response(status=500, text="<html>oops</html>"),
    ])
    async with local_service(lambda seen: next(replies)) as service:
        channel = ntfy(service, session)
        for expected in ("HTTP 403: forbidden", "HTTP 400: topic <address> is reserved",
                         "HTTP 500"):
            with pytest.raises(DeliveryError) as info:
                await channel.send(delivery(), "ana-x7")
            assert str(info.value) == expected
        service.reply = lambda seen: service.hang()
        with pytest.raises(DeliveryError, match=r"^timeout after 0\.1s$"):
            await ntfy(service, session, timeout=0.1).send(delivery(), "ana-x7")
        port = service.port
    closed = NtfyChannel(ChannelConfig("ch", "ntfy", url=f"http://127.0.0.1:{port}/"), session)
    with pytest.raises(DeliveryError, match=r"^connection refused$"):
        await closed.send(delivery(), "ana-x7")


# --- pushover -------------------------------------------------------------------------------


def pushover_config(service: LocalService, **kw: Any) -> ChannelConfig:
    return ChannelConfig("po", "pushover", url=service.url, token=APP_TOKEN, **kw)


def accepted(seen: Seen) -> web.StreamResponse:
    if seen.form().get("priority") == "2":
        return web.json_response({"status": 1, "request": "req-1",
                                  "receipt": "rLqVuqTRh62UzxtmqiaLzQmVcPgiCy"})
    return web.json_response({"status": 1, "request": "647d2300-702c-4b38-8b2f-d56326ae460b"})


HIGH = Policy(steps=(Step(0.0, ("role:nurse",)),), repeat=45.0)


async def test_pushover_emergency_page(session: aiohttp.ClientSession) -> None:
    """A high page: the documented form, emergency with retry from the policy, receipt watched."""
    async with local_service(accepted) as service:
        cfg = pushover_config(service)
        watcher = ReceiptWatcher(session, {"po": cfg}, lambda *a: None)
        channel = PushoverChannel(cfg, session, HIGH, watcher)
        with capture_logs() as logs:
            receipt = await channel.send(delivery("po"), USER_KEY)
        [seen] = service.requests
    assert receipt == "rLqVuqTRh62UzxtmqiaLzQmVcPgiCy"
    assert (seen.method, seen.path) == ("POST", "/1/messages.json")
    assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert seen.form() == {
        "token": APP_TOKEN,
        "user": USER_KEY,
        "title": "HIGH · Booth 1",
        "message": "Booth 1: call button pressed",
        "priority": "2",
        "url": ACK,
        "url_title": "Acknowledge",
        "retry": "45",
        "expire": "10800",
    }
    assert watcher.watching == {receipt}
    assert USER_KEY not in repr(logs)


@pytest.mark.parametrize(
    ("kind", "payload", "priority", "has_url"),
    [
        ("page", {"priority": "medium"}, "1", True),
        ("page", {"priority": "low"}, "0", True),
        ("notice", {}, "-1", False),
        ("test", {}, "0", False),
    ],
)
async def test_pushover_other_priorities(
    session: aiohttp.ClientSession, kind: DeliveryKind, payload: dict[str, Any],
    priority: str, has_url: bool,
) -> None:
    """Below high: no emergency, no retry/expire, the request id back; notices are quiet."""
    async with local_service(accepted) as service:
        channel = PushoverChannel(pushover_config(service), session, HIGH)
        receipt = await channel.send(delivery("po", kind, **payload), USER_KEY)
        form = service.requests[0].form()
    assert receipt == "647d2300-702c-4b38-8b2f-d56326ae460b"
    assert form["priority"] == priority
    assert "retry" not in form and "expire" not in form
    assert ("url" in form) == has_url


async def test_pushover_errors(session: aiohttp.ClientSession) -> None:
    """Pushover's `errors` are the reason; other failures are short; the user key never shows."""
    replies = iter([
        web.json_response({"user": "invalid", "errors": ["user identifier is invalid"],
                           "status": 0, "request": "r"}, status=400),
        web.json_response({"status": 0, "errors": [f"user {USER_KEY} is disabled"]}, status=400),
        web.Response(status=500, text="down"),
        web.Response(status=429, text="slow down"),
    ])
    async with local_service(lambda seen: next(replies)) as service:
        channel = PushoverChannel(pushover_config(service), session, HIGH)
        for expected in ("pushover: user identifier is invalid",
                         "pushover: user <address> is disabled", "HTTP 500", "HTTP 429"):
            with pytest.raises(DeliveryError) as info:
                await channel.send(delivery("po"), USER_KEY)
            assert str(info.value) == expected
        with pytest.raises(DeliveryError, match=r"^pushover: no user key"):
            await channel.send(delivery("po"), None)
        service.reply = lambda seen: service.hang()
        slow = PushoverChannel(pushover_config(service, timeout=0.1), session, HIGH)
        with pytest.raises(DeliveryError, match=r"^timeout after 0\.1s$"):
            await slow.send(delivery("po"), USER_KEY)


def test_pushover_timing_follows_the_high_policy() -> None:
    """retry = high repeat within Pushover's range; expire = 3 h; the channel may override."""
    cfg = ChannelConfig("po", "pushover", token="t")
    assert pushover_timing(cfg, HIGH) == (45.0, 10800.0)
    assert pushover_timing(cfg, replace(HIGH, repeat=10.0)) == (30.0, 10800.0)
    assert pushover_timing(cfg, replace(HIGH, repeat=None)) == (60.0, 10800.0)
    assert pushover_timing(cfg, None) == (60.0, 10800.0)
    assert pushover_timing(replace(cfg, retry=120.0, expire=3600.0), HIGH) == (120.0, 3600.0)


def test_is_emergency() -> None:
    assert is_emergency(delivery())
    assert not is_emergency(delivery(priority="medium"))
    assert not is_emergency(delivery(kind="notice"))


# --- pushover receipts ----------------------------------------------------------------------

RECEIPT_A, RECEIPT_B = "A" * 30, "B" * 30


def receipt_path(receipt: str) -> str:
    return f"/1/receipts/{receipt}.json"


def cancel_path(receipt: str) -> str:
    return f"/1/receipts/{receipt}/cancel.json"


def receipt_reply(**fields: Any) -> web.StreamResponse:
    answer = {"status": 1, "acknowledged": 0, "acknowledged_at": 0, "last_delivered_at": 0,
              "expired": 0, "expires_at": 1360019290, "called_back": 0, "request": "r"}
    return web.json_response({**answer, **fields})


@pytest.fixture
async def watched(
    session: aiohttp.ClientSession,
) -> AsyncIterator[tuple[LocalService, ReceiptWatcher, list[tuple[Any, ...]]]]:
    """A Pushover stand-in and a running watcher polling it every 10 ms; calls are recorded."""
    calls: list[tuple[Any, ...]] = []
    async with local_service(lambda seen: receipt_reply()) as service:
        watcher = ReceiptWatcher(
            session, {"po": pushover_config(service)},
            on_acknowledged=lambda *a: calls.append(("ack", *a)),
            on_delivered=lambda *a: calls.append(("delivered", *a)),
            interval=0.01,
        )
        task = asyncio.create_task(watcher.run())
        try:
            yield service, watcher, calls
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


async def test_receipt_acknowledged_once(
    watched: tuple[LocalService, ReceiptWatcher, list[tuple[Any, ...]]],
) -> None:
    """Delivered, then acknowledged: each callback once; the receipt is no longer polled."""
    service, watcher, calls = watched
    polls = itertools.count(1)

    def reply(seen: Seen) -> web.StreamResponse:
        if seen.path != receipt_path(RECEIPT_A):
            return receipt_reply()
        n = next(polls)
        return receipt_reply(last_delivered_at=1360001238 if n >= 2 else 0,
                             acknowledged=1 if n >= 4 else 0,
                             acknowledged_at=1360019238 if n >= 4 else 0)

    service.reply = reply
    watcher.watch(RECEIPT_A, "inc-1", "ana", "po")
    watcher.watch(RECEIPT_B, "inc-2", "rui", "po")
    await service.wait_for("GET", receipt_path(RECEIPT_A), 4)
    # B keeps being polled after A's ack: the loop went on without polling A again
    seen_b = len(service.matching("GET", receipt_path(RECEIPT_B)))
    await service.wait_for("GET", receipt_path(RECEIPT_B), seen_b + 3)
    assert len(service.matching("GET", receipt_path(RECEIPT_A))) == 4
    assert calls == [("delivered", "inc-1", "ana", RECEIPT_A, 1360001238.0),
                     ("ack", "inc-1", "ana", RECEIPT_A)]
    assert watcher.watching == {RECEIPT_B}
    first = service.matching("GET", receipt_path(RECEIPT_A))[0]
    assert first.query == {"token": APP_TOKEN} and first.body == b""


async def test_cancel_posts_cancel_and_stops_polling(
    watched: tuple[LocalService, ReceiptWatcher, list[tuple[Any, ...]]],
) -> None:
    """cancel(incident) POSTs cancel.json with the token for its receipts only, then stops."""
    service, watcher, calls = watched
    watcher.watch(RECEIPT_A, "inc-1", "ana", "po")
    watcher.watch(RECEIPT_B, "inc-2", "rui", "po")
    await service.wait_for("GET", receipt_path(RECEIPT_A))
    watcher.cancel("inc-1")
    assert watcher.watching == {RECEIPT_B}
    [cancel] = await service.wait_for("POST", cancel_path(RECEIPT_A))
    assert cancel.form() == {"token": APP_TOKEN}
    polls_of_a = len(service.matching("GET", receipt_path(RECEIPT_A)))
    seen_b = len(service.matching("GET", receipt_path(RECEIPT_B)))
    await service.wait_for("GET", receipt_path(RECEIPT_B), seen_b + 3)
    assert len(service.matching("GET", receipt_path(RECEIPT_A))) == polls_of_a
    assert service.matching("POST", cancel_path(RECEIPT_B)) == []
    assert watcher.cancelling == frozenset()
    assert calls == []


async def test_receipt_errors_do_not_stop_the_watcher(
    watched: tuple[LocalService, ReceiptWatcher, list[tuple[Any, ...]]],
) -> None:
    """5xx, garbage, a hang, a failing callback and a refused cancel: the loop goes on."""
    service, watcher, calls = watched
    polls = itertools.count(1)

    def reply(seen: Seen) -> web.StreamResponse:
        if seen.path == receipt_path("gone" * 5):
            return web.json_response({"receipt": "not found", "status": 0,
                                      "errors": ["receipt not found"]}, status=404)
        if seen.path == cancel_path(RECEIPT_B):
            n = len(service.matching("POST", cancel_path(RECEIPT_B)))
            return web.Response(status=503) if n < 3 else receipt_reply()
        n = next(polls)
        if n == 1:
            return web.Response(status=500, text="down")
        if n == 2:
            return web.Response(text="<html>not json</html>")
        return receipt_reply(acknowledged=1)

    def ack_fails(*args: Any) -> None:
        calls.append(("ack", *args))
        raise RuntimeError("runtime bug")

    service.reply = reply
    watcher._on_acknowledged = ack_fails  # the runtime's callback, failing
    with capture_logs() as logs:
        watcher.watch("gone" * 5, "inc-3", "ana", "po")
        watcher.watch(RECEIPT_A, "inc-1", "ana", "po")
        await service.wait_for("GET", receipt_path(RECEIPT_A), 3)
        watcher.watch(RECEIPT_B, "inc-2", "rui", "po")
        watcher.cancel("inc-2")  # cancel refused twice with 503, then accepted
        await service.wait_for("POST", cancel_path(RECEIPT_B), 3)
        await eventually(lambda: not watcher.watching and not watcher.cancelling)
    assert calls == [("ack", "inc-1", "ana", RECEIPT_A)]
    events = [entry["event"] for entry in logs]
    assert "pushover receipt refused, no longer watched" in events
    assert events.count("pushover receipt request failed") >= 2
    assert "receipt callback failed" in events
    assert "pushover receipt cancelled" in events


async def test_receipt_poll_timeout_is_retried(session: aiohttp.ClientSession) -> None:
    """A poll that hangs times out and the receipt is polled again; expired ones are dropped."""
    polls = itertools.count(1)

    async def reply(seen: Seen) -> web.StreamResponse:
        if next(polls) == 1:
            return await service.hang()
        return receipt_reply(expired=1)

    async with local_service(reply) as service:
        cfg = pushover_config(service, timeout=0.05)
        watcher = ReceiptWatcher(session, {"po": cfg}, lambda *a: None, interval=0.01)
        watcher.watch(RECEIPT_A, "inc-1", "ana", "po")
        task = asyncio.create_task(watcher.run())
        try:
            await service.wait_for("GET", receipt_path(RECEIPT_A), 2)
            await eventually(lambda: not watcher.watching)
        finally:
            task.cancel()


def test_page_in_flight_during_cancel_is_cancelled() -> None:
    """A receipt from a send that began before cancel() is cancelled; a later one is watched."""
    now = [100.0]
    watcher = ReceiptWatcher(  # no session: nothing here polls
        None, {"po": ChannelConfig("po", "pushover", url="http://x", token="t")},  # type: ignore[arg-type]
        lambda *a: None, clock=lambda: now[0],
    )
    watcher.cancel("inc-1")
    watcher.watch(RECEIPT_A, "inc-1", "ana", "po", sent_at=99.0)
    assert (watcher.watching, watcher.cancelling) == (frozenset(), frozenset({RECEIPT_A}))
    now[0] = 130.0  # the incident re-opened and paged again
    watcher.watch(RECEIPT_B, "inc-1", "ana", "po", sent_at=120.0)
    watcher.watch(RECEIPT_B, "inc-1", "ana", "po", sent_at=120.0)  # twice: no change
    assert watcher.watching == {RECEIPT_B}
    watcher.watch("C" * 30, "inc-2", "ana", "not-pushover")  # logged and ignored
    assert watcher.watching == {RECEIPT_B}


def test_watcher_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval"):
        # no session: it refuses before it could poll
        ReceiptWatcher(None, {}, lambda *a: None, interval=0)  # type: ignore[arg-type]


# --- apprise --------------------------------------------------------------------------------


def apprise_channel(url: str, timeout: float = 5.0) -> AppriseChannel:
    return AppriseChannel(ChannelConfig("sms", "apprise", url=url, timeout=timeout))


async def test_apprise_json_notifier_request() -> None:
    """Apprise's json:// notifier POSTs its documented JSON: version, title, message, type."""
    async with local_service(lambda seen: web.Response(text="ok")) as service:
        channel = apprise_channel(f"json://127.0.0.1:{service.port}/notify")
        assert await channel.send(delivery("sms"), None) is None
        await channel.send(delivery("sms", priority="medium"), None)
        await channel.send(delivery("sms", "notice"), None)
        first, medium, notice = service.requests
    assert (first.method, first.path) == ("POST", "/notify")
    assert first.headers["Content-Type"] == "application/json"
    assert first.json() == {
        "version": "1.0",
        "title": "HIGH · Booth 1",
        "message": f"Booth 1: call button pressed\nAcknowledge: {ACK}?via=apprise",
        "attachments": [],
        "type": "failure",
    }
    assert medium.json()["type"] == "warning"
    assert notice.json() == {"version": "1.0", "title": "Booth 3",
                             "message": "Rui is attending Booth 3", "attachments": [],
                             "type": "info"}


async def test_apprise_address_in_url() -> None:
    """{address} in the URL is the responder's address; without one the attempt fails."""
    async with local_service(lambda seen: web.Response(text="ok")) as service:
        channel = apprise_channel(f"json://127.0.0.1:{service.port}/to/{{address}}")
        await channel.send(delivery("sms", "test"), "+351911111111")
        with pytest.raises(DeliveryError, match=r"^apprise: no address"):
            await channel.send(delivery("sms"), None)
        [seen] = service.requests
    assert seen.path == "/to/+351911111111"
    assert seen.json()["title"] == "boothwatch TEST"


async def test_apprise_failures() -> None:
    """A refusal is an `apprise:` reason without the address; a hang is a timeout."""
    async with local_service(lambda seen: web.Response(status=500)) as service:
        channel = apprise_channel(f"json://127.0.0.1:{service.port}/to/{{address}}")
        with pytest.raises(DeliveryError) as info:
            await channel.send(delivery("sms"), "+351911111111")
        assert str(info.value).startswith("apprise: ")
        assert "+351911111111" not in str(info.value)
        service.reply = lambda seen: service.hang()
        slow = apprise_channel(f"json://127.0.0.1:{service.port}/x", timeout=0.2)
        with pytest.raises(DeliveryError, match=r"^timeout after 0\.2s$"):
            await slow.send(delivery("sms"), None)
    with pytest.raises(DeliveryError, match=r"^apprise: the URL is not usable"):
        await apprise_channel("json://").send(delivery("sms"), None)


# --- through the dispatcher -----------------------------------------------------------------


async def test_dispatcher_falls_back_from_ntfy_to_pushover(
    session: aiohttp.ClientSession,
) -> None:
    """ntfy refuses, Pushover takes it: two attempts recorded, the receipt on the second."""
    def reply(seen: Seen) -> web.StreamResponse:
        if seen.path == "/ntfy/":
            return web.json_response({"error": "unauthorized"}, status=401)
        return accepted(seen)

    attempts: list[Attempt] = []
    async with local_service(reply) as service:
        configs = {
            "phone": ChannelConfig("phone", "ntfy", url=service.url + "/ntfy/"),
            "po": pushover_config(service),
        }

        async def publish(topic: str, body: bytes) -> None:
            raise AssertionError("no mqtt channel here")

        channels = build_channels(configs, session, publish, "lisbon-1", gettext=SOURCE_TEXT,
                                  policies={"high": HIGH})
        assert {name: c.type for name, c in channels.items()} == {"phone": "ntfy",
                                                                  "po": "pushover"}
        dispatcher = Dispatcher(channels, lambda d, a: attempts.append(a),
                                lambda d, r: None, retry_delays=())
        page = Delivery("p1", "inc", "ana", 1, ("phone", "po"), dict(PAGE),
                        addresses={"phone": "ana-x7", "po": USER_KEY})
        dispatcher.submit(page)
        await dispatcher.drain(5)
    assert [(a.channel, a.ok, a.error, a.receipt) for a in attempts] == [
        ("phone", False, "HTTP 401: unauthorized", None),
        ("po", True, None, "rLqVuqTRh62UzxtmqiaLzQmVcPgiCy"),
    ]
    assert service.requests[1].form()["retry"] == "45"


def test_notification_text() -> None:
    assert notification_text(delivery(priority="low"), SOURCE_TEXT) == (
        "LOW · Booth 1", "Booth 1: call button pressed")
    assert notification_text(delivery(kind="test"), SOURCE_TEXT)[0] == "boothwatch TEST"


# --- config ---------------------------------------------------------------------------------

PUSH_CHANNELS = """
[channels.phone]
type = "ntfy"
url = "https://ntfy.example.org"
token_env = "NTFY_TOKEN"

[channels.po]
type = "pushover"
token_env = "PUSHOVER_TOKEN"

[channels.sms]
type = "apprise"
url_env = "SMS_URL"

[channels.team]
type = "ntfy"
url = "http://10.0.0.5:8090/"
topic = "boothwatch-{responder}"
"""
ENV = {
    "NTFY_TOKEN": "tk_secret1",
    "PUSHOVER_TOKEN": APP_TOKEN,
    "SMS_URL": "twilio://ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
               "@+15551234567/{address}",
}


def push_data(channels: str = PUSH_CHANNELS, ana: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    """The interface's site with ``channels`` added; Ana on them with her addresses unless
    told otherwise, Rui on "team" if there is one."""
    site = example_site()
    site.channels.update(tomllib.loads(channels)["channels"])
    site.responder("ana").update(ana if ana is not None else {
        "channels": ["pager", "phone", "po", "sms"],
        "address": {"phone": "ana-x7", "po": USER_KEY, "sms": "+351911111111"}})
    site.responder("rui")["channels"] = ["team" if "team" in site.channels else "pager",
                                         "screen"]
    return site.document()


def problems(data: dict[str, Any], env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, env)
    return info.value.problems


def test_push_channels_parse_and_summary() -> None:
    """The three types parse with their secrets from the environment; summary hides them."""
    config = parse_config(push_data(), ENV)
    ch = config.channels
    assert ch["phone"] == ChannelConfig("phone", "ntfy", url="https://ntfy.example.org",
                                        token="tk_secret1")
    assert ch["team"].topic == "boothwatch-{responder}" and ch["team"].token is None
    assert ch["po"] == ChannelConfig("po", "pushover", url="https://api.pushover.net",
                                     token=APP_TOKEN)
    assert ch["sms"].url == ENV["SMS_URL"]
    assert [c.needs_address for c in ch.values()] == [False, False, True, True, True, False]
    text = summary(config)
    assert "phone: ntfy https://ntfy.example.org (topic = responder's address, access token" \
        in text
    assert ("po: pushover https://api.pushover.net (app token set, high: emergency, retry 60s, "
            "expire 3h, receipts polled every 5s, timeout 5s)") in text
    assert "sms: apprise twilio://... (address from each responder, timeout 5s)" in text
    for secret in (*ENV.values(), "ana-x7", USER_KEY, "bbbbbbbb", "boothwatch-{responder}"):
        assert secret not in text, secret


def test_push_channel_problems_by_key_path() -> None:
    """Every mistake in the new channel keys is reported, each with its key path."""
    channels = """
[channels.phone]
type = "ntfy"
url = "ftp://ntfy.example.org"
topic = "pages/{responder}"
token = "tk_in_the_file"

[channels.po]
type = "pushover"
retry = "10s"
expire = "4h"
poll_interval = "1s"
url = "api.pushover.net"

[channels.po2]
type = "pushover"
token_env = "UNSET"
retry = "5m"
expire = "2m"

[channels.sms]
type = "apprise"
url = "json://127.0.0.1/x"
url_env = "SMS_URL"

[channels.sms2]
type = "apprise"
url = "nosuchservice://x"

[channels.sms3]
type = "apprise"
url = "mailtos://nurse:hunter2@example.org"

[channels.sms4]
type = "apprise"

[channels.sms5]
type = "apprise"
url = "tgram://"
"""
    found = problems(push_data(channels, {"channels": ["pager"]}), ENV)
    assert [p.split(": ")[0] for p in found] == [
        "channels.phone.token",
        "channels.phone.url",
        "channels.phone.topic",
        "channels.po.url",
        "channels.po.token_env",
        "channels.po.retry",
        "channels.po.expire",
        "channels.po.poll_interval",
        "channels.po2.token_env",
        "channels.po2.expire",
        "channels.sms.url_env",
        "channels.sms2.url",
        "channels.sms3.url",
        "channels.sms4.url",
        "channels.sms5.url",
    ]
    text = "\n".join(found)
    for word in ("tk_in_the_file", "hunter2"):
        assert word not in text
    assert "environment variable UNSET is not set" in text
    assert "Apprise does not know the scheme \"nosuchservice\"" in text


def test_responder_address_required_where_the_channel_needs_one() -> None:
    """Pushover, ntfy without a topic template and an {address} Apprise URL need an address."""
    found = problems(push_data(ana={"channels": ["pager", "phone", "po", "sms"]}), ENV)
    assert [p.split(": ")[0] for p in found] == [
        "responders[0].address.phone",
        "responders[0].address.po",
        "responders[0].address.sms",
    ]
    # rui is on "team", whose topic template needs no address


def test_push_channel_env_var_missing() -> None:
    """A token or URL variable that is not set is a problem of that channel, not a crash."""
    found = problems(push_data(), {})
    assert [p.split(": ")[0] for p in found] == [
        "channels.phone.token_env", "channels.po.token_env", "channels.sms.url_env",
    ]
