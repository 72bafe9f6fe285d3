"""The one object the HTTP adapter talks to: what people can read and do.

Reads come from the core (what is open now) and the store (history); actions go
through the driver like every other event, and return once their changes are
stored. HTTP knows nothing of the runtime's parts beyond this.

Ack links act once (see `monitor.http`): `claim` records the use in the store
before the acknowledgement is applied, so a replay, even after a restart, is
refused and changes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

from alerts.tokens import AckLink, AckTokens, Use, UsedLinks
from monitor.board.feed import BoardFeed
from monitor.codec import booth_json, incident_json, iso
from monitor.core.events import (
    AddOutcome,
    IncidentChanged,
    IncidentEvent,
    RecordStep,
    Resolve,
    SiteEvent,
)
from monitor.core.incident import IncidentView
from monitor.core.settings import Config
from monitor.core.site import SiteCore, UnknownIncident
from monitor.driver import Driver
from monitor.health import Health
from monitor.i18n import Language
from monitor.metrics import Metrics
from monitor.paging import Paging
from monitor.selftests import SelfTestRunner
from monitor.station import Stations
from monitor.store import Store

log = structlog.get_logger(__name__)

TOKEN_ENV = "BOOTHWATCH_API_TOKEN"  # the API's bearer token


class IncidentGone(Exception):
    """The incident exists but is resolved: nothing more can be done to it (HTTP 409)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Api:
    config: Config
    core: SiteCore
    driver: Driver
    store: Store
    paging: Paging
    health: Health
    metrics: Metrics
    tokens: AckTokens
    used_links: UsedLinks
    clock: Callable[[], float]
    token: str | None  # BOOTHWATCH_API_TOKEN: /api/... takes it instead of a station session
    stations: Stations  # the station login (BOOTHWATCH_BOARD_PASSWORD)
    board: BoardFeed  # the station boards' streams
    selftests: SelfTestRunner  # [self_test]: its answers, each channel's last delivery

    @property
    def guarded(self) -> bool:
        """Whether /api/... needs the token or a station session: when either is set up.

        A box with neither (the tests' sites, a bench) keeps the API open as it always was;
        check-config says so."""
        return self.token is not None or self.stations.password is not None

    @property
    def language(self) -> Language:
        """What people read through HTTP (the ack page) is in this language."""
        return self.paging.language

    # --- reads ------------------------------------------------------------------------

    def booth_name(self, booth_id: str) -> str:
        booth = self.config.booth(booth_id)
        return booth.name if booth is not None else booth_id

    def booths(self) -> list[dict[str, Any]]:
        return [booth_json(v) for v in self.core.booth_views()]

    def responder_name(self, responder_id: str) -> str:
        return next((r.name for r in self.config.responders if r.id == responder_id),
                    responder_id)

    def booth(self, booth_id: str) -> dict[str, Any]:
        return next(b for b in self.booths() if b["booth"] == booth_id)

    def incident_json(self, view: IncidentView) -> dict[str, Any]:
        return incident_json(view, self.booth_name(view.booth))

    async def incidents(self, open_only: bool, limit: int) -> tuple[list[dict[str, Any]], int]:
        """The newest ``limit`` incidents as API JSON, and the total there is."""
        await self.store.flush()
        views, total = await self.store.incidents(open_only, limit)
        return [self.incident_json(v) for v in views], total

    def open_incidents(self) -> list[dict[str, Any]]:
        """The unresolved incidents as API JSON, newest first, from the core (no store read)."""
        views = sorted(self.core.open_incident_views(), key=lambda v: v.raised_at, reverse=True)
        return [self.incident_json(v) for v in views]

    async def find(self, incident: str) -> IncidentView | None:
        """The incident, open (from the core) or resolved (from the store)."""
        return self.open_view(incident) or await self.store.incident(incident)

    def is_open(self, incident: str) -> bool:
        return incident in self.core.incidents

    def open_view(self, incident: str) -> IncidentView | None:
        """The incident if it is open (the core's; never a store read)."""
        return self.core.incident_view(incident) if self.is_open(incident) else None

    def raised_since(self, at: float) -> list[IncidentView]:
        """Unresolved incidents raised at or after ``at``, oldest first."""
        return sorted((v for v in self.core.open_incident_views() if v.raised_at >= at),
                      key=lambda v: v.raised_at)

    def responders(self, channels: bool = True) -> list[dict[str, Any]]:
        """Every responder's duty now, and their channels by name with when each last
        delivered and was last verified by a self-test (no contact details). The boards
        take the duty alone: their feed resends it whenever it changes."""
        out = self.core.roster.duty_view(self.clock())
        for item in out:
            if item["override"] is not None:
                item["override"] = {**item["override"], "at": iso(item["override"]["at"]),
                                    "until": iso(item["override"]["until"])}
            if channels:
                item["channels"] = self.selftests.channels(item["id"])
        return out

    def booth_test(self, booth_id: str) -> dict[str, Any] | None:
        """The booth's running or last device test (`monitor.core.boothtest`), and the
        devices the config gives it; None when it has had none since the start."""
        test = self.core.tests.get(booth_id)
        if test is None:
            return None
        snap = test.snapshot()
        return {**snap, "started": iso(snap["started"]), "until": iso(snap["until"]),
                "ended": iso(snap["ended"]),
                "heard": {device: {kind: iso(at) for kind, at in kinds.items()}
                          for device, kinds in snap["heard"].items()},
                "fired": [{"at": iso(f["at"]), "trigger": f["trigger"]} for f in snap["fired"]],
                "devices": [d.id for d in self.config.devices if d.booth == booth_id]}

    def answer_test(self, link: AckLink, via: str) -> str | None:
        """A tap on a self-test's link; the channel it verified (None: not a test we know)."""
        return self.selftests.answer(link.incident, link.responder, via)

    async def audit(self, limit: int, subject: str | None) -> list[dict[str, Any]]:
        await self.store.flush()
        entries = await self.store.audit(limit, subject)
        return [{**e, "at": iso(e["at"]), **({"until": iso(e["until"])} if e.get("until") else {})}
                for e in entries]

    async def readiness(self) -> list[str]:
        return await self.health.readiness()

    async def render_metrics(self) -> bytes:
        return await self.metrics.render_async()

    # --- actions ----------------------------------------------------------------------

    async def act(self, event: IncidentEvent) -> IncidentView:
        """Apply a person's action on an incident; returns once the change is stored.

        Raises UnknownIncident, IncidentGone (resolved), IllegalTransition, and for an
        outcome OutcomeRecorded.
        """
        try:
            handled = self.driver.handle(event, self.clock())
        except UnknownIncident:
            if await self.store.incident(event.incident) is None:
                raise
            raise IncidentGone(event.incident) from None
        await self.store.settled(handled.stored)  # while the store fails: applied, kept
        for cmd in reversed(handled.commands):
            if isinstance(cmd, IncidentChanged) and cmd.view.id == event.incident:
                return cmd.view
        return self.core.incident_view(event.incident)

    async def record_outcome(self, incident: str, responder: str, outcome: str,
                             note: str | None, via: str) -> IncidentView:
        """Resolve an open incident with its outcome, or add the outcome to a resolved one."""
        if self.is_open(incident):
            return await self.act(Resolve(incident, responder, outcome, via=via, note=note))
        await self.store.flush()
        resolved = await self.store.incident(incident)
        if resolved is None:
            raise UnknownIncident(incident)
        return await self.act(AddOutcome(resolved, responder, outcome, note, via=via))

    async def record_step(self, event: RecordStep, seen: int | None = None) -> IncidentView | None:
        """Record a protocol step; None, changing nothing, when it repeats one recorded after
        the first ``seen`` steps by the same responder (a form sent twice by a double tap,
        which must not count naloxone twice). Raises as `act`.

        The check and the change happen on one turn of the event loop (`act` hands the
        event to the core before it first awaits), so two taps cannot both pass it.
        """
        view = self.open_view(event.incident) if seen is not None else None
        if view is not None and any(
                e.detail["step"] == event.step.value and e.detail["responder"] == event.responder
                for e in [e for e in view.timeline if e.kind == "step"][seen:]):
            return None
        return await self.act(event)

    async def act_site(self, event: SiteEvent) -> None:
        """Duty and maintenance; raises UnknownBooth, UnknownResponder, BadRequest."""
        handled = self.driver.handle(event, self.clock())
        await self.store.settled(handled.stored)

    # --- ack links --------------------------------------------------------------------

    def link(self, token: str) -> AckLink:
        """The link a token makes; raises InvalidToken (forged, altered, expired)."""
        return self.tokens.check(token)

    def ack_url(self, incident: str, responder: str) -> str:
        return self.paging.ack_url(incident, responder)

    def used(self, link: AckLink) -> Use | None:
        return self.used_links.get(link.digest)

    async def claim(self, link: AckLink, via: str) -> Use | None:
        """Spend `link` on its open incident; the earlier use if it was spent already.

        A resolved or unknown incident spends nothing (None). With the store in trouble
        (locked, disk full) the use is kept in memory only and the nurse's
        acknowledgement goes ahead: it matters more than refusing a replay after a
        restart, and the store holds nothing else until it recovers anyway.
        """
        used = self.used(link)
        if used is not None or not self.is_open(link.incident):
            return used
        now = self.clock()
        claim = self.used_links.claim(link, via, now)
        if claim is None or not self.store.writable:
            if claim is not None:
                log.warning("ack_link_use_in_memory_only", incident=link.incident,
                            reason="store not writable")
            return None
        try:
            fresh = await self.store.use_ack_link(link.digest, claim, now - self.used_links.ttl)
        except self.store.errors as exc:
            log.warning("ack_link_use_in_memory_only", incident=link.incident,
                        reason=type(exc).__name__)
            return None
        return None if fresh else claim  # recorded through another process meanwhile

    async def on_record(self, incident: str) -> bool:
        """Whether the store has the incident; a store that cannot be read says no."""
        try:
            return await self.store.incident(incident) is not None
        except self.store.errors:
            return False


#: where the HTTP app keeps the Api, for every handler (monitor.http, monitor.board.http)
API = web.AppKey("api", Api)
