"""HTTP (aiohttp): health, metrics, the JSON API and the signed ack links (interface section 7).

``GET /ack/<token>`` only shows the page; ``POST /ack/<token>`` acts, so a link
preview or a prefetching mail client never acknowledges on a nurse's behalf.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import re
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from alerts.tokens import InvalidToken
from monitor.core import UnknownIncident
from monitor.events import Acknowledge, Attend, IncidentEvent, Resolve
from monitor.incident import IllegalTransition
from monitor.runtime import IncidentGone, Runtime
from monitor.views import incident_json

log = structlog.get_logger(__name__)

RUNTIME = web.AppKey("runtime", Runtime)
MAX_INCIDENTS = 10_000  # the full history is for `boothwatch report`
RESPONDER_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
OUTCOME_RE = re.compile(r"^[a-z0-9_]{1,40}$")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(runtime: Runtime) -> web.Application:
    app = web.Application(middlewares=[_bearer], client_max_size=64 * 1024)
    app[RUNTIME] = runtime
    app.add_routes([
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics),
        web.get("/api/booths", booths),
        web.get("/api/incidents", incidents),
        web.post("/api/incidents/{id}/ack", _action("ack")),
        web.post("/api/incidents/{id}/presence", _action("presence")),
        web.post("/api/incidents/{id}/resolve", _action("resolve")),
        web.get("/ack/{token}", ack_page),
        web.post("/ack/{token}", ack_post),
    ])
    return app


async def serve(runtime: Runtime) -> None:
    """Serve until cancelled."""
    runner = web.AppRunner(make_app(runtime), access_log=None)
    await runner.setup()
    cfg = runtime.config.http
    site = web.TCPSite(runner, cfg.host, cfg.port)
    await site.start()
    log.info("http_listening", host=cfg.host, port=cfg.port)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


@web.middleware
async def _bearer(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[RUNTIME].api_token
    if token and request.method == "POST" and request.path.startswith("/api/"):
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return _error(401, "missing or wrong bearer token",
                          headers={"WWW-Authenticate": "Bearer"})
    return await handler(request)


def _error(status: int, message: str, **kw: Any) -> web.Response:
    return web.json_response({"error": message}, status=status, **kw)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    reasons = await request.app[RUNTIME].readiness()
    return web.json_response({"ready": not reasons, "reasons": reasons},
                             status=503 if reasons else 200)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[RUNTIME].metrics.render()
    return web.Response(body=body, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def booths(request: web.Request) -> web.Response:
    return web.json_response(request.app[RUNTIME].booths_json())


async def incidents(request: web.Request) -> web.Response:
    state = request.query.get("state", "open")
    if state not in ("open", "all"):
        return _error(400, "state must be open or all")
    try:
        limit = int(request.query.get("limit", "500"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_INCIDENTS:
        return _error(400, f"limit must be a whole number from 1 to {MAX_INCIDENTS}")
    items, total = await request.app[RUNTIME].incidents_json(state == "open", limit)
    # newest first; the header says when there are more than were returned
    return web.json_response(items, headers={"X-Total-Count": str(total)})


def _action(kind: str) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "body must be JSON")
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object")
        responder = body.get("responder")
        if not isinstance(responder, str) or not RESPONDER_RE.match(responder):
            return _error(400, "responder: a responder id is required")
        incident = request.match_info["id"]
        event: IncidentEvent
        if kind == "ack":
            event = Acknowledge(incident, responder, via="api")
        elif kind == "presence":
            event = Attend(incident, responder, via="api")
        else:
            outcome = body.get("outcome")
            if outcome is not None and (not isinstance(outcome, str)
                                        or not OUTCOME_RE.match(outcome)):
                return _error(400, "outcome: a short word such as ok or false_alarm")
            event = Resolve(incident, responder, outcome, via="api")
        return await _apply(request, event)

    return handle


async def _apply(request: web.Request, event: IncidentEvent) -> web.Response:
    runtime = request.app[RUNTIME]
    try:
        view = await runtime.act(event)
    except UnknownIncident:
        return _error(404, "unknown incident")
    except (IncidentGone, IllegalTransition):
        return _error(409, "incident is resolved")
    return web.json_response(incident_json(view, runtime.booth_name(view.booth)))


# --- ack links -------------------------------------------------------------------------

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; padding: 1.5rem; background: #111;
       color: #eee; }}
h1 {{ font-size: 1.6rem; margin: 0 0 .5rem; }}
p {{ font-size: 1.1rem; }}
.high {{ color: #ff6b6b; }} .medium {{ color: #ffd166; }} .low {{ color: #9ad; }}
button {{ font-size: 1.4rem; padding: 1rem 2rem; width: 100%; border: 0; border-radius: .5rem;
         background: #2a9d8f; color: white; margin-top: 1rem; }}
</style></head>
<body>{body}</body></html>
"""


def _html(title: str, body: str, status: int = 200) -> web.Response:
    return web.Response(text=PAGE.format(title=html.escape(title), body=body),
                        content_type="text/html", status=status,
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


def _bad_token(reason: str) -> web.Response:
    return _html("Link not valid", f"<h1>This link is not valid</h1><p>It is {reason}. "
                 "Open the newest page you received, or use the staff screen.</p>", 403)


async def _incident_for(request: web.Request) -> tuple[dict[str, Any] | None, str, str]:
    runtime = request.app[RUNTIME]
    incident, responder = runtime.tokens.check(request.match_info["token"])
    data: dict[str, Any] | None
    try:
        view = runtime.core.incident_view(incident)
        data = incident_json(view, runtime.booth_name(view.booth))
    except UnknownIncident:
        stored = await runtime.store.incident(incident)
        data = None if stored is None else {"state": stored["state"], "booth": stored["booth"],
                                            "booth_name": runtime.booth_name(stored["booth"])}
    return data, incident, responder


async def ack_page(request: web.Request) -> web.Response:
    try:
        data, _incident, responder = await _incident_for(request)
    except InvalidToken as exc:
        return _bad_token(exc.reason)
    if data is None:
        return _html("Unknown incident", "<h1>Unknown incident</h1>", 404)
    booth = html.escape(str(data.get("booth_name") or data["booth"]))
    if data["state"] == "resolved":
        return _html(f"{booth}: resolved",
                     f"<h1>{booth}</h1><p>This incident is already resolved.</p>")
    priority = html.escape(str(data.get("priority", "")))
    triggers = ", ".join(html.escape(t) for t in data.get("triggers", []))
    ack_by = data.get("acknowledged_by")
    already = (f"<p>Already acknowledged by {html.escape(str(ack_by))}.</p>"
               if ack_by and data["state"] != "open" else "")
    body = (
        f"<h1>{booth}</h1>"
        f"<p class=\"{priority}\">{priority.upper()} &middot; {triggers}</p>"
        f"<p>State: {html.escape(data['state'])}</p>{already}"
        f"<form method=\"post\"><button type=\"submit\">I'm going "
        f"({html.escape(responder)})</button></form>"
    )
    return _html(f"{booth}: acknowledge", body)


async def ack_post(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    try:
        incident, responder = runtime.tokens.check(request.match_info["token"])
    except InvalidToken as exc:
        return _bad_token(exc.reason)
    response = await _apply(request, Acknowledge(incident, responder, via="link"))
    if response.status != 200:
        text = {404: "Unknown incident", 409: "This incident is already resolved"}
        return _html("Not acknowledged", f"<h1>{text.get(response.status, 'Error')}</h1>",
                     response.status)
    booth = html.escape(runtime.booth_name(runtime.core.incidents[incident].booth)
                        if incident in runtime.core.incidents else "the booth")
    return _html("Acknowledged", f"<h1>Acknowledged</h1><p>You are going to {booth}. "
                 "Press presence at the booth when you arrive.</p>")
