"""Helpers for tests that run the whole service: a TOML config, a webhook receiver, polling."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.mosquitto import free_port

SITE = "lisbon-1"
WEBHOOK_SECRET = "hook-secret"
# appended to a config whose test sends bursts from one booth, the flood limit not under test
NO_RATE_LIMIT = "\n[rate_limit]\nrate = 100000\nburst = 100000\n"


def write_config(
    path: Path,
    *,
    mqtt_port: int,
    http_port: int,
    webhook_url: str,
    db: Path,
    stillness: str = "3m",
    long_session: str = "20m",
    step2: str = "1s",
    repeat: str = "1s",
    ack_timeout: str = "1.5s",
    client_id: str = "boothwatch-test",
    mqtt_url: str | None = None,
    mqtt_username: str | None = None,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> Path:
    """A site config for tests; by default plain MQTT to 127.0.0.1:``mqtt_port``, no account."""
    mqtt_url = mqtt_url or f"mqtt://127.0.0.1:{mqtt_port}"
    optional = {"username": mqtt_username, "ca_file": ca_file, "cert_file": cert_file,
                "key_file": key_file}
    mqtt_extra = "".join(f'{key} = "{value}"\n' for key, value in optional.items() if value)
    path.write_text(f"""
[site]
id = "{SITE}"
name = "Sala Mouraria"
timezone = "Europe/Lisbon"

[mqtt]
url = "{mqtt_url}"
client_id = "{client_id}"
{mqtt_extra}
[store]
path = "{db}"

[http]
listen = "127.0.0.1:{http_port}"
public_url = "http://127.0.0.1:{http_port}"

[defaults]
long_session = "{long_session}"
stillness = "{stillness}"
device_timeout = "15m"

[[booths]]
id = "b1"
name = "Booth 1"

[[booths]]
id = "b2"
name = "Booth 2"

[channels.pager]
type = "webhook"
url = "{webhook_url}"
secret = "{WEBHOOK_SECRET}"
timeout = "2s"

[[responders]]
id = "ana"
name = "Ana"
roles = ["nurse"]
channels = ["pager"]

[[responders]]
id = "rui"
name = "Rui"
roles = ["coordinator"]
channels = ["pager"]

[escalation.high]
steps = [
  {{ after = "0s", notify = ["role:nurse"] }},
  {{ after = "{step2}", notify = ["role:nurse", "role:coordinator"] }},
]
repeat = "{repeat}"
ack_timeout = "{ack_timeout}"

[escalation.medium]
steps = [ {{ after = "0s", notify = ["role:nurse"] }} ]
repeat = "1h"
ack_timeout = "1h"

[escalation.low]
steps = [ {{ after = "0s", notify = ["role:coordinator"] }} ]
""")
    return path


class Webhook:
    """A real HTTP server that receives pages and checks their signature."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/page"
        self.pages: list[dict[str, Any]] = []  # kind "page" only
        self.notices: list[dict[str, Any]] = []  # "Ana is attending", "all clear"
        self.received_at: list[float] = []
        self.bad_signatures = 0
        self.fail_next = 0
        self._new = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Webhook:
        app = web.Application()
        app.router.add_post("/page", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        if request.headers.get("X-Boothwatch-Signature") != expected:
            self.bad_signatures += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=503)
        payload = json.loads(body)
        if payload.get("kind") == "notice":
            self.notices.append(payload)
            return web.Response(text="ok")
        self.pages.append(payload)
        self.received_at.append(time.time())
        self._new.set()
        return web.Response(text="ok")

    async def wait(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until ``count`` pages have arrived in total; return them all."""
        async with asyncio.timeout(timeout):
            while len(self.pages) < count:
                self._new.clear()
                await self._new.wait()
        return self.pages

    def since(self, start: int) -> list[tuple[str, int]]:
        return sorted((p["responder"], p["level"]) for p in self.pages[start:])


async def eventually(check: Callable[[], Any], timeout: float = 5.0, every: float = 0.02) -> Any:
    """Poll ``check`` until it returns something truthy (an awaitable is awaited)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        await asyncio.sleep(every)


def event(kind: str, **fields: Any) -> bytes:
    return json.dumps({"kind": kind, **fields}).encode()


def events_topic(booth: str) -> str:
    return f"boothwatch/{SITE}/booths/{booth}/events"
