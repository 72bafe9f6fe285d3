"""Real local HTTP servers that receive what the service sends.

`Webhook` is the pager of the test site: it checks each page's signature and keeps
pages and notices apart. `local_service` stands in for ntfy, Pushover, an Apprise
endpoint or any webhook: it records every request as it arrived (method, path,
query, headers, raw body) and answers with what the test's `reply` function
returns. Tests wait for requests with a condition, never by sleeping, then check them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.harness.broker import free_port
from tests.harness.site import WEBHOOK_SECRET

WAIT = 5.0


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        """The body as form fields; a field sent twice fails the test."""
        pairs = parse_qsl(self.body.decode(), keep_blank_values=True, strict_parsing=True)
        form = dict(pairs)
        assert len(form) == len(pairs), f"a form field sent twice: {pairs}"
        return form


Reply = Callable[[Seen], Awaitable[web.StreamResponse] | web.StreamResponse]


def ok(request: Seen) -> web.StreamResponse:
    return web.json_response({"id": "msg1"})


@dataclass
class LocalService:
    url: str  # base URL, no trailing slash
    port: int
    reply: Reply = ok
    requests: list[Seen] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    release: asyncio.Event = field(default_factory=asyncio.Event)  # lets hanging replies end

    def matching(self, method: str, path: str) -> list[Seen]:
        return [r for r in self.requests if r.method == method and r.path == path]

    async def wait_for(self, method: str, path: str, count: int = 1) -> list[Seen]:
        """Wait until `count` requests of `method` on `path` arrived; returns them all."""
        async with asyncio.timeout(WAIT):
            async with self.changed:
                await self.changed.wait_for(lambda: len(self.matching(method, path)) >= count)
        return self.matching(method, path)

    async def hang(self) -> web.StreamResponse:
        """A reply that never comes (until the test ends)."""
        await self.release.wait()
        return web.Response(text="late")


@asynccontextmanager
async def local_service(reply: Reply = ok, port: int = 0) -> AsyncIterator[LocalService]:
    """Start a LocalService on 127.0.0.1 (``port``, or a free one); stop it afterwards."""
    holder: list[LocalService] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        service = holder[0]
        seen = Seen(request.method, request.path, dict(request.query), dict(request.headers),
                    await request.read())
        async with service.changed:
            service.requests.append(seen)
            service.changed.notify_all()
        answer = service.reply(seen)
        if isinstance(answer, web.StreamResponse):
            return answer
        return await answer

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    assert server.port is not None
    service = LocalService(str(server.make_url("")).rstrip("/"), server.port, reply)
    holder.append(service)
    try:
        yield service
    finally:
        service.release.set()
        await server.close()


class Webhook:
    """The test site's pager: receives pages and checks their signature."""

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

    async def __aenter__(self) -> Self:
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
