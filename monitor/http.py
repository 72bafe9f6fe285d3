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
from typing import Any, TypeVar

import structlog
from aiohttp import web

from alerts.text import PRIORITY_LABELS
from alerts.tokens import AckLink, InvalidToken, Reason, Use
from monitor.api import API, Api, IncidentGone
from monitor.board import http as board
from monitor.core.booth import IllegalBoothTransition, Maintain, SessionMark
from monitor.core.durations import parse_duration
from monitor.core.events import (
    MAX_DOSES,
    NOTE_MAX,
    OUTCOMES,
    STEPS,
    Acknowledge,
    Attend,
    EndBoothTest,
    EndMaintenance,
    IncidentEvent,
    MarkSession,
    RecordStep,
    Resolve,
    SetDuty,
    SiteEvent,
    StartBoothTest,
    StartMaintenance,
    parse_step,
)
from monitor.core.incident import IllegalTransition, OutcomeRecorded, Trigger
from monitor.core.roster import UnknownResponder
from monitor.core.selftest import channel_of
from monitor.core.settings import RISKS, ROUTES, HttpConfig
from monitor.core.site import BadRequest, BoothBusy, UnknownBooth, UnknownIncident
from monitor.core.words import N_, reasons
from monitor.exits import UNAVAILABLE, OperatorError
from monitor.i18n import Language
from monitor.station import COOKIE, CSRF_HEADER, STATION, set_cookie

log = structlog.get_logger(__name__)

MAX_INCIDENTS = 10_000  # the full history is for `boothwatch report`
RESPONDER_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
REASON_MAX = 200
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_T = TypeVar("_T")
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
        web.post("/api/incidents/{id}/steps", steps),
        web.get("/api/responders", responders),
        web.post("/api/responders/{id}/duty", duty),
        web.post("/api/booths/{id}/maintenance", maintenance),
        web.post("/api/booths/{id}/maintenance/end", maintenance_end),
        web.post("/api/booths/{id}/session", session),
        web.get("/api/audit", audit),
        web.get("/api/booths/{id}/test", booth_test),
        web.post("/api/booths/{id}/test", booth_test_start),
        web.post("/api/booths/{id}/test/end", booth_test_end),
        web.get("/ack/{token}", ack_page),
        web.post("/ack/{token}", ack_post),
        web.post("/ack/{token}/outcome", ack_outcome),
        web.post("/ack/{token}/presence", ack_presence),
        web.post("/ack/{token}/steps", ack_step),
        web.post("/board/login", board_login),
        web.post("/board/logout", board_logout),
        *board.routes(),
    ]


def make_app(api: Api) -> web.Application:
    app = web.Application(middlewares=[_guard], client_max_size=64 * 1024)
    app[API] = api
    app.add_routes(routes())
    app.on_shutdown.append(_end_board_streams)
    return app


async def _end_board_streams(app: web.Application) -> None:
    """A board's stream never ends by itself: without this, stopping waits out aiohttp's
    shutdown timeout (60 s) for every open board."""
    app[API].board.close()


class ListenFailed(OperatorError):
    """The HTTP address is taken or not this box's: ack links and probes need it."""

    status = UNAVAILABLE


async def serve(api: Api) -> None:
    """Serve until cancelled."""
    runner = web.AppRunner(make_app(api), access_log=None)
    await runner.setup()
    await listen(runner, api.config.http)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


async def listen(runner: web.AppRunner, cfg: HttpConfig) -> None:
    """Listen on ``[http] listen`` (the full service, or a standby's few answers); the
    runner cleaned up and `ListenFailed` if the address cannot be had."""
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


#: paths under /api/ and /board/ that anyone may reach
OPEN = frozenset({"/api/openapi.json", "/board/login"})


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
            return _unset(request)
        if path == "/board" and request.method in ("GET", "HEAD"):
            return _login_form(request)
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
    # the API answers in English; the ack page says these in the site's language
    except UnknownIncident:
        return 404, N_("unknown incident")
    except OutcomeRecorded:
        return 409, N_("an outcome is already recorded")
    except (IncidentGone, IllegalTransition):
        return 409, N_("incident changed meanwhile; try again")
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


async def steps(request: web.Request) -> web.Response:
    """A protocol step: ``{"responder", "step", "count"?, "note"?}``."""
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    responder = _short_id(body, "responder", "a responder id is required")
    if isinstance(responder, web.Response):
        return responder
    if "count" in body and body["count"] is None:  # null is not "no count" here
        return _error(400, f"count: a whole number of doses from 1 to {MAX_DOSES}")
    try:
        step = parse_step(body.get("step"), body.get("count"), body.get("note"))
    except ValueError as exc:
        return _error(400, str(exc))
    return await _apply(request, RecordStep(request.match_info["id"], responder, step,
                                            body.get("count"), body.get("note"), via="api"))


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
        if exc.what is SessionMark.RISK:
            return _error(409, "no session under way at the booth: mark it once the person "
                          "is in the booth")
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
    if request.can_read_body:  # none is needed; one that is not a JSON object is refused
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
    problem = await _site_act(api, EndBoothTest(booth))
    return problem or web.json_response(api.booth_test(booth))


#: what marking a session takes: how closely to watch it, never who is in the booth
SESSION_FIELDS = ("risk", "route", "by")


async def session(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    unknown = sorted(set(body) - set(SESSION_FIELDS))
    if unknown:
        return _error(400, f"{unknown[0]}: unknown field; a session takes only "
                      f"{', '.join(SESSION_FIELDS)}, never who is in the booth")
    risk, route = body.get("risk"), body.get("route")
    if risk not in RISKS:
        return _error(400, f"risk: {' or '.join(RISKS)}")
    if route is not None and route not in ROUTES:
        return _error(400, f"route: one of {', '.join(ROUTES)}, or left out")
    by = _short_id(body, "by", "who marks the session (a short id)", default="api")
    if isinstance(by, web.Response):
        return by
    api = request.app[API]
    booth = request.match_info["id"]
    problem = await _site_act(api, MarkSession(booth, risk, by, route))
    return problem or web.json_response(api.booth(booth))


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
# What a nurse reads, in the site's language (monitor.i18n): every text is a message id
# said through `_` and escaped once put together; the HTML around it is no message.

PAGE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; padding: 1.5rem; background: #111;
       color: #eee; }}
h1 {{ font-size: 1.6rem; margin: 0 0 .5rem; }}
p {{ font-size: 1.1rem; }}
.high {{ color: #ff6b6b; }} .medium {{ color: #ffd166; }} .low {{ color: #9ad; }}
button {{ font-size: 1.4rem; padding: 1rem 2rem; width: 100%; border: 0; border-radius: .5rem;
         background: #2a9d8f; color: white; margin-top: 1rem; }}
.steps {{ display: flex; flex-wrap: wrap; gap: .5rem; margin-top: .5rem; }}
.steps button {{ flex: 1 1 45%; width: auto; font-size: 1.1rem; padding: .8rem .5rem;
                margin-top: 0; background: #3a506b; }}
.done {{ color: #8fd694; }}
</style></head>
<body>{body}</body></html>
"""

TOKEN_PROBLEMS: dict[Reason, str] = {
    "forged": N_("It was not made by this boothwatch."),
    "expired": N_("It has expired."),
    "malformed": N_("It is incomplete."),
}
#: an incident's state as the page names it
STATES = {"open": N_("open"), "acknowledged": N_("acknowledged"),
          "attended": N_("someone at the booth"), "resolved": N_("resolved")}
#: how a used link acknowledged, by the `via` of its use
VIAS = {"ntfy": N_("the Acknowledge button of the notification"), "link": N_("this page")}
OUTCOME_LABELS = {
    "ok": N_("Person OK"),
    "overdose_naloxone": N_("Overdose: naloxone given"),
    "overdose_oxygen": N_("Overdose: oxygen given"),
    "emergency_services": N_("Emergency services called"),
    "false_alarm": N_("False alarm"),
    "no_one_there": N_("No one there"),
    "other": N_("Other"),
}
assert set(OUTCOME_LABELS) == set(OUTCOMES)


def _language(request: web.Request) -> Language:
    return request.app[API].language


def _html(request: web.Request, title: str, body: str, status: int = 200) -> web.Response:
    """The page; `title` is plain text, `body` HTML."""
    text = PAGE.format(lang=_language(request).tag, title=_text(title), body=body)
    return web.Response(text=text, content_type="text/html", status=status,
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


def _text(text: str) -> str:
    """Plain text as the content of an element (quotes stay as they read: "I'm going")."""
    return html.escape(text, quote=False)


def _with(text: str, **values: str) -> str:
    """A sentence with HTML in it: its text escaped, then each value (HTML) put in."""
    return _text(text) % values


def _h1(text: str) -> str:
    return f"<h1>{_text(text)}</h1>"


def _p(text: str, css: str | None = None) -> str:
    """A paragraph of plain text."""
    return (f"<p class=\"{html.escape(css)}\">{_text(text)}</p>" if css
            else f"<p>{_text(text)}</p>")


def _button(text: str, action: str | None = None) -> str:
    """A form of one button that POSTs (to the page itself without `action`)."""
    target = f" action=\"{html.escape(action)}\"" if action else ""
    return (f"<form method=\"post\"{target}><button type=\"submit\">{_text(text)}"
            "</button></form>")


def _board(request: web.Request) -> str:
    """The link to the station board, named in the site's language."""
    name = _language(request).gettext("station board")
    return f"<a href=\"/board\">{_text(name)}</a>"


def _bad_token(request: web.Request, reason: Reason) -> web.Response:
    _ = _language(request).gettext
    return _html(request, _("Link not valid"), (
        _h1(_("This link is not valid"))
        + "<p>" + _text(_(TOKEN_PROBLEMS[reason])) + " "
        + _with(_("Open the newest page you received, or the %(board)s."),
                board=_board(request)) + "</p>"), 403)


def _link(request: web.Request) -> AckLink:
    return request.app[API].link(request.match_info["token"])


async def _incident_data(api: Api, incident: str) -> dict[str, Any] | None:
    view = await api.find(incident)
    return None if view is None else api.incident_json(view)


def _booth(data: dict[str, Any]) -> str:
    return str(data.get("booth_name") or data["booth"])


def _state(language: Language, data: dict[str, Any]) -> str:
    state = str(data["state"])
    return language.gettext("State: %(state)s") % {
        "state": language.gettext(STATES[state]) if state in STATES else state}


def _what(api: Api, language: Language, booth: str, triggers: list[str], risk: object) -> str:
    """The page's words for the triggers ("call button pressed; no movement for 3m"), by
    the thresholds of the session's risk."""
    config = api.config.booth(booth)
    if config is None or not set(triggers) <= {t.value for t in Trigger}:
        return ", ".join(triggers)  # a booth taken out of the config since: its ids
    parts = reasons(config, [Trigger(t) for t in triggers],
                    risk="high" if risk == "high" else "standard")
    return "; ".join(language.say(part) for part in parts)


def _loudness(language: Language, priority: str) -> str:
    label = PRIORITY_LABELS.get(priority)
    return language.gettext(label) if label else priority.upper()


async def ack_page(request: web.Request) -> web.Response:
    api = request.app[API]
    language = _language(request)
    _ = language.gettext
    try:
        link = _link(request)
    except InvalidToken as exc:
        return _bad_token(request, exc.reason)
    channel = channel_of(link.incident)
    if channel is not None:
        return _html(request, _("boothwatch self-test"), _h1(_("Self-test")) + _p(
            _("A test page from boothwatch to %(who)s on %(channel)s. No booth needs you: "
              "tap below so the staff know this channel reaches you.")
            % {"who": api.responder_name(link.responder), "channel": channel})
            + _button(_("It reached me")))
    data = await _incident_data(api, link.incident)
    if data is None:
        return _not_on_record(request, link)
    use = api.used(link)
    if use is not None:
        return _used(request, data, use, 200)
    booth = _booth(data)
    h1 = _h1(booth)
    if data["state"] == "resolved":
        return _html(request, _("%(booth)s: resolved") % {"booth": booth},
                     h1 + _after(request, data))
    priority = str(data.get("priority", ""))
    what = _what(api, language, data["booth"], list(data.get("triggers", [])),
                 data.get("risk"))
    ack_by = data.get("acknowledged_by")
    already = (_p(_("Already acknowledged by %(who)s.") % {"who": ack_by})
               if ack_by and data["state"] != "open" else "")
    if data["state"] == "open" and data["reopened"]:
        already = _p(_("Re-opened: nobody reached the booth after it was acknowledged."))
    body = (h1 + _p(f"{_loudness(language, priority)} · {what}", priority)
            + _p(_state(language, data)) + already
            + (_button(_("I'm going (%(who)s)") % {"who": link.responder})
               if data["state"] == "open" else _after(request, data)))
    return _html(request, _("%(booth)s: acknowledge") % {"booth": booth}, body)


def _not_on_record(request: web.Request, link: AckLink) -> web.Response:
    """The page of a genuine link whose incident was never stored.

    That happens when the service is killed after paging and before committing: on restart
    the device's message is redelivered and the alarm raised again under a new id, paged
    anew. The nurse holding the first page must not meet a dead end, so the page lists the
    unresolved incidents raised since this link was made, each with a fresh link for the
    same responder (a button: nothing acts until they choose). Older incidents are not
    offered: the link vouches for its responder, not for what came before it.
    """
    api = request.app[API]
    language = _language(request)
    _ = language.gettext
    zone = zoneinfo.ZoneInfo(api.config.site.timezone)
    since = api.raised_since(link.signed_at)
    items = []
    for view in since:
        booth = api.booth_name(view.booth)
        raised = _("raised %(time)s") % {
            "time": language.time(datetime.fromtimestamp(view.raised_at, zone), day=False)}
        line = [booth, _loudness(language, view.priority),
                _what(api, language, view.booth, list(view.triggers), view.risk), raised]
        if view.state != "open":
            line.append(_("%(state)s by %(who)s") % {
                "state": _(STATES.get(view.state, view.state)),
                "who": view.acknowledged_by or ""})
        items.append(
            f"<li><p><b>{_text(booth)}</b> &middot; "
            + " &middot; ".join(_text(part) for part in line[1:]) + "</p>"
            + _button(_("I'm going to %(booth)s (%(who)s)") % {
                "booth": booth, "who": link.responder}, api.ack_url(view.id, link.responder))
            + "</li>")
    log.warning("ack_link_incident_not_on_record", incident=link.incident,
                offered=[v.id for v in since])
    offer = (_p(_("Raised since this page was sent:")) + f"<ul>{''.join(items)}</ul>" if items
             else "<p>" + _with(_("Nothing has been raised since. The %(board)s shows every "
                                  "booth."), board=_board(request)) + "</p>")
    return _html(request, _("Incident not on record"), (
        _h1(_("This incident is not on record"))
        + _p(_("boothwatch restarted just after paging you, before it could record the "
               "incident. The alarm was raised again and paged anew.")) + offer), 404)


def _after(request: web.Request, data: dict[str, Any]) -> str:
    """What the page offers once someone is going: "I'm at the booth", the protocol steps
    and the outcome form; once resolved, the steps taken and the outcome form until an
    outcome is recorded."""
    _ = _language(request).gettext
    if data["state"] != "resolved":
        return (_presence_form(request, data) + _steps_section(request, data)
                + _p(_("When you are done:")) + _outcome_form(request))
    taken = _steps_taken(request, data)
    if data.get("outcome") in OUTCOMES:
        return taken + _p(_("This incident is resolved."))
    return taken + _p(_("This incident is resolved. What happened?")) + _outcome_form(request)


def _ack_action(request: web.Request, what: str) -> str:
    """The address a form of the ack page posts to (`what`: outcome, presence, steps)."""
    return (f"{request.app[API].config.http.public_url}/ack/"
            f"{request.match_info['token']}/{what}")


def _clock(request: web.Request, at: str) -> str:
    """An API time as the site's wall clock."""
    zone = zoneinfo.ZoneInfo(request.app[API].config.site.timezone)
    return _language(request).time(datetime.fromisoformat(at).astimezone(zone), day=False)


def _presence_form(request: web.Request, data: dict[str, Any]) -> str:
    """The "I'm at the booth" button (presence) until someone is there; then who and when."""
    _ = _language(request).gettext
    if data["presence_at"] is not None:
        return _p(_("At the booth: %(who)s since %(time)s.") % {
            "who": data["presence_by"], "time": _clock(request, data["presence_at"])})
    return _button(_("I'm at the booth"), _ack_action(request, "presence"))


STEP_LABELS = {
    "knocked": N_("Knocked"),
    "answered": N_("Person answered"),
    "entered": N_("Entered the booth"),
    "naloxone": N_("Naloxone given"),
    "oxygen": N_("Oxygen given"),
    "ems_called": N_("Emergency services called"),
    "ems_arrived": N_("Emergency services arrived"),
    "note": N_("Note"),
}
assert tuple(STEP_LABELS) == STEPS


def _step_text(request: web.Request, step: dict[str, Any]) -> str:
    """One recorded step as the list shows it: 20:15:31 Naloxone given (doses: 2), ana."""
    _ = _language(request).gettext
    what = _(STEP_LABELS[step["step"]])
    if step.get("count") is not None:
        what = _("%(step)s (doses: %(count)d)") % {"step": what, "count": step["count"]}
    if step.get("note"):
        what = _("%(step)s: %(note)s") % {"step": what, "note": step["note"]}
    # TRANSLATORS: a protocol step in the ack page's list: when, what, who recorded it
    return _("%(time)s %(step)s, %(who)s") % {
        "time": _clock(request, step["at"]), "step": what, "who": step["responder"]}


def _steps_taken(request: web.Request, data: dict[str, Any]) -> str:
    if not data["steps"]:
        return ""
    items = "".join(f"<li data-step=\"{html.escape(s['step'])}\">"
                    f"{_text(_step_text(request, s))}</li>" for s in data["steps"])
    return _p(_language(request).gettext("Steps so far:")) + f"<ol>{items}</ol>"


def _steps_section(request: web.Request, data: dict[str, Any]) -> str:
    """What was done so far and a button per protocol step. Each form carries how many steps
    the page showed (``seen``), so a form sent twice records its step once."""
    _ = _language(request).gettext
    start = (f"<form method=\"post\" action=\"{html.escape(_ack_action(request, 'steps'))}\">"
             f"<input type=\"hidden\" name=\"seen\" value=\"{len(data['steps'])}\">")

    def button(step: str, label: str | None = None) -> str:
        return (f"<button type=\"submit\" name=\"step\" value=\"{step}\">"
                f"{_text(label or _(STEP_LABELS[step]))}</button>")

    # the texts are said outside the f-strings: pybabel extracts no call inside one
    doses_label, note_hint, add_note = _("Doses"), _("A note for the record"), _("Add note")
    plain = "".join(button(s) for s in STEPS if s not in ("naloxone", "note"))
    doses = (f"<label>{_text(doses_label)} <input type=\"number\" name=\"count\" value=\"1\" "
             f"min=\"1\" max=\"{MAX_DOSES}\" required "
             "style=\"font-size:1.2rem;width:4rem\"></label>")
    note = (f"<p><textarea name=\"note\" maxlength=\"{NOTE_MAX}\" rows=\"2\" required "
            f"placeholder=\"{html.escape(note_hint)}\" style=\"width:100%\"></textarea></p>")
    return (_steps_taken(request, data) + _p(_("Record what you do, as you do it:"))
            + f"{start}<div class=\"steps\">{plain}</div></form>"
            + f"{start}<div class=\"steps\">{doses}{button('naloxone')}</div></form>"
            + f"{start}{note}<div class=\"steps\">{button('note', add_note)}</div></form>")


def _used(request: web.Request, data: dict[str, Any], use: Use, status: int) -> web.Response:
    """The page of a link that already acknowledged: when, how, and the outcome form."""
    api = request.app[API]
    language = _language(request)
    _ = language.gettext
    zone = zoneinfo.ZoneInfo(api.config.site.timezone)
    at = datetime.fromtimestamp(use.at, zone)
    today = datetime.fromtimestamp(api.clock(), zone).date() == at.date()
    how = _(VIAS[use.via]) if use.via in VIAS else use.via
    booth = _booth(data)
    reopened = ("<p>" + _with(_("The incident is open again: use the newest page you "
                                "received, or the %(board)s."), board=_board(request)) + "</p>"
                if data["state"] == "open" else "")
    return _html(request, _("%(booth)s: link already used") % {"booth": booth}, (
        _h1(booth)
        + _p(_("This link was already used: %(who)s acknowledged at %(time)s, with %(how)s. "
               "A link acknowledges once, so nothing was changed now.") % {
            "who": use.responder, "time": language.time(at, day=not today), "how": how})
        + _p(_state(language, data)) + reopened + _after(request, data)), status)


async def ack_post(request: web.Request) -> web.Response:
    api = request.app[API]
    _ = _language(request).gettext
    try:
        link = _link(request)
    except InvalidToken as exc:
        return _bad_token(request, exc.reason)
    # the ntfy Acknowledge button adds ?via=ntfy so the timeline says where the tap came from
    via = "ntfy" if request.query.get("via") == "ntfy" else "link"
    if channel_of(link.incident) is not None:
        return _answer_test(request, link, via)
    used = await api.claim(link, via)
    if used is not None:
        data = await _incident_data(api, link.incident)
        if data is None:
            return _html(request, _("Unknown incident"),
                         _h1(_("Unknown incident")), 404)
        return _used(request, data, used, 403)
    if not api.is_open(link.incident) and not await api.on_record(link.incident):
        return _not_on_record(request, link)
    acted = await _page_act(request, _("Not acknowledged"), lambda: api.act(
        Acknowledge(link.incident, link.responder, via=via)))
    if isinstance(acted, web.Response):
        return acted
    data = api.incident_json(acted)
    return _html(request, _("Acknowledged"), (
        _h1(_("Acknowledged"))
        + _p(_("You are going to %(booth)s. When you get there, press I'm at the booth: paging "
               "stops for everyone.") % {"booth": _booth(data)})
        + _after(request, data)))


async def _page_act(request: web.Request, title: str,
                    act: Callable[[], Awaitable[_T]]) -> _T | web.Response:
    """Run an ack page's action: what it returned, or the page that says why it could not
    be done."""
    _ = _language(request).gettext
    try:
        return await act()
    except UnknownIncident:
        return _html(request, title, _h1(_("Unknown incident")), 404)
    except (IncidentGone, IllegalTransition):
        back, label = html.escape(_ack_action(request, "").removesuffix("/")), _(
            "Back to the incident")
        return _html(request, title, _h1(_("This incident is already resolved"))
                     + f"<p><a href=\"{back}\">{_text(label)}</a></p>", 409)


async def ack_presence(request: web.Request) -> web.Response:
    """"I'm at the booth" on the ack page: presence, as the responder the link was made for."""
    api = request.app[API]
    _ = _language(request).gettext
    try:
        link = _link(request)
    except InvalidToken as exc:
        return _bad_token(request, exc.reason)
    acted = await _page_act(request, _("Not saved"), lambda: api.act(
        Attend(link.incident, link.responder, via="link")))
    if isinstance(acted, web.Response):
        return acted
    data = api.incident_json(acted)
    booth = _booth(data)
    return _html(request, _("%(booth)s: at the booth") % {"booth": booth}, (
        _h1(booth) + _p(_("You are at the booth: paging has stopped."), "done")
        + _after(request, data)))


async def ack_step(request: web.Request) -> web.Response:
    """A protocol step from the ack page's buttons, as the link's responder."""
    api = request.app[API]
    language = _language(request)
    _ = language.gettext
    try:
        link = _link(request)
    except InvalidToken as exc:
        return _bad_token(request, exc.reason)

    def not_saved(text: str, status: int) -> web.Response:
        return _html(request, _("Not saved"), _h1(_("Not saved")) + _p(text), status)

    try:
        form = await request.post()
    except ValueError:  # e.g. multipart without a boundary: the browser never sends that
        return not_saved(_("The form did not arrive whole."), 400)
    try:
        count, seen = _form_int(form, "count"), _form_int(form, "seen")
        note = form.get("note")
        note = note.strip() or None if isinstance(note, str) else None
        step = parse_step(form.get("step"), count, note)
    except ValueError:
        # the form's own limits keep a person from this (the API names the field)
        return not_saved(_("Choose a step; naloxone takes 1 to %(doses)d doses, a note at "
                           "most %(max)d characters.") % {"doses": MAX_DOSES, "max": NOTE_MAX},
                         400)
    event = RecordStep(link.incident, link.responder, step, count, note, via="link")
    acted = await _page_act(request, _("Not saved"), lambda: api.record_step(event, seen))
    if isinstance(acted, web.Response):
        return acted
    if acted is None:
        view = await api.find(link.incident)
        assert view is not None  # a repeat is of a step on record
        said = _("Already recorded: nothing was changed now.")
    else:
        view = acted
        said = _("Recorded: %(step)s.") % {"step": _(STEP_LABELS[step.value])}
    data = api.incident_json(view)
    booth = _booth(data)
    return _html(request, _("%(booth)s: step recorded") % {"booth": booth}, (
        _h1(booth) + _p(said, "done") + _p(_state(language, data)) + _after(request, data)))


def _form_int(form: Any, key: str) -> int | None:
    """A whole number from a form field, None when it is absent; ValueError if not one."""
    value = form.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"\d{1,6}", value.strip()):
        raise ValueError(key)
    return int(value)


def _answer_test(request: web.Request, link: AckLink, via: str) -> web.Response:
    """A self-test's link tapped: its channel verified (again, if tapped twice: harmless)."""
    _ = _language(request).gettext
    channel = request.app[API].answer_test(link, via)
    if channel is None:
        return _html(request, _("Unknown self-test"), _h1(_("Unknown self-test")) + _p(
            _("This test page is from a configuration that has changed since; nothing was "
              "recorded.")), 404)
    return _html(request, _("Self-test confirmed"), _h1(_("Confirmed")) + _p(
        _("This channel (%(channel)s) reaches you. Thank you.") % {"channel": channel}))


def _outcome_form(request: web.Request) -> str:
    _ = _language(request).gettext
    action = _ack_action(request, "outcome")
    note, resolve = _("Note (optional)"), _("Resolve with this outcome")
    return (f"<form method=\"post\" action=\"{html.escape(action)}\">"
            + "".join(f"<p><label><input type=\"radio\" name=\"outcome\" value=\"{key}\" "
                      f"required> {_text(_(label))}</label></p>"
                      for key, label in OUTCOME_LABELS.items())
            + f"<p><textarea name=\"note\" maxlength=\"{NOTE_MAX}\" rows=\"3\" "
            f"placeholder=\"{html.escape(note)}\" style=\"width:100%\"></textarea></p>"
            f"<button type=\"submit\">{_text(resolve)}</button></form>")


async def ack_outcome(request: web.Request) -> web.Response:
    """The outcome form of the ack page: resolves (or completes) the incident.

    A used link still records the outcome: that is once per incident anyway (409 after).
    """
    api = request.app[API]
    _ = _language(request).gettext
    try:
        link = _link(request)
    except InvalidToken as exc:
        return _bad_token(request, exc.reason)

    def not_saved(text: str, status: int) -> web.Response:
        return _html(request, _("Not saved"),
                     _h1(_("Not saved")) + _p(text), status)

    try:
        form = await request.post()
    except ValueError:  # e.g. multipart without a boundary: the browser never sends that
        return not_saved(_("The form did not arrive whole."), 400)
    body: dict[str, Any] = {"outcome": form.get("outcome")}
    note = form.get("note")
    if isinstance(note, str) and note.strip():
        body["note"] = note.strip()
    if _outcome_problem(body, required=True):
        # the form's own limits keep a person from this (the API names the field)
        return not_saved(_("Choose what happened; a note has at most %(max)d characters.")
                         % {"max": NOTE_MAX}, 400)
    status, result = await _record_outcome(api, link.incident, link.responder, body, "link")
    if isinstance(result, str):
        return not_saved(_(result), status)
    label = _(OUTCOME_LABELS[body["outcome"]])
    return _html(request, _("Resolved"), _h1(_("Resolved"))
                 + _p(_("%(outcome)s. Thank you.") % {"outcome": label}))


# --- the station login ------------------------------------------------------------------

# the board's door: the station's staff read it, in the site's language
STATION_TEXT = {
    "title": N_("boothwatch: station login"),
    "heading": N_("Station board"),
    "prompt": N_("Station password"),
    "submit": N_("Log in"),
    "wrong": N_("Wrong password."),
    "limited": N_("Too many wrong passwords: try again in %(seconds)d s."),
    "unset_title": N_("Board not set up"),
    "unset_heading": N_("The station board has no password yet"),
    "unset": N_("Set %(variable)s in the service's environment file and restart it."),
}


def _login_form(request: web.Request, problem: str = "", status: int = 200,
                **kw: Any) -> web.Response:
    _ = _language(request).gettext
    t = STATION_TEXT
    error = f'<p class="high" role="alert">{_text(problem)}</p>' if problem else ""
    body = (_h1(_(t["heading"])) + error
            + '<form method="post" action="/board/login">'
            f'<p><label for="password">{_text(_(t["prompt"]))}</label><br>'
            '<input id="password" name="password" type="password" autocomplete="current-password"'
            ' required autofocus style="font-size:1.4rem;width:100%"></p>'
            f'<button type="submit">{_text(_(t["submit"]))}</button></form>')
    response = _html(request, _(t["title"]), body, status)
    # under no-referrer a browser posts the form with "Origin: null", which _same_origin
    # refuses: same-origin lets it name this site (and still hides it from any other)
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers.update(kw.get("headers", {}))
    return response


def _unset(request: web.Request) -> web.Response:
    """The board's page while the station has no password: what the technician must do."""
    _ = _language(request).gettext
    t = STATION_TEXT
    return _html(request, _(t["unset_title"]), _h1(_(t["unset_heading"])) + "<p>"
                 + _with(_(t["unset"]), variable="<code>BOOTHWATCH_BOARD_PASSWORD</code>")
                 + "</p>", 403)


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
        return _unset(request)
    if not _same_origin(request):
        return _error(403, "a login from another site's page is refused")
    try:
        # the whole body first: a check made before an await would let guesses sent at
        # once on many connections all pass it before any of them counts as a failure
        form = await request.post()
    except ValueError as exc:  # a multipart body without its boundary, a broken form
        return _error(400, f"not a form: {exc}")
    now = api.clock()
    address = _client(request)
    wait = stations.retry_after(address, now)
    if wait > 0:
        seconds = math.ceil(wait)
        api.metrics.station_login("limited")
        text = _language(request).gettext(STATION_TEXT["limited"]) % {"seconds": seconds}
        return _login_form(request, text, 429, headers={"Retry-After": str(seconds)})
    password = form.get("password")
    session = stations.login(password, now) if isinstance(password, str) else None
    if session is None:
        stations.failed(address, now)
        api.metrics.station_login("wrong")
        log.warning("station_login_refused", address=address)
        return _login_form(request, _language(request).gettext(STATION_TEXT["wrong"]), 401)
    api.metrics.station_login("ok")
    log.info("station_login", address=address)
    response = _see_board()
    set_cookie(request, response, session, api.config.http.public_url)
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
