"""`boothwatch test-page` as a subprocess: a local webhook, an ntfy stand-in, Mosquitto."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import pytest
from aiohttp import web
from paho.mqtt.enums import CallbackAPIVersion

from tests.harness.broker import Mosquitto
from tests.harness.process import ROOT
from tests.harness.receivers import LocalService, Seen, local_service
from tests.harness.site import Site, booths, policy, responder, step

SITE_ZONE = "Asia/Kolkata"  # far from UTC all year: a time in UTC would show


def site_config(tmp_path: Path, service: LocalService, mqtt_url: str = "mqtt://127.0.0.1:1",
                watched: bool = True) -> Path:
    """Ana on a webhook, an ntfy phone and the console (watched unless told); Rui on the
    mqtt channel."""
    pages_everyone = policy(step("0s", "role:nurse"))
    site = Site(
        mqtt_url=mqtt_url, client_id="boothwatch-lisbon-1", store=tmp_path / "bw.db",
        timezone=SITE_ZONE,
        booths=booths(1),
        channels={
            "hook": {"type": "webhook", "url": f"{service.url}/hook"},
            "phone": {"type": "ntfy", "url": f"{service.url}/ntfy/",
                      "token_env": "TEST_NTFY_TOKEN", "timeout": "2s"},
            "screen": {"type": "console", "watched": watched},
            "bus": {"type": "mqtt"},
        },
        responders=[responder("ana", ["nurse"], ["hook", "phone", "screen"],
                              address={"phone": "ana-x7"}),
                    responder("rui", ["nurse"], ["bus"])],
        escalation={"high": pages_everyone, "medium": pages_everyone, "low": pages_everyone},
    )
    return site.write(tmp_path / "site.toml")


async def run_test_page(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run `boothwatch test-page --config CONFIG ARGS`; (exit status, stdout, stderr)."""
    full_env = {**os.environ, "TEST_NTFY_TOKEN": "tk_test", **(env or {})}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor.cli", "test-page", "--config", str(config), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT, env=full_env,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def reply(seen: Seen) -> web.StreamResponse:
    if seen.path == "/ntfy/":
        return web.json_response({"id": "hwQ2YpKdmg", "event": "message"})
    return web.Response(text="ok")


async def test_all_channels_delivered(tmp_path: Path) -> None:
    """Each of Ana's channels gets one marked test page; exit 0 with a line per channel."""
    async with local_service(reply) as service:
        code, out, err = await run_test_page(site_config(tmp_path, service), "--responder", "ana")
        requests = {r.path: r for r in service.requests}
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("[TEST] TEST PAGE from boothwatch (Sala Mouraria) to Ana via "
                               "screen at "), out  # the console channel's own line
    assert lines[1].startswith("hook (webhook): delivered in ") and lines[1].endswith(" ms")
    assert lines[2].startswith("phone (ntfy): delivered in ")
    assert lines[2].endswith(" ms, receipt hwQ2YpKdmg")
    assert lines[3].startswith("screen (console): delivered in ")
    assert lines[4] == ("all 3 channel(s) delivered; ask Ana to confirm the test page "
                        "arrived on each")
    assert len(service.requests) == 2
    hook = requests["/hook"].json()
    assert hook.keys() == {"kind", "site", "responder", "message"}
    assert (hook["kind"], hook["site"], hook["responder"]) == ("test", "lisbon-1", "ana")
    assert hook["message"].startswith("TEST PAGE from boothwatch (Sala Mouraria) to Ana via hook")
    # the time the responder reads is the site's, with its offset (Kolkata: +05:30, no DST)
    sent = re.search(r" at (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+05:30)\. No action needed\.$",
                     hook["message"])
    assert sent is not None, hook["message"]
    now = datetime.now(ZoneInfo(SITE_ZONE))
    assert abs((now - datetime.fromisoformat(sent.group(1))).total_seconds()) < 60
    ntfy = requests["/ntfy/"]
    assert ntfy.headers["Authorization"] == "Bearer tk_test"
    body = ntfy.json()
    assert (body["topic"], body["title"], body["priority"], body["tags"]) == (
        "ana-x7", "boothwatch TEST", 3, ["test_tube"])
    assert "actions" not in body and "click" not in body


async def test_one_channel_failing(tmp_path: Path) -> None:
    """--channel sends on that channel only; a refusal is reported and the exit status is 1."""
    async with local_service(lambda seen: web.Response(status=500)) as service:
        code, out, _ = await run_test_page(site_config(tmp_path, service), "--responder", "ana",
                                       "--channel", "phone")
        paths = [r.path for r in service.requests]
    assert code == 1
    assert paths == ["/ntfy/"]
    first, verdict = out.splitlines()
    assert first.startswith("phone (ntfy): FAILED after ") and first.endswith(" ms: HTTP 500")
    assert verdict == "FAILED: 1 of 1 channel(s) did not deliver"


async def test_console_nobody_watches_is_no_delivery(tmp_path: Path) -> None:
    """A console nobody watches prints the test page, and fails the test as the service
    counts it: the page reached nobody."""
    async with local_service(reply) as service:
        code, out, _ = await run_test_page(site_config(tmp_path, service, watched=False),
                                           "--responder", "ana", "--channel", "screen")
    assert code == 1
    printed, line, verdict = out.splitlines()
    assert printed.startswith("[TEST] TEST PAGE from boothwatch (Sala Mouraria) to Ana")
    assert line.startswith("screen (console): FAILED after ")
    assert line.endswith(" ms: printed on a console nobody watches")
    assert verdict == "FAILED: 1 of 1 channel(s) did not deliver"


async def test_unreachable_service_times_out(tmp_path: Path) -> None:
    """A service that never answers fails after the channel's timeout, not never."""
    async with local_service() as service:
        service.reply = lambda seen: service.hang()
        code, out, _ = await run_test_page(site_config(tmp_path, service), "--responder", "ana",
                                       "--channel", "phone")
    assert code == 1
    assert out.splitlines()[0].endswith(": timeout after 2s")


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--responder", "nobody"), {}, "unknown responder 'nobody' (known: ana, rui)"),
        (("--responder", "ana", "--channel", "bus"), {},
         "'bus' is not one of ana's channels (hook, phone, screen)"),
        (("--responder", "ana", "--channel", "fax"), {},
         "'fax' is not a channel of the config nor ana's channels (hook, phone, screen)"),
        (("--responder", "ana"), {"TEST_NTFY_TOKEN": ""},
         "channels.phone.token_env: environment variable TEST_NTFY_TOKEN is not set"),
    ],
)
async def test_usage_and_config_errors_exit_2(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], message: str,
) -> None:
    """An unknown responder or channel, or a config problem: exit 2, nothing sent."""
    async with local_service(reply) as service:
        code, out, err = await run_test_page(site_config(tmp_path, service), *args, env=env)
        assert service.requests == []
    assert code == 2
    assert message in err
    assert out == ""


@pytest.mark.integration
async def test_mqtt_channel_connects_briefly(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """An mqtt channel publishes the test page through the config's broker, under its own id."""
    received: list[mqtt.MQTTMessage] = []
    subscribed, arrived = threading.Event(), threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_connect(c: mqtt.Client, *_: Any) -> None:
        c.subscribe("boothwatch/lisbon-1/pages/#", qos=1)

    def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        received.append(msg)
        arrived.set()

    client.on_connect = on_connect
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = on_message
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        assert await asyncio.to_thread(subscribed.wait, 5)
        async with local_service(reply) as service:
            config = site_config(tmp_path, service, mqtt_url=mosquitto.url)
            code, out, err = await run_test_page(config, "--responder", "rui")
        assert code == 0, out + err
        assert out.splitlines()[0].startswith("bus (mqtt): delivered in ")
        assert await asyncio.to_thread(arrived.wait, 5)
    finally:
        client.disconnect()
        client.loop_stop()
    assert received[0].topic == "boothwatch/lisbon-1/pages/rui"
    assert b'"kind":"test"' in received[0].payload


async def test_mqtt_broker_down_is_a_failed_channel(tmp_path: Path) -> None:
    """No broker: the mqtt channel fails with a reason (exit 1), it does not hang."""
    async with local_service(reply) as service:
        code, out, _ = await run_test_page(site_config(tmp_path, service), "--responder", "rui")
    assert code == 1
    assert out.splitlines()[0].endswith(": broker not connected within 5s")
