"""HTTP (aiohttp): health, metrics, the JSON API and the signed ack links (interface section 7).

``GET /ack/<token>`` only shows the page; ``POST /ack/<token>`` acts, so a link
preview or a prefetching mail client never acknowledges on a nurse's behalf.

An ack link acknowledges once. Its use is committed to the store before the
acknowledgement is applied, so a replay (the same link posted again, even after a
restart) gets 403 and changes nothing: a replayed "I'm going" would otherwise
pause the escalation of an incident nobody is going to. The page for a used link
says when and how it was used, and still offers the outcome form, which records
an outcome once (409 after). A crash between the two commits spends the link
without acknowledging: escalation goes on, the safe side.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import html
import importlib.resources
import ipaddress
import math
import re
import urllib.parse
import zoneinfo
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web

from alerts.tokens import AckLink, InvalidToken, Use
from monitor.api import Api, IncidentGone
from monitor.core.booth import IllegalBoothTransition, Maintain
from monitor.core.durations import parse_duration
from monitor.core.events import (
    NOTE_MAX,
    OUTCOMES,
    Acknowledge,
    Attend,
    EndBoothTest,
    EndMaintenance,
    IncidentEvent,
    Resolve,
    SetDuty,
    SiteEvent,
    StartBoothTest,
    StartMaintenance,
)
from monitor.core.incident import IllegalTransition, OutcomeRecorded
from monitor.core.roster import UnknownResponder
from monitor.core.selftest import channel_of
from monitor.core.site import BadRequest, BoothBusy, UnknownBooth, UnknownIncident
from monitor.exits import UNAVAILABLE, OperatorError
from monitor.station import COOKIE, CSRF_HEADER, SESSION_TTL, Session

log = structlog.get_logger(__name__)

API = web.AppKey("api", Api)
MAX_INCIDENTS = 10_000  # the full history is for `boothwatch report`
RESPONDER_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
REASON_MAX = 200
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: the OpenAPI document of every route below (tests/test_openapi.py holds them to it)
OPENAPI = importlib.resources.files("monitor").joinpath("openapi.json").read_bytes()


def routes() -> list[web.RouteDef]:
    """Every route the service answers (the OpenAPI document lists the same)."""
    return [
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics),
        web.get("/api/openapi.json", openapi),
        web.get("/api/booths", booths),
        web.get("/api/incidents", incidents),
        web.post("/api/incidents/{id}/ack", _action("ack")),
        web.post("/api/incidents/{id}/presence", _action("presence")),
        web.post("/api/incidents/{id}/resolve", _action("resolve")),
        web.post("/api/incidents/{id}/outcome", outcome),
        web.get("/api/responders", responders),
        web.post("/api/responders/{id}/duty", duty),
        web.post("/api/booths/{id}/maintenance", maintenance),
        web.post("/api/booths/{id}/maintenance/end", maintenance_end),
        web.get("/api/audit", audit),
        web.get("/api/booths/{id}/test", booth_test),
        web.post("/api/booths/{id}/test", booth_test_start),
        web.post("/api/booths/{id}/test/end", booth_test_end),
        web.get("/ack/{token}", ack_page),
        web.post("/ack/{token}", ack_post),
        web.post("/ack/{token}/outcome", ack_outcome),
        web.post("/board/login", board_login),
        web.post("/board/logout", board_logout),
    ]


def make_app(api: Api) -> web.Application:
    app = web.Application(middlewares=[_guard], client_max_size=64 * 1024)
    app[API] = api
    app.add_routes(routes())
    return app


class ListenFailed(OperatorError):
    """The HTTP address is taken or not this box's: ack links and probes need it."""

    status = UNAVAILABLE


async def serve(api: Api) -> None:
    """Serve until cancelled."""
    runner = web.AppRunner(make_app(api), access_log=None)
    await runner.setup()
    cfg = api.config.http
    site = web.TCPSite(runner, cfg.host, cfg.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        address = f"[{cfg.host}]:{cfg.port}" if ":" in cfg.host else f"{cfg.host}:{cfg.port}"
        raise ListenFailed(f"cannot listen on {address} (http.listen): {exc.strerror or exc}"
                           + (": another program has it (a demo?)"
                              if exc.errno == errno.EADDRINUSE else ""),
                           address=address) from exc
    log.info("http_listening", host=cfg.host, port=cfg.port)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


#: paths under /api/ and /board/ that anyone may reach
OPEN = frozenset({"/api/openapi.json", "/board/login"})
#: the station session of a request that came with one (set by `_guard`)
STATION = web.RequestKey("station", Session)


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`/board` and `/api/...` need the bearer token or a station session (interface 7, 9).

    A request with an `Authorization` header is judged by it alone. A station session's
    POSTs must carry its CSRF token. `/healthz`, `/readyz`, `/metrics` and the ack links
    are open: probes and Prometheus need no login, and an ack link carries its own proof.
    """
    path = request.path
    board = path == "/board" or path.startswith("/board/")
    if not (board or path.startswith("/api/")) or path in OPEN:
        return await handler(request)
    api = request.app[API]
    given = request.headers.get("Authorization")
    if given is not None or (not board and api.token is not None
                             and api.stations.password is None):
        if api.token is not None and given is not None and hmac.compare_digest(
                # surrogateescape: aiohttp keeps bytes that are not UTF-8 as surrogates
                given.encode("utf-8", "surrogateescape"), f"Bearer {api.token}".encode()):
            return await handler(request)
        return _error(401, "missing or wrong bearer token",
                      headers={"WWW-Authenticate": "Bearer"})
    session = api.stations.session(request.cookies.get(COOKIE), api.clock())
    if session is not None:
        if request.method not in ("GET", "HEAD") and not api.stations.csrf_ok(
                session, request.headers.get(CSRF_HEADER)):
            return _error(403, f"a station's POST needs its {CSRF_HEADER} header")
        request[STATION] = session
        return await handler(request)
    if board:
        if api.stations.password is None:
            return _html(STATION_TEXT["unset_title"], STATION_TEXT["unset"], 403)
        if path == "/board" and request.method in ("GET", "HEAD"):
            return _login_form()
        return _error(401, "log in at /board first")
    if not api.guarded:
        return await handler(request)
    return _error(401, "log in at /board, or send the bearer token",
                  headers={"WWW-Authenticate": "Bearer"})


def _error(status: int, message: str, **kw: Any) -> web.Response:
    return web.json_response({"error": message}, status=status, **kw)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    reasons = await request.app[API].readiness()
    return web.json_response({"ready": not reasons, "reasons": reasons},
                             status=503 if reasons else 200)


async def metrics(request: web.Request) -> web.Response:
    body = await request.app[API].render_metrics()
    return web.Response(body=body, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI, content_type="application/json")


async def booths(request: web.Request) -> web.Response:
    return web.json_response(request.app[API].booths())


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
    items, total = await request.app[API].incidents(state == "open", limit)
    # newest first; the header says when there are more than were returned
    return web.json_response(items, headers={"X-Total-Count": str(total)})


def _action(kind: str) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        responder = _short_id(body, "responder", "a responder id is required")
        if isinstance(responder, web.Response):
            return responder
        incident = request.match_info["id"]
        event: IncidentEvent
        if kind == "ack":
            event = Acknowledge(incident, responder, via="api")
        elif kind == "presence":
            event = Attend(incident, responder, via="api")
        else:
            problem = _outcome_problem(body, required=False)
            if problem:
                return _error(400, problem)
            event = Resolve(incident, responder, body.get("outcome"), via="api",
                            note=body.get("note"))
        return await _apply(request, event)

    return handle


def _outcome_problem(body: dict[str, Any], required: bool) -> str | None:
    outcome, note = body.get("outcome"), body.get("note")
    if outcome is None and not required:
        if note is not None:
            return "note: only with an outcome"
        return None
    if outcome not in OUTCOMES:
        return f"outcome: one of {', '.join(OUTCOMES)}"
    if note is not None and (not isinstance(note, str) or len(note) > NOTE_MAX):
        return f"note: text of at most {NOTE_MAX} characters"
    return None


def _short_id(body: dict[str, Any], key: str, what: str,
              default: str | None = None) -> str | web.Response:
    """A responder-like id from the body, or the 400 that names the field."""
    value = body.get(key, default)
    if not isinstance(value, str) or not RESPONDER_RE.match(value):
        return _error(400, f"{key}: {what}")
    return value


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # RecursionError: nested too deeply to parse
        return _error(400, "body must be JSON")
    if not isinstance(body, dict):
        return _error(400, "body must be a JSON object")
    return body


async def _record_outcome(api: Api, incident: str, responder: str, body: dict[str, Any],
                          via: str) -> tuple[int, dict[str, Any] | str]:
    """Resolve an open incident with its outcome, or add the outcome to a resolved one."""
    try:
        view = await api.record_outcome(incident, responder, body["outcome"], body.get("note"),
                                        via)
    except UnknownIncident:
        return 404, "unknown incident"
    except OutcomeRecorded:
        return 409, "an outcome is already recorded"
    except (IncidentGone, IllegalTransition):
        return 409, "incident changed meanwhile; try again"
    return 200, api.incident_json(view)


async def outcome(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    responder = _short_id(body, "responder", "a responder id is required")
    if isinstance(responder, web.Response):
        return responder
    problem = _outcome_problem(body, required=True)
    if problem:
        return _error(400, problem)
    status, result = await _record_outcome(request.app[API], request.match_info["id"],
                                           responder, body, "api")
    if isinstance(result, str):
        return _error(status, result)
    return web.json_response(result)


# --- duty and maintenance ----------------------------------------------------------------


async def responders(request: web.Request) -> web.Response:
    return web.json_response(request.app[API].responders())


async def duty(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    on = body.get("on")
    if not isinstance(on, bool):
        return _error(400, "on: true (check in) or false (check out)")
    responder = request.match_info["id"]
    by = _short_id(body, "by", "who made the change (a short id)", default=responder)
    if isinstance(by, web.Response):
        return by
    api = request.app[API]
    problem = await _site_act(api, SetDuty(responder, on, by=by, via="api"))
    if problem is not None:
        return problem
    return web.json_response(next(r for r in api.responders() if r["id"] == responder))


async def _site_act(api: Api, event: SiteEvent) -> web.Response | None:
    try:
        await api.act_site(event)
    except UnknownResponder:
        return _error(404, "unknown responder")
    except UnknownBooth:
        return _error(404, "unknown booth")
    except BoothBusy as exc:
        return _error(409, str(exc))
    except BadRequest as exc:
        return _error(400, str(exc))
    except IllegalBoothTransition as exc:
        return _error(409, "the booth is already in maintenance; end it first"
                      if exc.what is Maintain.START else "the booth is not in maintenance")
    return None


def _parse_until(value: object, now: float) -> float | None:
    """An ISO 8601 time with its offset, or a duration from now ("2h", 3600)."""
    if isinstance(value, str) and ("T" in value or "-" in value):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return None
        return when.timestamp() if when.tzinfo is not None else None
    try:
        return now + parse_duration(value)
    except ValueError:
        return None


async def maintenance(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    api = request.app[API]
    until = _parse_until(body.get("until"), api.clock())
    if until is None:
        return _error(400, 'until: an ISO 8601 time with offset ("2026-11-23T22:00:00Z") or '
                      'a duration ("2h")')
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > REASON_MAX:
        return _error(400, f"reason: why (text of 1 to {REASON_MAX} characters)")
    by = _short_id(body, "by", "who takes the booth out (a short id)")
    if isinstance(by, web.Response):
        return by
    booth = request.match_info["id"]
    problem = await _site_act(api, StartMaintenance(booth, until, reason.strip(), by))
    return problem or web.json_response(api.booth(booth))


async def maintenance_end(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    by = _short_id(body, "by", "who puts the booth back (a short id)")
    if isinstance(by, web.Response):
        return by
    api = request.app[API]
    booth = request.match_info["id"]
    problem = await _site_act(api, EndMaintenance(booth, by))
    return problem or web.json_response(api.booth(booth))


# --- device self-tests (boothwatch test-booth) ----------------------------------------


async def booth_test(request: web.Request) -> web.Response:
    found = request.app[API].booth_test(request.match_info["id"])
    return _error(404, "no test of this booth since the start") if found is None else (
        web.json_response(found))


async def booth_test_start(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    tester = body.get("tester")
    if tester is not None:
        tester = _short_id(body, "tester", "the responder id of the person testing")
        if isinstance(tester, web.Response):
            return tester
    api = request.app[API]
    until = _parse_until(body.get("until", "10m"), api.clock())
    if until is None:
        return _error(400, 'until: an ISO 8601 time with offset or a duration ("10m")')
    booth = request.match_info["id"]
    problem = await _site_act(api, StartBoothTest(booth, until, tester))
    return problem or web.json_response(api.booth_test(booth))


async def booth_test_end(request: web.Request) -> web.Response:
    api = request.app[API]
    booth = request.match_info["id"]
    problem = await _site_act(api, EndBoothTest(booth))
    return problem or web.json_response(api.booth_test(booth))


async def audit(request: web.Request) -> web.Response:
    try:
        limit = int(request.query.get("limit", "500"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_INCIDENTS:
        return _error(400, f"limit must be a whole number from 1 to {MAX_INCIDENTS}")
    entries = await request.app[API].audit(limit, request.query.get("subject") or None)
    return web.json_response(entries)


async def _apply(request: web.Request, event: IncidentEvent) -> web.Response:
    api = request.app[API]
    try:
        view = await api.act(event)
    except UnknownIncident:
        return _error(404, "unknown incident")
    except (IncidentGone, IllegalTransition):
        return _error(409, "incident is resolved")
    return web.json_response(api.incident_json(view))


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
                 "Open the newest page you received, or the "
                 "<a href=\"/board\">station board</a>.</p>", 403)


def _link(request: web.Request) -> AckLink:
    return request.app[API].link(request.match_info["token"])


async def _incident_data(api: Api, incident: str) -> dict[str, Any] | None:
    view = await api.find(incident)
    return None if view is None else api.incident_json(view)


def _booth(data: dict[str, Any]) -> str:
    return html.escape(str(data.get("booth_name") or data["booth"]))


async def ack_page(request: web.Request) -> web.Response:
    api = request.app[API]
    try:
        link = _link(request)
    except InvalidToken as exc:
        return _bad_token(exc.reason)
    channel = channel_of(link.incident)
    if channel is not None:
        return _html("boothwatch self-test", (
            f"<h1>Self-test</h1><p>A test page from boothwatch to "
            f"{html.escape(link.responder)} on {html.escape(channel)}. No booth needs you: "
            "tap below so the staff know this channel reaches you.</p><form method=\"post\">"
            "<button type=\"submit\">It reached me</button></form>"))
    data = await _incident_data(api, link.incident)
    if data is None:
        return _not_on_record(api, link)
    use = api.used(link)
    if use is not None:
        return _used(request, data, use, 200)
    booth = _booth(data)
    if data["state"] == "resolved":
        return _html(f"{booth}: resolved", f"<h1>{booth}</h1>{_after(request, data)}")
    priority = html.escape(str(data.get("priority", "")))
    triggers = ", ".join(html.escape(t) for t in data.get("triggers", []))
    ack_by = data.get("acknowledged_by")
    already = (f"<p>Already acknowledged by {html.escape(str(ack_by))}.</p>"
               if ack_by and data["state"] != "open" else "")
    going = (f"<form method=\"post\"><button type=\"submit\">I'm going "
             f"({html.escape(link.responder)})</button></form>")
    body = (
        f"<h1>{booth}</h1>"
        f"<p class=\"{priority}\">{priority.upper()} &middot; {triggers}</p>"
        f"<p>State: {html.escape(data['state'])}</p>{already}"
        + (going if data["state"] == "open" else _after(request, data))
    )
    return _html(f"{booth}: acknowledge", body)


def _not_on_record(api: Api, link: AckLink) -> web.Response:
    """The page of a genuine link whose incident was never stored.

    That happens when the service is killed after paging and before committing: on restart
    the device's message is redelivered and the alarm raised again under a new id, paged
    anew. The nurse holding the first page must not meet a dead end, so the page lists the
    unresolved incidents raised since this link was made, each with a fresh link for the
    same responder (a button: nothing acts until they choose). Older incidents are not
    offered: the link vouches for its responder, not for what came before it.
    """
    zone = zoneinfo.ZoneInfo(api.config.site.timezone)
    since = api.raised_since(link.signed_at)
    items = []
    for view in since:
        booth = html.escape(api.booth_name(view.booth))
        at = datetime.fromtimestamp(view.raised_at, zone).strftime("%H:%M:%S")
        triggers = ", ".join(html.escape(t) for t in view.triggers)
        state = ("" if view.state == "open" else
                 f" &middot; {html.escape(view.state)} by "
                 f"{html.escape(str(view.acknowledged_by or ''))}")
        action = html.escape(api.ack_url(view.id, link.responder))
        items.append(
            f"<li><p><b>{booth}</b> &middot; {html.escape(view.priority.upper())} &middot; "
            f"{triggers} &middot; raised {at}{state}</p>"
            f"<form method=\"post\" action=\"{action}\"><button type=\"submit\">"
            f"I'm going to {booth} ({html.escape(link.responder)})</button></form></li>")
    log.warning("ack_link_incident_not_on_record", incident=link.incident,
                offered=[v.id for v in since])
    offer = (f"<p>Raised since this page was sent:</p><ul>{''.join(items)}</ul>" if items
             else "<p>Nothing has been raised since. The "
                  "<a href=\"/board\">station board</a> shows every booth.</p>")
    return _html("Incident not on record", (
        "<h1>This incident is not on record</h1><p>boothwatch restarted just after paging "
        "you, before it could record the incident. The alarm was raised again and paged "
        f"anew.</p>{offer}"), 404)


def _after(request: web.Request, data: dict[str, Any]) -> str:
    """What the page offers once someone is going: the outcome form, until one is recorded."""
    if data["state"] != "resolved":
        return "<p>When you are done:</p>" + _outcome_form(request)
    if data.get("outcome") in OUTCOMES:
        return "<p>This incident is resolved.</p>"
    return "<p>This incident is resolved. What happened?</p>" + _outcome_form(request)


def _used(request: web.Request, data: dict[str, Any], use: Use, status: int) -> web.Response:
    """The page of a link that already acknowledged: when, how, and the outcome form."""
    api = request.app[API]
    zone = zoneinfo.ZoneInfo(api.config.site.timezone)
    at = datetime.fromtimestamp(use.at, zone)
    today = datetime.fromtimestamp(api.clock(), zone).date() == at.date()
    when = at.strftime("%H:%M:%S" if today else "%d %b %H:%M:%S")
    how = {"ntfy": "the Acknowledge button of the notification",
           "link": "this page"}.get(use.via, use.via)
    booth = _booth(data)
    reopened = ("<p>The incident is open again: use the newest page you received, or the "
                "<a href=\"/board\">station board</a>.</p>" if data["state"] == "open" else "")
    return _html(f"{booth}: link already used", (
        f"<h1>{booth}</h1><p>This link was already used: {html.escape(use.responder)} "
        f"acknowledged at {html.escape(when)}, with {html.escape(how)}. A link acknowledges "
        f"once, so nothing was changed now.</p><p>State: {html.escape(data['state'])}</p>"
        f"{reopened}{_after(request, data)}"), status)


async def ack_post(request: web.Request) -> web.Response:
    api = request.app[API]
    try:
        link = _link(request)
    except InvalidToken as exc:
        return _bad_token(exc.reason)
    # the ntfy Acknowledge button adds ?via=ntfy so the timeline says where the tap came from
    via = "ntfy" if request.query.get("via") == "ntfy" else "link"
    if channel_of(link.incident) is not None:
        return _answer_test(api, link, via)
    used = await api.claim(link, via)
    if used is not None:
        data = await _incident_data(api, link.incident)
        if data is None:
            return _html("Unknown incident", "<h1>Unknown incident</h1>", 404)
        return _used(request, data, used, 403)
    if not api.is_open(link.incident) and not await api.on_record(link.incident):
        return _not_on_record(api, link)
    going_to = api.open_view(link.incident)
    response = await _apply(request, Acknowledge(link.incident, link.responder, via=via))
    if response.status != 200:
        text = {404: "Unknown incident", 409: "This incident is already resolved"}
        return _html("Not acknowledged", f"<h1>{text.get(response.status, 'Error')}</h1>",
                     response.status)
    booth = html.escape(api.booth_name(going_to.booth) if going_to else "the booth")
    return _html("Acknowledged", f"<h1>Acknowledged</h1><p>You are going to {booth}. "
                 "Press presence at the booth when you arrive.</p>"
                 f"<p>When you are done:</p>{_outcome_form(request)}")


def _answer_test(api: Api, link: AckLink, via: str) -> web.Response:
    """A self-test's link tapped: its channel verified (again, if tapped twice: harmless)."""
    channel = api.answer_test(link, via)
    if channel is None:
        return _html("Unknown self-test", "<h1>Unknown self-test</h1><p>This test page is "
                     "from a configuration that has changed since; nothing was recorded.</p>",
                     404)
    return _html("Self-test confirmed", f"<h1>Confirmed</h1><p>{html.escape(channel)} "
                 "reaches you. Thank you.</p>")


OUTCOME_LABELS = {
    "ok": "Person OK",
    "overdose_naloxone": "Overdose: naloxone given",
    "overdose_oxygen": "Overdose: oxygen given",
    "emergency_services": "Emergency services called",
    "false_alarm": "False alarm",
    "no_one_there": "No one there",
    "other": "Other",
}
assert set(OUTCOME_LABELS) == set(OUTCOMES)
def _outcome_form(request: web.Request) -> str:
    action = (f"{request.app[API].config.http.public_url}/ack/"
              f"{request.match_info['token']}/outcome")
    return f"<form method=\"post\" action=\"{html.escape(action)}\">" + _OUTCOME_FIELDS


_OUTCOME_FIELDS = (
    "".join(f"<p><label><input type=\"radio\" name=\"outcome\" value=\"{key}\" required> "
              f"{html.escape(label)}</label></p>" for key, label in OUTCOME_LABELS.items())
    + f"<p><textarea name=\"note\" maxlength=\"{NOTE_MAX}\" rows=\"3\" "
    "placeholder=\"Note (optional)\" style=\"width:100%\"></textarea></p>"
    "<button type=\"submit\">Resolve with this outcome</button>"
    "</form>"
)


async def ack_outcome(request: web.Request) -> web.Response:
    """The outcome form of the ack page: resolves (or completes) the incident.

    A used link still records the outcome: that is once per incident anyway (409 after).
    """
    api = request.app[API]
    try:
        link = _link(request)
    except InvalidToken as exc:
        return _bad_token(exc.reason)
    try:
        form = await request.post()
    except ValueError:  # e.g. multipart without a boundary: the browser never sends that
        return _html("Not saved", "<h1>Not saved</h1><p>The form did not arrive whole.</p>",
                     400)
    body: dict[str, Any] = {"outcome": form.get("outcome")}
    note = form.get("note")
    if isinstance(note, str) and note.strip():
        body["note"] = note.strip()
    problem = _outcome_problem(body, required=True)
    if problem:
        return _html("Not saved", f"<h1>Not saved</h1><p>{html.escape(problem)}</p>", 400)
    status, result = await _record_outcome(api, link.incident, link.responder, body, "link")
    if isinstance(result, str):
        return _html("Not saved", f"<h1>Not saved</h1><p>{html.escape(result)}</p>", status)
    label = html.escape(OUTCOME_LABELS[body["outcome"]])
    return _html("Resolved", f"<h1>Resolved</h1><p>{label}. Thank you.</p>")


# --- the station login ------------------------------------------------------------------

STATION_TEXT = {
    "title": "boothwatch: station login",
    "heading": "Station board",
    "prompt": "Station password",
    "submit": "Log in",
    "wrong": "Wrong password.",
    "limited": "Too many wrong passwords: try again in {seconds} s.",
    "unset_title": "Board not set up",
    "unset": ("<h1>The station board has no password yet</h1><p>Set "
              "<code>BOOTHWATCH_BOARD_PASSWORD</code> in the service's environment file and "
              "restart it.</p>"),
}


def _login_form(problem: str = "", status: int = 200, **kw: Any) -> web.Response:
    t = STATION_TEXT
    error = f'<p class="high" role="alert">{html.escape(problem)}</p>' if problem else ""
    body = (f"<h1>{html.escape(t['heading'])}</h1>{error}"
            '<form method="post" action="/board/login">'
            f'<p><label for="password">{html.escape(t["prompt"])}</label><br>'
            '<input id="password" name="password" type="password" autocomplete="current-password"'
            ' required autofocus style="font-size:1.4rem;width:100%"></p>'
            f'<button type="submit">{html.escape(t["submit"])}</button></form>')
    response = _html(t["title"], body, status)
    response.headers.update(kw.get("headers", {}))
    return response


def _same_origin(request: web.Request) -> bool:
    """A login posted by a page of another site (login CSRF) is refused."""
    origin = request.headers.get("Origin")
    if origin is None:  # browsers send it with every POST; curl and scripts need not
        return True
    public = urllib.parse.urlsplit(request.app[API].config.http.public_url).netloc
    return origin.split("://", 1)[-1] in (request.host, public)


async def board_login(request: web.Request) -> web.Response:
    api = request.app[API]
    stations = api.stations
    if stations.password is None:
        return _html(STATION_TEXT["unset_title"], STATION_TEXT["unset"], 403)
    if not _same_origin(request):
        return _error(403, "a login from another site's page is refused")
    now = api.clock()
    address = _client(request)
    wait = stations.retry_after(address, now)
    if wait > 0:
        seconds = math.ceil(wait)
        api.metrics.station_login("limited")
        return _login_form(STATION_TEXT["limited"].format(seconds=seconds), 429,
                           headers={"Retry-After": str(seconds)})
    try:
        form = await request.post()
    except ValueError as exc:  # a multipart body without its boundary, a broken form
        return _error(400, f"not a form: {exc}")
    password = form.get("password")
    session = stations.login(password, now) if isinstance(password, str) else None
    if session is None:
        stations.failed(address, now)
        api.metrics.station_login("wrong")
        log.warning("station_login_refused", address=address)
        return _login_form(STATION_TEXT["wrong"], 401)
    api.metrics.station_login("ok")
    log.info("station_login", address=address)
    response = _see_board()
    _set_cookie(request, response, session.cookie)
    return response


def _client(request: web.Request) -> str:
    """The address a login came from. Behind a reverse proxy on this box every request
    comes from loopback: the proxy's X-Forwarded-For names the client (Caddy and nginx, as
    docs/install/proxy.md sets them up, replace what the client sent), so one guesser on
    the LAN is not every station's lockout."""
    peer = request.remote or "unknown"
    forwarded = request.headers.get("X-Forwarded-For")
    try:
        local = ipaddress.ip_address(peer).is_loopback
    except ValueError:
        local = False
    if local and forwarded:
        return forwarded.rsplit(",", 1)[-1].strip()[:64]
    return peer


def _see_board() -> web.Response:
    return web.Response(status=303, headers={"Location": "/board"})


async def board_logout(request: web.Request) -> web.Response:
    response = _see_board()
    response.del_cookie(COOKIE, path="/")
    return response


def _set_cookie(request: web.Request, response: web.StreamResponse, value: str) -> None:
    secure = request.secure or request.app[API].config.http.public_url.startswith("https:")
    response.set_cookie(COOKIE, value, max_age=int(SESSION_TTL), path="/", httponly=True,
                        samesite="Strict", secure=secure)
