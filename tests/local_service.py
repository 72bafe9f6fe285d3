"""A real local HTTP server standing in for ntfy, Pushover or a webhook receiver.

It records every request as it arrived (method, path, query, headers, raw body)
and answers with what the test's `reply` function returns. Tests wait for
requests with `wait_for` (a condition, no sleeping) and then check them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.test_utils import TestServer

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
async def local_service(reply: Reply = ok) -> AsyncIterator[LocalService]:
    """Start a LocalService on 127.0.0.1 (a free port); stop it afterwards."""
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
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    assert server.port is not None
    service = LocalService(str(server.make_url("")).rstrip("/"), server.port, reply)
    holder.append(service)
    try:
        yield service
    finally:
        service.release.set()
        await server.close()
