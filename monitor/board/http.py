"""The board's routes: the page, its stream of changes, and its static files.

``GET /board`` renders `board.html` (a `string.Template`) with:

* ``$texts``: `TEXTS` in the site's language, and ``$config``: that language (BCP 47), the
  site's time zone, the outcomes a resolve takes, how long maintenance may last (as the
  API reads it, and in words), the protocol steps and naloxone's most doses a step takes,
  the routes a session may be marked with and each booth's high-risk stillness; each as
  JSON safe inside ``<script type="application/json">``;
* ``$lang``: the language of the texts;
* ``$csrf``: the station session's CSRF token, for the page's POSTs (``X-CSRF-Token``);
* ``$site``, ``$title``: the site's name and the board's title, HTML-escaped.

``GET /board/stream`` is Server-Sent Events: ``snapshot`` first (the whole state), then
``booth``, ``incident`` and ``responders`` as they change, and ``ping`` after a second of
silence, so a board that hears nothing for three knows its link is lost. Each message's
data is the JSON the API serves for the same thing (`monitor.codec`, `monitor.api`).
"""

from __future__ import annotations

import asyncio
import html
import json
import socket
import time
from pathlib import Path
from string import Template
from typing import Any

import structlog
from aiohttp import web

from monitor.api import API, Api
from monitor.board.feed import DROPPED, message
from monitor.board.texts import MAINTENANCE_SPANS, TEXTS
from monitor.core.durations import parse_duration
from monitor.core.events import MAX_DOSES, NOTE_MAX, OUTCOMES, STEPS
from monitor.core.settings import ROUTES
from monitor.station import STATION, set_cookie
from monitor.store import dumps

log = structlog.get_logger(__name__)

HERE = Path(__file__).parent
PAGE = Template((HERE / "board.html").read_text(encoding="utf-8"))
#: the files under /board/static/, by name (nothing else is served from there)
STATIC = {p.name: p for p in (HERE / "static").iterdir() if p.is_file()}
PING = 1.0  # seconds of silence before a ping
#: the kernel's share of a board's backlog: small, so a board that stops reading fills
#: its (counted, bounded) queue soon instead of megabytes of socket buffer
SEND_BUFFER = 64 * 1024
#: a board whose machine stops acknowledging (asleep, cable out) is cut after this long,
#: so it no longer counts as connected; the pings keep data in flight to notice it
LINK_TIMEOUT_MS = 10_000
#: the page loads nothing from elsewhere and runs no inline script
POLICY = ("default-src 'self'; img-src 'self' data:; media-src 'self' data:; "
          "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/board", page),
        # no HEAD: headers alone would be a stream that never sends, or one whose body
        # reaches a client that expects none
        web.get("/board/stream", stream, allow_head=False),
        web.get("/board/static/{name}", static),
    ]


async def page(request: web.Request) -> web.Response:
    api = request.app[API]
    session = request.get(STATION)  # none with a bearer token
    # the cookie's age is wall-clock time, as its signature's timestamp is
    renewed = None if session is None else api.stations.renewed(session, time.time())
    if renewed is not None:
        session = renewed
    site, language = api.config.site, api.language
    words = language.board_texts(TEXTS)  # in the site's language (monitor.i18n)
    # each span as the maintenance API reads it, and as the site's language says it
    spans = [{"value": span, "label": language.duration(parse_duration(span))}
             for span in MAINTENANCE_SPANS]
    # each booth's high-risk stillness, for the words of the form that marks a session
    high_risk = {b.id: b.thresholds("high").stillness for b in api.config.booths}
    config = {"lang": language.tag, "timezone": site.timezone, "outcomes": OUTCOMES,
              "note_max": NOTE_MAX, "maintenance_spans": spans, "steps": STEPS,
              "max_doses": MAX_DOSES, "routes": ROUTES, "high_risk_stillness": high_risk}
    body = PAGE.substitute(texts=_script_json(words), config=_script_json(config),
                           lang=language.tag,
                           csrf=html.escape(session.csrf if session is not None else ""),
                           site=html.escape(site.name), title=html.escape(words["title"]))
    response = web.Response(text=body, content_type="text/html", headers={
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff"})
    if renewed is not None:
        set_cookie(request, response, renewed, api.config.http.public_url)
    return response


def _script_json(value: object) -> str:
    """JSON for a ``<script type="application/json">``: "<" escaped, so no text can close
    the element."""
    return json.dumps(value, ensure_ascii=False).replace("<", "\\u003c")


async def static(request: web.Request) -> web.FileResponse:
    path = STATIC.get(request.match_info["name"])
    if path is None:
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Cache-Control": "no-cache",
                                           "X-Content-Type-Options": "nosniff"})


def snapshot(api: Api) -> dict[str, Any]:
    """The whole state a board starts from, each part as its API route serves it."""
    responders = api.responders(channels=False)
    return {
        "now": api.clock(),
        "site": {"id": api.config.site.id, "name": api.config.site.name},
        "booths": api.booths(),
        "incidents": api.open_incidents(),
        "responders": responders,
        "on_duty": [r["id"] for r in responders if r["on_duty"]],
    }


def _tune(transport: Any) -> None:
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, LINK_TIMEOUT_MS)


async def stream(request: web.Request) -> web.StreamResponse:
    api = request.app[API]
    transport = request.transport
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-store",
        "X-Accel-Buffering": "no"})  # nginx: pass each event on at once
    # the snapshot and the subscription on one turn of the loop: no change falls between
    board = api.board.subscribe(dumps(snapshot(api)).encode(),
                                cut=lambda: transport.abort() if transport else None)
    log.info("board_connected", boards=api.board.connected)
    try:
        _tune(transport)
        await response.prepare(request)
        while True:
            try:
                async with asyncio.timeout(PING):
                    data = await board.queue.get()
            except TimeoutError:
                data = message(b"ping", dumps({"now": api.clock()}).encode())
            if data == DROPPED:
                break
            await response.write(data)
    except ConnectionError:
        pass  # the board went away; it reconnects to a fresh snapshot
    finally:
        api.board.unsubscribe(board)
        log.info("board_disconnected", boards=api.board.connected)
    return response
