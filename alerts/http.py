"""The one way the HTTP channels (webhook, ntfy, Pushover and its receipts) talk HTTP.

`request` makes one request and turns every transport failure into a
`DeliveryError` with a short reason ("connection refused", "timeout after 5s");
what a status means is the channel's to say, as each service answers errors
in its own words.
"""

from __future__ import annotations

import errno
import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from alerts.delivery import DeliveryError

MAX_REPLY = 64 * 1024  # bytes of a service's reply kept; the rest is read and dropped


def client_session() -> aiohttp.ClientSession:
    """The one HTTP session the HTTP channels share (webhook, ntfy, Pushover).

    Shared for the life of the process, so connections stay alive between pages
    instead of paying a TCP (and TLS) handshake per page. No cap on connections:
    aiohttp's default pool holds 100, and requests hanging on a dead endpoint (each
    until its channel's `timeout`) would hold them all, so pages to every other
    service would queue behind them. The dispatcher bounds how many attempts start
    at once (`alerts.delivery.Slots`, by priority), so a burst of pages reuses a few
    kept-alive connections instead of opening one per page; an attempt hanging past
    its slot's hold stops counting there, and keeps its own connection here.
    """
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes  # the first MAX_REPLY bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> dict[str, Any]:
        """The body's JSON object, or {} when it is not one (an error page from a proxy...)."""
        try:
            value = json.loads(self.body)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


async def request(
    session: aiohttp.ClientSession, method: str, url: str, *, timeout: float, **kwargs: Any
) -> Reply:
    """One HTTP request, any status; transport failures raise `DeliveryError`."""
    try:
        async with session.request(
            method,
            url,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,  # a redirect would turn a POST into a GET
            **kwargs,
        ) as response:
            body = bytearray()
            # Read to the end so the connection goes back to the pool; keep only the start.
            async for chunk in response.content.iter_chunked(MAX_REPLY):
                if len(body) < MAX_REPLY:
                    body += chunk[: MAX_REPLY - len(body)]
            return Reply(response.status, bytes(body))
    except TimeoutError:
        raise DeliveryError.timeout(timeout) from None
    except aiohttp.ClientConnectorError as exc:
        if exc.os_error.errno == errno.ECONNREFUSED:
            raise DeliveryError("connection refused") from None
        raise DeliveryError(f"connection failed: {exc.os_error.strerror or exc}") from None
    except aiohttp.ClientError as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise DeliveryError(reason) from None
