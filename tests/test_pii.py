"""No personal data or secret in the logs or metrics of the real service (issue 6).

A real `boothwatch run` process (JSON logs on stderr, anything on stdout), a
real Mosquitto, real HTTP stand-ins for the webhook receiver, ntfy, Pushover and
an Apprise JSON endpoint. The scenario walks through what staff do on a shift:
calls, stillness, escalation, acknowledgements by link, MQTT and API, duty
check-in and out, maintenance with who and why, outcomes with a note, channels
that fail (one echoing back what it was sent), a replayed ack link, a restart
and a test page. Then every line of output, and /metrics, is searched for the
names, addresses, tokens, keys, free text and ack links of the scenario; the
failure names each one and where it was found.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import aiohttp
import pytest
from aiohttp import web

from alerts.channels.ntfy import NtfyChannel
from alerts.channels.pushover import PushoverChannel
from alerts.delivery import Delivery, DeliveryError
from monitor.core.settings import ChannelConfig
from monitor.logs import PRIVACY, Privacy, protect
from tests.harness.broker import Mosquitto, Publish, free_port
from tests.harness.process import ROOT, ServiceProcess
from tests.harness.receivers import LocalService, Seen, local_service
from tests.harness.service import event, events_topic, eventually
from tests.harness.site import SITE, Site, booths, escalation, responder, webhook

pytestmark = pytest.mark.integration


# what must never reach a log line or a metric, by what it is
SECRETS = {
    "ana's name": "Ana Sousa",
    "rui's name": "Rui Almeida",
    "ana's phone number": "+351912345678",
    "ana's ntfy topic": "ana-7f3kq9x",
    "rui's Pushover user key": "uQiRzpo4DXghDmr9QzzfQu27cmVRsG",
    "the ntfy access token": "tk_ntfysecret123",
    "the Pushover application token": "azGDORePK8gMaC0QOYAMyEEuzJnyUi",
    "the Apprise URL's password": "smspass99x",
    "the webhook HMAC secret": "hook-hmac-secret-77",
    "the API bearer token": "api-bearer-token-42",
    "BOOTHWATCH_SECRET": "links-signing-secret-31",
    "the station board password": "station-pass-8812",
    "the maintenance reason": "spill cleaned by Joana",
    "the maintenance 'by'": "joana.lima@example.org",
    "the MQTT duty 'by'": "Carla Nunes",
    "an outcome note": "Miguel Ferreira",
    "an ack-link outcome note": "taken to Hospital S. Jose",
}
ENV = {
    "BOOTHWATCH_SECRET": SECRETS["BOOTHWATCH_SECRET"],
    "BOOTHWATCH_API_TOKEN": SECRETS["the API bearer token"],
    "BOOTHWATCH_BOARD_PASSWORD": SECRETS["the station board password"],
    "BOOTHWATCH_NTFY_TOKEN": SECRETS["the ntfy access token"],
    "BOOTHWATCH_PUSHOVER_TOKEN": SECRETS["the Pushover application token"],
    "BOOTHWATCH_WEBHOOK_SECRET": SECRETS["the webhook HMAC secret"],
}
AUTH = {"Authorization": f"Bearer {SECRETS['the API bearer token']}"}


def site_config(path: Path, *, mqtt_port: int, http_port: int, hook: str, push: str) -> Path:
    """A site whose responders have real-looking names, addresses and channel secrets."""
    site = Site(
        mqtt_port=mqtt_port, client_id="boothwatch-pii", store=path.parent / "boothwatch.db",
        http_port=http_port, booths=booths(3),
        defaults={"long_session": "20m", "stillness": "1s", "device_timeout": "15m"},
        channels={
            "pager": webhook(hook, secret=None, secret_env="BOOTHWATCH_WEBHOOK_SECRET"),
            "sms": {"type": "apprise", "url_env": "BOOTHWATCH_SMS_URL", "timeout": "2s"},
            "phone": {"type": "ntfy", "url": push, "token_env": "BOOTHWATCH_NTFY_TOKEN",
                      "timeout": "2s"},
            "po": {"type": "pushover", "url": push, "token_env": "BOOTHWATCH_PUSHOVER_TOKEN",
                   "timeout": "2s"},
        },
        responders=[
            responder("ana", ["nurse"], ["sms", "phone"], name=SECRETS["ana's name"],
                      address={"sms": SECRETS["ana's phone number"],
                               "phone": SECRETS["ana's ntfy topic"]}),
            responder("rui", ["coordinator"], ["po", "pager"], name=SECRETS["rui's name"],
                      address={"po": SECRETS["rui's Pushover user key"]}),
        ],
        escalation=escalation(step2="1s", repeat="1h", ack_timeout="1h"),
    )
    return site.write(path)


class Services:
    """Replies of the stand-ins: the webhook and Pushover accept; Apprise's endpoint (ana's
    SMS) always fails; ntfy refuses the first two messages, echoing what it was sent (the
    topic and token, then the ack link) as a badly behaved proxy might."""

    def __init__(self) -> None:
        self.ntfy_refusals = 2
        self.ntfy: list[dict[str, Any]] = []  # the messages ntfy accepted

    def reply(self, seen: Seen) -> web.StreamResponse:
        if seen.path.startswith("/sms"):
            return web.json_response({"error": "gateway down"}, status=500)
        if seen.path == "/" and seen.method == "POST":  # ntfy
            body = seen.json()
            if self.ntfy_refusals > 0:
                self.ntfy_refusals -= 1
                echo = (f"no access to {body.get('topic')} for {seen.headers.get('Authorization')}"
                        if self.ntfy_refusals else f"refused {body.get('click')}")
                return web.json_response({"code": 40301, "error": echo}, status=403)
            self.ntfy.append(body)
            return web.json_response({"id": "m1", "event": "message"})
        if seen.path == "/1/messages.json":
            form = seen.form()
            reply: dict[str, Any] = {"status": 1, "request": "req1"}
            if form.get("priority") == "2":
                reply["receipt"] = "rcpt1"
            return web.json_response(reply)
        if seen.path.startswith("/1/receipts/"):
            return web.json_response({"status": 1, "acknowledged": 0, "last_delivered_at": 0,
                                      "expired": 0, "request": "x"})
        return web.json_response({"status": 1})  # the page webhook, and anything else


@pytest.fixture
async def stand_ins() -> AsyncIterator[tuple[LocalService, Services]]:
    services = Services()
    async with local_service(services.reply) as service:
        yield service, services


def where(secret: str, texts: dict[str, str]) -> list[str]:
    """Every place `secret` occurs: ``name:line``, in the raw text or in a decoded JSON line,
    as it is or URL-encoded (inside a logged URL or query string)."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret)}
    found = []
    for name, text in texts.items():
        for number, line in enumerate(text.splitlines(), 1):
            decoded = line
            if line.startswith("{"):
                try:
                    decoded = json.dumps(json.loads(line), ensure_ascii=False)
                except ValueError:
                    pass
            if any(form in line or form in decoded for form in forms):
                found.append(f"{name}:{number}: {line[:300]}")
    return found


async def test_no_personal_data_or_secret_in_logs_or_metrics(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish,
    stand_ins: tuple[LocalService, Services],
) -> None:
    """A whole shift through the real process: nothing personal or secret is ever logged."""
    push, services = stand_ins
    port = free_port()
    password = SECRETS["the Apprise URL's password"]
    sms_url = f"json://smsuser:{password}@127.0.0.1:{push.port}/sms/{{address}}"
    config = site_config(tmp_path / "boothwatch.toml", mqtt_port=mosquitto.port,
                         http_port=port, hook=f"{push.url}/hook", push=push.url)
    svc = ServiceProcess(config, port, tmp_path / "stderr", stdout=tmp_path / "stdout",
                         env={**ENV, "BOOTHWATCH_SMS_URL": sms_url})
    base = f"http://127.0.0.1:{port}"
    links: set[str] = set()

    def collect_links() -> None:
        for seen in push.requests:
            text = seen.body.decode(errors="replace")
            for part in text.replace('"', " ").replace("\\n", " ").replace("&", " ").split():
                if "/ack/" in part:
                    links.add(part.split("/ack/", 1)[1].split("?")[0].split("%3F")[0])

    svc.start()
    try:
        await svc.ready()
        async with aiohttp.ClientSession() as http:
            async def post(path: str, body: dict[str, Any], auth: bool = True) -> int:
                async with http.post(f"{base}{path}", json=body,
                                     headers=AUTH if auth else {}) as resp:
                    return resp.status

            async def incidents() -> list[dict[str, Any]]:
                async with http.get(f"{base}/api/incidents?state=all", headers=AUTH) as resp:
                    result: list[dict[str, Any]] = await resp.json()
                    return result

            # the station logs in, once with a password that is nearly right
            for password in (SECRETS["the station board password"] + "x",
                             SECRETS["the station board password"]):
                async with http.post(f"{base}/board/login", data={"password": password},
                                     allow_redirects=False) as resp:
                    assert resp.status in (303, 401)

            # duty: in by API (by a responder id), out and in over MQTT by a name
            assert await post("/api/responders/rui/duty", {"on": True, "by": "ana"}) == 200
            assert await post("/api/responders/rui/duty", {"on": True}, auth=False) == 401
            mqtt_publish(f"boothwatch/{SITE}/duty", json.dumps(
                {"responder": "rui", "on": False, "by": SECRETS["the MQTT duty 'by'"]}))
            mqtt_publish(f"boothwatch/{SITE}/duty", json.dumps(
                {"responder": "rui", "on": True, "by": SECRETS["the MQTT duty 'by'"]}))

            # a call: ana's SMS fails, ntfy refuses twice (echoing), then delivers; level 2
            # at 1 s adds rui on Pushover (an emergency, its receipt polled)
            mqtt_publish(events_topic("b1"), event("button", press="call"))
            await eventually(lambda: services.ntfy, 10)
            await push.wait_for("POST", "/1/messages.json")
            action = services.ntfy[0]["actions"][0]["url"]
            async with http.post(action) as resp:  # the lock-screen Acknowledge button
                assert resp.status == 200
            async with http.post(action) as resp:  # replayed
                assert resp.status == 403
            b1 = next(i for i in await incidents() if i["booth"] == "b1")
            assert await post(f"/api/incidents/{b1['id']}/presence", {"responder": "rui"}) == 200
            async with http.post(f"{action.split('?')[0]}/outcome", data={
                    "outcome": "ok", "note": SECRETS["an ack-link outcome note"]}) as resp:
                assert resp.status == 200

            # stillness in b2: acknowledged over MQTT, cleared at the booth, outcome by API
            mqtt_publish(events_topic("b2"), event("occupancy", occupied=True))
            mqtt_publish(events_topic("b2"), event("motion", state="still"))
            b2 = await eventually(lambda: _open_at(incidents(), "b2"), 10)
            mqtt_publish(f"boothwatch/{SITE}/ack",
                         json.dumps({"incident": b2["id"], "responder": "ana"}))
            await eventually(lambda: _state(incidents(), b2["id"], "acknowledged"))
            mqtt_publish(events_topic("b2"), event("button", press="clear"))
            await eventually(lambda: _state(incidents(), b2["id"], "resolved"))
            assert await post(f"/api/incidents/{b2['id']}/outcome", {
                "responder": "ana", "outcome": "overdose_naloxone",
                "note": f"{SECRETS['an outcome note']} woke up"}) == 200

            # a call in b3 acknowledged and resolved through the API
            mqtt_publish(events_topic("b3"), event("button", press="call"))
            b3 = await eventually(lambda: _open_at(incidents(), "b3"))
            assert await post(f"/api/incidents/{b3['id']}/ack", {"responder": "ana"}) == 200
            assert await post(f"/api/incidents/{b3['id']}/resolve", {
                "responder": "ana", "outcome": "emergency_services",
                "note": SECRETS["an outcome note"]}) == 200

            # maintenance: who and why; a suppressed trigger; ended by the same person
            assert await post("/api/booths/b3/maintenance", {
                "until": "1h", "reason": SECRETS["the maintenance reason"],
                "by": SECRETS["the maintenance 'by'"]}) == 200
            mqtt_publish(events_topic("b3"), event("occupancy", occupied=True))
            mqtt_publish(events_topic("b3"), event("motion", state="still"))
            await eventually(lambda: _metric(http, base, "boothwatch_triggers_suppressed_total"))
            assert await post("/api/booths/b3/maintenance/end",
                              {"by": SECRETS["the maintenance 'by'"]}) == 200

            collect_links()
            assert links, "no ack link seen"
            assert await svc.stop() == 0
            svc.start()  # a restart: the links survive as used, the logs say what restarted
            await svc.ready()
            async with http.post(action) as resp:
                assert resp.status == 403
            async with http.get(f"{base}/metrics") as resp:
                metrics = await resp.text()
    finally:
        if svc.running:
            assert await svc.stop() == 0

    # not subprocess.run: the stand-ins it pages run on this event loop
    tester = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor.cli", "--log-format", "json", "test-page", "--config",
        str(config), "--responder", "ana", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=ROOT, env=svc.env)
    async with asyncio.timeout(60):
        stdout, stderr = await tester.communicate()
    assert tester.returncode == 1, (stdout, stderr)  # ana's SMS gateway is down
    test_page = {"stdout": stdout.decode(errors="replace"),
                 "stderr": stderr.decode(errors="replace")}
    collect_links()
    texts = {name: (tmp_path / name).read_text(errors="replace") for name in ("stdout", "stderr")}
    texts |= {"/metrics": metrics, "test-page stderr": test_page["stderr"]}
    assert '"event": "page"' in texts["stderr"]  # the logs were captured
    leaks = {what: where(secret, texts) for what, secret in SECRETS.items()}
    # a start is enough: a service's echo may be cut short (channel reasons are)
    leaks |= {f"ack token {token[:24]}...": where(token[:24], texts) for token in links}
    # test-page's report is for the person at the console: it names the responder (so the
    # tester can ask her) and never anything else of hers
    report = {"test-page stdout": test_page["stdout"]}
    leaks |= {f"{what} (test-page report)": where(secret, report)
              for what, secret in SECRETS.items() if "name" not in what}
    found = {what: places for what, places in leaks.items() if places}
    assert not found, "\n".join(f"{what} found at:\n  " + "\n  ".join(places)
                                for what, places in found.items())


async def _open_at(pending: Any, booth: str) -> dict[str, Any] | None:
    return next((i for i in await pending if i["booth"] == booth and i["state"] != "resolved"),
                None)


async def _state(pending: Any, incident: str, state: str) -> bool:
    return any(i["id"] == incident and i["state"] == state for i in await pending)


async def _metric(http: aiohttp.ClientSession, base: str, name: str) -> bool:
    async with http.get(f"{base}/metrics") as resp:
        return any(line.startswith(name) and not line.endswith(" 0.0")
                   for line in (await resp.text()).splitlines())



# --- the pieces ----------------------------------------------------------------------------


def privacy() -> Privacy:
    p = Privacy()
    p.protect(["tk_ntfysecret123", "+351912345678", "ab"], ["Ana Sousa", "Rui"], ["ana", "rui"])
    return p


def test_privacy_redacts_secrets_names_and_ack_links_everywhere() -> None:
    """Secrets anywhere (also URL-quoted), names as whole words, ack tokens in any URL, in
    nested values and exceptions; 'by' and 'responder' only as responder ids."""
    p = privacy()
    event = p(None, "info", {
        "event": "page attempt failed",
        "error": "HTTP 403: Bearer tk_ntfysecret123 to %2B351912345678 for Ana Sousa",
        "detail": {"url": "https://x.example/ack/WyJB.Ilx.abc-_9?via=ntfy", "who": ["Rui"]},
        "exc": ValueError("no +351912345678"),
        "by": "Carla Nunes", "responder": "ana", "level": 2, "text": "Ruins of abba",
    })
    assert event == {
        "event": "page attempt failed",
        "error": "HTTP 403: Bearer <redacted> to <redacted> for <redacted>",
        "detail": {"url": "https://x.example/ack/<token>?via=ntfy", "who": ["<redacted>"]},
        "exc": "ValueError: no <redacted>",
        "by": "<not a responder id>", "responder": "ana", "level": 2,
        "text": "Ruins of abba",  # a name only as a word; "ab" is too short to be a secret
    }
    assert p.clean("by", "booth") == "booth" and p.clean("by", "expiry") == "expiry"


def test_protect_takes_what_the_config_and_environment_hold(tmp_path: Path) -> None:
    """Names, addresses, channel tokens and secrets, Apprise URL credentials and the secrets
    in the environment are all redacted once `protect` has seen the config."""
    from monitor.config import load_config

    config_path = site_config(tmp_path / "site.toml", mqtt_port=1883, http_port=8080,
                              hook="https://hooks.example/T0KEN-PATH-77", push="http://x:1")
    env = {**ENV, "BOOTHWATCH_SMS_URL": "json://smsuser:smspass99x@x:1/sms/{address}"}
    config = load_config(config_path, env=env)
    try:
        protect(config, env)
        text = " ".join([*SECRETS.values(), "hooks.example/T0KEN-PATH-77", "smsuser"])
        cleaned = PRIVACY.scrub(text)
        for what, secret in SECRETS.items():
            if "by" in what or "reason" in what or "note" in what:
                continue  # free text is kept out of the logs by not logging it
            assert secret not in cleaned, what
        assert "T0KEN-PATH-77" not in cleaned and "smsuser" not in cleaned
    finally:
        PRIVACY.reset()


def test_library_logs_are_json_and_cleaned() -> None:
    """A library logging through `logging` (Apprise, aiohttp) gets the same treatment."""
    code = (
        "import logging, os\n"
        "from monitor.config import load_config\n"
        "from monitor.logs import configure, protect\n"
        "configure('json')\n"
        "from monitor.logs import PRIVACY\n"
        "PRIVACY.protect(['+351912345678'], ['Ana Sousa'], ['ana'])\n"
        "logging.getLogger('apprise').warning('Failed to send to +351912345678 (Ana Sousa)'"
        " ' http://h/ack/abc.def.ghi')\n"
        "logging.getLogger('apprise').info('chatty')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert len(lines) == 1
    assert lines[0]["event"] == "Failed to send to <redacted> (<redacted>) http://h/ack/<token>"
    assert (lines[0]["logger"], lines[0]["level"]) == ("apprise", "warning")


async def test_channel_reasons_mask_the_channels_own_token() -> None:
    """A service that echoes the token it was sent does not get it into the stored reason."""
    def echo(seen: Seen) -> web.StreamResponse:
        given = seen.headers.get("Authorization", "") + seen.body.decode()[:60]
        return web.json_response({"error": f"bad {given}", "errors": [f"bad {given}"],
                                  "status": 0}, status=403)

    token = "tk_ntfysecret123"
    async with local_service(echo) as service, aiohttp.ClientSession() as session:
        ntfy = NtfyChannel(ChannelConfig("ch", "ntfy", url=service.url + "/", token=token),
                           session)
        pushover = PushoverChannel(ChannelConfig("po", "pushover", url=service.url,
                                                 token=token), session)
        for channel in (ntfy, pushover):
            page = Delivery("p1", "I1", "ana", 1, (channel.name,), {"kind": "page",
                            "priority": "medium", "message": "m"})
            with pytest.raises(DeliveryError) as info:
                await channel.send(page, "uQiRzpo4DXghDmr9QzzfQu27cmVRsG")
            assert "bad" in str(info.value) and token not in str(info.value), info.value
            assert "<secret>" in str(info.value)
