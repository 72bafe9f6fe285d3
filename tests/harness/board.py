"""A station board's stream as a test or a benchmark reads it: aiohttp, real HTTP.

`BoardStream` parses the Server-Sent Events of ``GET /board/stream`` (``event:`` and
``data:`` lines, a blank line ends a message) into ``(event, data)`` with the data's
JSON decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp


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
async def board_stream(http: aiohttp.ClientSession, base: str) -> AsyncIterator[BoardStream]:
    """An open ``GET /board/stream``; closed when the block ends."""
    async with http.get(f"{base}/board/stream",
                        timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"] == "text/event-stream"
        yield BoardStream(response)
