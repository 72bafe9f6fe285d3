"""A station board as a test or a benchmark drives it: aiohttp, real HTTP.

`login` logs a station in as the board's page does and returns the headers of its
session (the cookie, and the CSRF token read from the page). `BoardStream` parses the
Server-Sent Events of ``GET /board/stream`` (``event:`` and ``data:`` lines, a blank
line ends a message) into ``(event, data)`` with the data's JSON decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from monitor.station import COOKIE, CSRF_HEADER

#: the station password the tests and benchmarks give the service
PASSWORD = "station-password-for-tests"
ENV = {"BOOTHWATCH_BOARD_PASSWORD": PASSWORD}


async def login(http: aiohttp.ClientSession, base: str, password: str = PASSWORD
                ) -> dict[str, str]:
    """Log in at ``POST /board/login``; the headers of the session: its cookie (aiohttp's
    jar keeps none for an IP address) and the CSRF token of the page it opens."""
    async with http.post(f"{base}/board/login", data={"password": password},
                         allow_redirects=False) as resp:
        assert resp.status == 303, await resp.text()
        headers = {"Cookie": f"{COOKIE}={resp.cookies[COOKIE].value}"}
    async with http.get(f"{base}/board", headers=headers) as resp:
        assert resp.status == 200
        page = await resp.text()
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert csrf is not None, "the board's page has no CSRF token"
    return {**headers, CSRF_HEADER: csrf[1]}


class BoardStream:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self, timeout: float = 10.0) -> tuple[str, Any]:
        """The next message, pings included."""
        event, data = "message", []
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    raise ConnectionError("the stream ended")
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data.append(line.removeprefix("data: "))
                elif not line and data:
                    return event, json.loads("\n".join(data))

    async def until(self, event: str, where: Callable[[Any], bool] = lambda _: True,
                    timeout: float = 10.0) -> Any:
        """The data of the next ``event`` message that ``where`` accepts; others are skipped."""
        async with asyncio.timeout(timeout):
            while True:
                kind, data = await self.next(timeout)
                if kind == event and where(data):
                    return data


@contextlib.asynccontextmanager
async def board_stream(http: aiohttp.ClientSession, base: str, headers: dict[str, str]
                       ) -> AsyncIterator[BoardStream]:
    """An open ``GET /board/stream`` with a session's ``headers``; closed when the block
    ends."""
    async with http.get(f"{base}/board/stream", headers=headers,
                        timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"] == "text/event-stream"
        yield BoardStream(response)
