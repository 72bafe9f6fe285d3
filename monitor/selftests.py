"""Scheduled self-tests (``[self_test]``): the pure plan (`monitor.core.selftest`) at work.

A round's test pages go out through `Paging` on their one channel each, built as
`boothwatch test-page` builds its own (`monitor.testpage.test_payload`), with a
signed link whose tap answers the test (`monitor.http`). A round closed with tests
unanswered tells the ``notify`` targets (the coordinators and technicians on duty,
else all of them) which channels nobody confirmed, as a message about boothwatch
itself over each one's channels. Everything is audited (``self_test_round``,
``self_test_answered``, ``self_test_closed``), so a restart carries on an open round
and knows each channel's last answer; when each channel last delivered comes from
the pages (`Paging.delivered_at`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from prometheus_client.core import Metric
from ulid import ULID

from monitor.codec import iso
from monitor.core.escalation import resolve_targets
from monitor.core.roster import Roster
from monitor.core.selftest import RoundClosed, RoundStarted, SelfTestPage, SelfTests
from monitor.core.selfwatch import Recipient
from monitor.core.settings import Config
from monitor.core.words import self_test_unanswered
from monitor.metrics import Metrics, gauge
from monitor.paging import Paging
from monitor.store import Store
from monitor.testpage import test_payload
from monitor.timers import deadline_loop

log = structlog.get_logger(__name__)

ANSWERS_KEPT = 90 * 86400.0  # a channel answered longer ago than this is long unverified
ROUNDS_KEPT = 8 * 86400.0  # the open round, if any, is the newest of the last week


class SelfTestRunner:
    def __init__(self, config: Config, *, roster: Roster, store: Store, paging: Paging,
                 metrics: Metrics, clock: Callable[[], float]) -> None:
        self._config = config
        self._roster = roster
        self._store = store
        self._paging = paging
        self._metrics = metrics
        self._clock = clock
        self._responders = {r.id: r for r in config.responders}
        self._wake = asyncio.Event()
        self.plan: SelfTests | None = None
        if config.self_test is not None:
            self.plan = SelfTests(config.self_test, config.responders, config.channels,
                                  config.site.timezone, lambda: str(ULID()), self._recipients,
                                  clock())
        paging.on_test = self._delivered

    def _recipients(self, targets: tuple[str, ...], now: float) -> tuple[str, ...]:
        """The targets on duty; when none is, every one of them (someone must hear)."""
        responders = self._config.responders
        on = resolve_targets(targets, responders, lambda rid: self._roster.on_duty(rid, now))
        return on.responders or resolve_targets(targets, responders).responders

    async def resume(self) -> None:
        """The last answer of each channel, and a round that was open at the restart."""
        if self.plan is None:
            return
        now = self._clock()
        answers = await self._store.audit_of("self_test_answered", now - ANSWERS_KEPT)
        self.plan.restore((a["subject"], a["channel"], a["at"]) for a in answers)
        rounds = await self._store.audit_of("self_test_round", now - ROUNDS_KEPT)
        if not rounds:
            return
        last = rounds[-1]
        closed = await self._store.audit_of("self_test_closed", last["at"])
        if any(c["round"] == last["round"] for c in closed):
            return
        self.plan.resume(last["round"], last["at"], last["deadline"],
                         (SelfTestPage(t["test"], t["responder"], t["channel"])
                          for t in last["tests"]),
                         (a["test"] for a in answers if a["at"] >= last["at"]))
        log.warning("self_test_round_resumed", round=last["round"])

    async def run(self) -> None:
        """Run the rounds as they fall due (the runtime starts it only with a plan)."""
        await deadline_loop(self._clock, self.next_deadline, self._wake, self.fire,
                            "self_test")

    def next_deadline(self) -> float | None:
        return self.plan.next_deadline() if self.plan is not None else None

    def fire(self, now: float) -> None:
        """Start and close what is due at `now` (the loop, or a test stepping time)."""
        if self.plan is not None:
            self._tell(self.plan.on_timer(now), now)

    def _tell(self, news: Iterable[RoundStarted | RoundClosed], now: float) -> None:
        for item in news:
            match item:
                case RoundStarted():
                    self._started(item, now)
                case RoundClosed():
                    self._closed(item, now)

    def _started(self, started: RoundStarted, now: float) -> None:
        log.info("self_test_round", round=started.round, tests=len(started.tests))
        self._store.add_audit(now, "self_test_round", "self_test", {
            "round": started.round, "deadline": started.deadline,
            "tests": [{"test": t.test, "responder": t.responder, "channel": t.channel}
                      for t in started.tests]})
        for page in started.tests:
            responder = self._responders[page.responder]
            payload = test_payload(self._config, responder, page.channel, now,
                                   self._paging.language,
                                   self._paging.ack_url(page.test, page.responder))
            self._paging.test(page, payload, now)
            self._metrics.count(self._metrics.self_tests, "sent")

    def _closed(self, closed: RoundClosed, now: float) -> None:
        missing = [{"responder": m.responder, "channel": m.channel, "failed": m.failed}
                   for m in closed.missing]
        self._store.add_audit(now, "self_test_closed", "self_test", {
            "round": closed.round, "missing": missing, "told": list(closed.recipients)})
        for _ in closed.missing:
            self._metrics.count(self._metrics.self_tests, "unanswered")
        if not closed.missing:
            log.info("self_test_passed", round=closed.round)
            return
        log.warning("self_test_unanswered", round=closed.round, told=list(closed.recipients),
                    missing=[f"{m.responder}/{m.channel}" for m in closed.missing])
        if not closed.recipients:
            log.error("self_test_nobody_to_tell", notify=list(self._config.self_test.notify
                                                              if self._config.self_test else ()))
        site = self._config.site
        when = datetime.fromtimestamp(closed.started, ZoneInfo(site.timezone)).strftime("%H:%M")
        title, message = map(self._paging.language.say, self_test_unanswered(
            site.name, when, ((self._responders[m.responder].name, m.channel, m.failed)
                              for m in closed.missing)))
        payload: dict[str, Any] = {
            "kind": "system", "event": "self_test_unanswered", "round": closed.round,
            "site": site.id, "site_name": site.name, "priority": "medium", "title": title,
            "message": message, "since": iso(closed.started)}
        for rid in closed.recipients:
            channels = self._responders[rid].channels
            self._paging.system(closed.round, Recipient(rid, channels),
                                {**payload, "responder": rid}, now)

    # --- what became of a test page ----------------------------------------------------------

    def _delivered(self, test: str, failed: str | None) -> None:
        self._metrics.count(self._metrics.self_tests, "failed" if failed else "delivered")
        if failed is not None and self.plan is not None:
            self.plan.failed(test, failed)

    def answer(self, test: str, responder: str, via: str) -> str | None:
        """The responder tapped the test's link: the channel it verified, or None when the
        link names no channel of theirs (a test from a config since changed)."""
        if self.plan is None:
            return None
        now = self._clock()
        key = self.plan.answered(test, responder, now)
        if key is None:
            return None
        channel = key[1]
        self._store.add_audit(now, "self_test_answered", responder,
                              {"channel": channel, "test": test, "via": via})
        self._metrics.count(self._metrics.self_tests, "answered")
        log.info("self_test_answered", responder=responder, channel=channel, via=via)
        return channel

    # --- what people and Prometheus read -----------------------------------------------------

    def channels(self, responder: str) -> list[dict[str, Any]]:
        """Each of the responder's channels: when it last delivered, when a self-test on it
        was last answered (null: never, or not in the last 90 days)."""
        out = []
        for name in self._responders[responder].channels:
            delivered = self._paging.delivered_at.get((responder, name))
            answered = (self.plan.last_answered.get((responder, name))
                        if self.plan is not None else None)
            out.append({"name": name, "type": self._config.channels[name].type,
                        "last_delivered": iso(delivered) if delivered else None,
                        "last_answered": iso(answered) if answered else None})
        return out

    def gauges(self) -> Iterable[Metric]:
        now = self._clock()
        yield gauge("boothwatch_channel_last_delivered_timestamp_seconds",
                    "When the channel last delivered a page, notice or test to the responder "
                    "(its service accepted it)", ["responder", "channel"],
                    {key: at for key, at in self._paging.delivered_at.items()})
        if self.plan is None:
            return
        plan = self.plan
        yield gauge("boothwatch_channel_last_answered_timestamp_seconds",
                    "When the responder last answered a self-test page on the channel",
                    ["responder", "channel"],
                    {key: at for key, at in plan.last_answered.items()})
        yield gauge("boothwatch_channel_unverified_seconds",
                    "Seconds since a self-test on the channel was last answered (since the "
                    "service started, if never)", ["responder", "channel"],
                    {key: plan.unverified_for(key, now) for key in plan.keys})
