"""Prometheus metrics, each registry private to one runtime (tests run several).

Label values are bounded: booth ids come from the config, reasons and results
from fixed sets, never from payloads; no label carries personal data.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from alerts.delivery import after_pages
from devices.adapters.payload import REASONS
from monitor.board.feed import BoardFeed
from monitor.clock import ServiceClock
from monitor.core.events import OUTCOMES as OUTCOME_VALUES
from monitor.core.events import Audit, IncidentChanged, ProtocolStep
from monitor.core.fatigue import History, actionable
from monitor.core.incident import (
    AllEngaged,
    BusySkipped,
    Change,
    DutyGap,
    IncidentView,
    OutcomeSet,
    State,
    StepFired,
    StepRecorded,
    StepSkipped,
    Transition,
    Trigger,
)
from monitor.core.roster import within
from monitor.core.settings import RISKS, ROUTES, Config
from monitor.core.site import SiteCore
from monitor.store import Store

log = structlog.get_logger(__name__)

#: response-time buckets fine enough for seconds, up to 10 minutes
RESPONSE_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600)
#: outcome label values; anything else a person typed counts as "other"
OUTCOMES = frozenset({
    "ok", "overdose_naloxone", "overdose_oxygen", "emergency_services", "false_alarm",
    "no_one_there", "other", "session_ended", "device_back", "battery_ok", "none",
})
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        # scrape-time gauges from live state (the core's...), rendered in this order
        self._live: list[Callable[[], Iterable[Metric | Text]]] = []
        self.per_booth = BoothGauges()  # the per-booth gauges' text (`core_gauges`)
        self._children: dict[tuple[int, tuple[str, ...]], Counter] = {}  # see count()
        self.events = Counter(
            "boothwatch_events", "Booth events by kind and result (accepted, duplicate, error)",
            ["kind", "result"], registry=r,
        )
        self.rejected = Counter(
            "boothwatch_events_rejected", "MQTT messages rejected, by reason",
            ["reason"], registry=r,
        )
        self.device_messages = Counter(
            "boothwatch_device_messages", "Messages from off-the-shelf devices, by source",
            ["source", "result"], registry=r,
        )
        self.dropped = Counter(
            "boothwatch_messages_dropped",
            "MQTT messages dropped because their sender sent too many, by source, booth "
            "(empty for the ack and duty topics) and reason (rate_limited, repeated_call)",
            ["source", "booth", "reason"], registry=r,
        )
        self.acks = Counter(
            "boothwatch_mqtt_acks", "Acknowledgements from pager gateways on the ack topic",
            ["result"], registry=r,
        )
        self.mqtt_steps = Counter(
            "boothwatch_mqtt_steps",
            "Protocol steps from pager gateways on the steps topic, by result (accepted; "
            "rejected: not a valid step; ignored: unknown or resolved incident; duplicate: a "
            "copy the broker redelivered)",
            ["result"], registry=r,
        )
        self.protocol_steps = Counter(
            "boothwatch_protocol_steps",
            "Protocol steps recorded against incidents (knocked, answered, entered, naloxone, "
            "oxygen, ems_called, ems_arrived, note), by step and the incident's first trigger",
            ["step", "trigger"], registry=r,
        )
        self.naloxone_doses = Counter(
            "boothwatch_naloxone_doses", "Naloxone doses recorded, by booth", ["booth"],
            registry=r,
        )
        self.incidents_raised = Counter(
            "boothwatch_incidents_raised", "Incidents raised, by first trigger, priority, booth",
            ["trigger", "priority", "booth"], registry=r,
        )
        self.incidents_resolved = Counter(
            "boothwatch_incidents_resolved", "Incidents resolved, by outcome and first trigger",
            ["outcome", "trigger"], registry=r,
        )
        self.outcomes = Counter(
            "boothwatch_incident_outcomes",
            "Outcomes recorded by a person (on resolve or afterwards), by first trigger",
            ["outcome", "trigger"], registry=r,
        )
        self.duty_gaps = Counter(
            "boothwatch_duty_gaps",
            "Escalation steps that targeted a role with nobody on duty, by role and priority",
            ["role", "priority"], registry=r,
        )
        self.steps_skipped = Counter(
            "boothwatch_escalation_steps_skipped",
            "Escalation steps skipped at once because nobody they target was on duty",
            ["level", "priority"], registry=r,
        )
        self.busy_skipped = Counter(
            "boothwatch_busy_skipped",
            "Responders busy at another booth whom a step skipped for a free one (skip_busy), "
            "by role and priority", ["role", "priority"], registry=r,
        )
        self.all_engaged = Counter(
            "boothwatch_all_staff_engaged",
            "Escalation steps that found every on-duty responder of a role busy at another "
            "booth (paged all the same), by role and priority", ["role", "priority"], registry=r,
        )
        self.sessions_marked = Counter(
            "boothwatch_sessions_marked",
            "Sessions marked by staff or at check-in, by risk and route (none when not said)",
            ["risk", "route"], registry=r,
        )
        self.suppressed = Counter(
            "boothwatch_triggers_suppressed",
            "Automatic triggers not raised because the booth was in maintenance",
            ["trigger", "booth"], registry=r,
        )
        self.steps = Counter(
            "boothwatch_escalation_steps", "Escalation steps fired, by level and priority",
            ["level", "priority"], registry=r,
        )
        self.reopened = Counter(
            "boothwatch_incidents_reopened", "Acknowledged incidents re-opened by ack timeout",
            registry=r,
        )
        self.clock_steps = Counter(
            "boothwatch_clock_steps", "Wall-clock steps noticed while running (timers unaffected)",
            registry=r,
        )
        self.pages = Counter(
            "boothwatch_pages", "Page delivery attempts by channel and result",
            ["channel", "result"], registry=r,
        )
        self.page_latency = Histogram(
            "boothwatch_page_delivery_seconds", "Time of a successful delivery attempt",
            ["channel"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.broker_reconnects = Counter(
            "boothwatch_broker_reconnects",
            "Connections to the MQTT broker made again after one was lost", registry=r,
        )
        self.monitoring_messages = Counter(
            "boothwatch_monitoring_messages",
            "Monitoring down/restored messages to staff by event (monitoring_down, "
            "monitoring_restored) and result (sent; failed: every retry failed)",
            ["event", "result"], registry=r,
        )
        self.station_logins = Counter(
            "boothwatch_station_logins",
            "Station board logins by result (ok; wrong: a wrong password; limited: refused "
            "after too many wrong ones)", ["result"], registry=r,
        )
        self.self_tests = Counter(
            "boothwatch_self_tests",
            "Scheduled self-test pages by result (sent; delivered or failed by the channel; "
            "answered by a tap on the link; unanswered when the round closed)",
            ["result"], registry=r,
        )
        common = ["trigger", "priority", "booth", "level"]
        self.to_ack = Histogram(
            "boothwatch_time_to_acknowledge_seconds", "From raised_at to the first acknowledgement",
            common, buckets=RESPONSE_BUCKETS, registry=r,
        )
        self.to_presence = Histogram(
            "boothwatch_time_to_presence_seconds", "From raised_at to the first presence",
            common, buckets=RESPONSE_BUCKETS, registry=r,
        )
        self.classed = Counter(
            "boothwatch_incidents_classed",
            "Outcomes a person recorded, by booth, first trigger and whether the alarm was "
            "actionable (false: false_alarm or no_one_there)",
            ["booth", "trigger", "actionable"], registry=r,
        )
        self.to_ack_after = Histogram(
            "boothwatch_time_to_acknowledge_after_seconds",
            "Time to the first acknowledgement by what the booth's alarms before it were: "
            "after a run of non-actionable ones, or after an actionable one",
            ["booth", "after"], buckets=RESPONSE_BUCKETS, registry=r,
        )
        self.to_resolve = Histogram(
            "boothwatch_time_to_resolve_seconds", "From raised_at to resolved",
            common, buckets=RESPONSE_BUCKETS, registry=r,
        )
        self.to_enter = Histogram(
            "boothwatch_time_to_enter_seconds",
            "From raised_at to the first protocol step entered (staff went into the booth)",
            common, buckets=RESPONSE_BUCKETS, registry=r,
        )
        self.to_naloxone = Histogram(
            "boothwatch_time_to_naloxone_seconds",
            "From raised_at to the first naloxone recorded", common,
            buckets=RESPONSE_BUCKETS, registry=r,
        )

    def count(self, counter: Counter, *labels: str) -> None:
        """``counter.labels(*labels).inc()`` for the per-message counters, the labelled
        child cached: prometheus_client's labels() cost more than the rest of counting."""
        key = (id(counter), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*labels)
        child.inc()

    def station_login(self, result: str) -> None:
        self.count(self.station_logins, result)

    def watch(self, collect: Callable[[], Iterable[Metric | Text]]) -> None:
        """Add gauges computed at scrape time from live state (read on the event loop)."""
        self._live.append(collect)

    def render(self) -> bytes:
        return generate_latest(self.registry) + self._render_live()

    def _render_live(self) -> bytes:
        """The live gauges as prometheus_client writes them: its text of a registry is each
        family's text in turn, so a family whose text was made ahead (`Text`) goes in as
        is, and the others are written by prometheus_client."""
        parts: list[bytes] = []
        families: list[Metric] = []
        for collect in self._live:
            for metric in collect():
                if isinstance(metric, Text):
                    if families:
                        parts.append(generate_latest(_Families(families)))
                        families = []
                    parts.append(metric.text)
                else:
                    families.append(metric)
        if families:
            parts.append(generate_latest(_Families(families)))
        return b"".join(parts)

    async def render_async(self) -> bytes:
        """The same text, without holding the event loop for the whole render.

        The live gauges read the core's state, so they are rendered here on the loop;
        the counters and histograms (thread-safe in prometheus_client) in a worker
        thread. At a few thousand per-booth histogram series the text is megabytes
        and takes most of a second to render: on the loop, that would hold back pages
        for as long; in a thread, the loop gets the GIL back every switch interval.
        """
        live = self._render_live()
        return await asyncio.to_thread(generate_latest, self.registry) + live


class _Families:
    """Families to hand to `generate_latest`, which asks only for ``collect()``."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


class Text:
    """A gauge family's exposition text, made ahead of the render (`BoothGauges`)."""

    __slots__ = ("text",)

    def __init__(self, text: bytes) -> None:
        self.text = text


class BoothGauges:
    """The per-booth gauges' text (five families x every booth: 50,000 samples at 10,000
    booths), the same bytes as prometheus_client writes, at a twentieth of its time.

    prometheus_client writes each sample afresh: its labels sorted, each escaped and
    formatted, the value formatted. That was 0.3 s of the event loop per scrape at 10,000
    booths (bench/ingest.py scrapes every 5 s: 5% of the service's time). Here each booth's
    label text, ``{booth="b1"}``, is written by prometheus_client once and kept, each
    family's HELP and TYPE lines likewise, and each value's text (there are a handful: 0, 1,
    2, 3); a scrape joins them. tests/test_metrics.py checks the text is prometheus_client's.
    """

    def __init__(self) -> None:
        self._labels: dict[str, str] = {}  # booth id -> its label text
        self._heads: dict[tuple[str, str], str] = {}  # (name, help) -> HELP and TYPE lines
        self._values: dict[float, str] = {}  # value -> its text

    def family(self, name: str, doc: str, booths: list[str], values: list[float]) -> Text:
        """The family ``name`` with one sample per booth, labelled ``booth``, in this order."""
        labels = self._labels
        head = self._heads.get((name, doc))
        if head is None:
            head = self._heads[name, doc] = generate_latest(_Families(
                [GaugeMetricFamily(name, doc, labels=["booth"])])).decode()
        texts = self._values
        for value in values:
            if value not in texts:
                texts[value] = floatToGoString(value)  # type: ignore[no-untyped-call]  # untyped
        try:
            lines = [f"{name}{labels[booth]} {texts[value]}\n"
                     for booth, value in zip(booths, values, strict=True)]
        except KeyError:  # a booth not seen before (the first scrape): learn, then again
            self._learn([b for b in booths if b not in labels])
            lines = [f"{name}{labels[booth]} {texts[value]}\n"
                     for booth, value in zip(booths, values, strict=True)]
        return Text((head + "".join(lines)).encode())

    def _learn(self, booths: list[str]) -> None:
        """Have prometheus_client write these booths' label text (one render of them all)."""
        family = GaugeMetricFamily("x", "x", labels=["booth"])
        for booth in booths:
            family.add_metric([booth], 0.0)
        lines = generate_latest(_Families([family])).decode().split("\n")[2:-1]
        for booth, line in zip(booths, lines, strict=True):
            self._labels[booth] = line[1:line.rindex(" ")]  # x{booth="..."} 0.0


def gauge(name: str, doc: str, labels: list[str], values: dict[tuple[str, ...], float]) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in values.items():
        family.add_metric(list(key), value)
    return family


def counter(name: str, doc: str, value: float) -> Metric:
    """A counter kept by an adapter as a plain number (e.g. the store's commit failures)."""
    family = CounterMetricFamily(name, doc)
    family.add_metric([], value)
    return family


class Observer:
    """Counts what the core's commands say happened, and logs the moments people look for.

    Every figure here comes from a typed command (`IncidentChanged.changes`, `Audit`), so
    nothing re-reads the timeline. Response times are labelled by the incident's first
    trigger, its priority, booth and the highest escalation level it reached.
    """

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        # each booth's last alarms (monitor/core/fatigue.py); `seed` fills them at start
        self.history: dict[str, History] = {}

    def seed(self, outcomes: Iterable[tuple[str, str]]) -> None:
        """Each booth's last outcomes a person recorded, oldest first, as stored."""
        for booth, outcome in outcomes:
            self._history(booth).add(outcome)

    def _history(self, booth: str) -> History:
        history = self.history.get(booth)
        if history is None:
            history = self.history[booth] = History()
        return history

    def command(self, cmd: IncidentChanged | Audit) -> None:
        match cmd:
            case IncidentChanged(view=view, changes=changes):
                self._incident(view, changes)
            case Audit(kind=kind, subject=subject, detail=detail):
                log.info("audit", kind=kind, subject=subject,
                         **{k: v for k, v in detail.items() if k in _AUDIT_LOGGED})
                if kind == "trigger_suppressed":
                    self.metrics.suppressed.labels(detail["trigger"], subject).inc()
                elif kind == "session_marked":
                    self.metrics.sessions_marked.labels(detail["risk"],
                                                        detail["route"] or "none").inc()

    def _incident(self, view: IncidentView, changes: tuple[Change, ...]) -> None:
        m = self.metrics
        trigger = view.triggers[0]
        labels = (trigger, view.priority, view.booth, str(view.max_level))
        for change in changes:
            match change:
                case StepFired(level=level):
                    m.steps.labels(str(level), view.priority).inc()
                case StepSkipped(level=level):
                    m.steps_skipped.labels(str(level), view.priority).inc()
                case DutyGap(roles=roles):
                    for role in roles:
                        m.duty_gaps.labels(role, view.priority).inc()
                case BusySkipped(role=role, responders=skipped):
                    m.busy_skipped.labels(role, view.priority).inc(len(skipped))
                case AllEngaged(roles=roles):
                    for role in roles:
                        m.all_engaged.labels(role, view.priority).inc()
                case OutcomeSet(outcome=outcome):
                    if outcome in OUTCOME_VALUES:
                        m.outcomes.labels(outcome, trigger).inc()
                    classed = actionable(outcome)
                    if classed is not None:
                        m.classed.labels(view.booth, trigger, str(classed).lower()).inc()
                        self._history(view.booth).add(outcome)
                case StepRecorded():
                    self._step(view, change, labels)
                case Transition(was=None):
                    m.incidents_raised.labels(trigger, view.priority, view.booth).inc()
                    log_soon("incident_raised", incident=view.id, booth=view.booth,
                             trigger=trigger, priority=view.priority)
                case Transition(to=State.OPEN):
                    m.reopened.inc()
                case Transition(to=State.ACKNOWLEDGED, first=True, at=at):
                    m.to_ack.labels(*labels).observe(at - view.raised_at)
                    # a booth has one open incident: its history is the alarms before it
                    after = self._history(view.booth).after()
                    if after is not None:
                        m.to_ack_after.labels(view.booth, after).observe(at - view.raised_at)
                case Transition(to=State.ATTENDED, first=True, at=at):
                    m.to_presence.labels(*labels).observe(at - view.raised_at)
                case Transition(to=State.RESOLVED, at=at):
                    m.to_resolve.labels(*labels).observe(at - view.raised_at)
                    outcome = view.outcome or "none"
                    m.incidents_resolved.labels(
                        outcome if outcome in OUTCOMES else "other", trigger).inc()
                    log.info("incident_resolved", incident=view.id, booth=view.booth,
                             by=view.resolved_by, outcome=view.outcome)
                case Transition():
                    pass

    def _step(self, view: IncidentView, step: StepRecorded, labels: tuple[str, ...]) -> None:
        m = self.metrics
        m.protocol_steps.labels(step.step.value, labels[0]).inc()
        if step.count is not None:
            m.naloxone_doses.labels(view.booth).inc(step.count)
        if step.first and step.step is ProtocolStep.ENTERED:
            m.to_enter.labels(*labels).observe(step.at - view.raised_at)
        elif step.first and step.step is ProtocolStep.NALOXONE:
            m.to_naloxone.labels(*labels).observe(step.at - view.raised_at)
        log.info("protocol_step", incident=view.id, booth=view.booth, step=step.step.value,
                 by=step.by, count=step.count)


def log_soon(event: str, **fields: Any) -> None:
    """An info line written once the pages sent meanwhile are out (a line costs tens of µs)."""
    after_pages(functools.partial(log.info, event, **fields))


# never free text; a "by" that is not a responder id is hidden by monitor/logs.py
_AUDIT_LOGGED = frozenset({"trigger", "by", "on", "via", "until", "risk", "route"})


def precreate(metrics: Metrics, config: Config) -> None:
    """Start bounded label sets at 0, so rate() and increase() see the first event.

    Per-booth series are left to appear on first use: at thousands of booths they
    would cost more than the first sample is worth.
    """
    m = metrics
    for reason in (*REASONS, "retained"):
        m.rejected.labels(reason)
    for result in ("sent", "delivered", "failed", "answered", "unanswered"):
        m.self_tests.labels(result)
    for event in ("monitoring_down", "monitoring_restored", "self_test_unanswered"):
        for result in ("sent", "failed"):
            m.monitoring_messages.labels(event, result)
    for trigger in Trigger:
        for outcome in OUTCOMES:
            m.incidents_resolved.labels(outcome, trigger.value)
        for outcome in OUTCOME_VALUES:
            m.outcomes.labels(outcome, trigger.value)
    for result in ("ok", "wrong", "limited"):
        m.station_logins.labels(result)
    for result in ("accepted", "rejected", "ignored", "duplicate"):
        m.mqtt_steps.labels(result)
    for trigger in Trigger:
        for step in ProtocolStep:
            m.protocol_steps.labels(step.value, trigger.value)
    roles = {role for r in config.responders for role in r.roles}
    for priority, policy in config.escalation.items():
        for level in range(1, len(policy.steps) + 1):
            m.steps.labels(str(level), priority)
            m.steps_skipped.labels(str(level), priority)
        for role in roles:
            m.duty_gaps.labels(role, priority)
            m.busy_skipped.labels(role, priority)
            m.all_engaged.labels(role, priority)
    for risk in RISKS:
        for route in (*ROUTES, "none"):
            m.sessions_marked.labels(risk, route)


def core_gauges(core: SiteCore, clock: Callable[[], float],
                per_booth: BoothGauges | None = None) -> Iterable[Metric | Text]:
    """The site's state now: incidents, duty, sessions, booths and devices; the per-booth
    gauges' text made with ``per_booth`` (`Metrics.per_booth`: what it learnt is kept)."""
    now = clock()
    open_by: dict[tuple[str, ...], float] = {
        (p, s): 0.0 for p in ("high", "medium", "low")
        for s in ("open", "acknowledged", "attended")
    }
    for inc in core.incidents.values():
        open_by[(inc.priority, inc.state.value)] += 1
    yield gauge("boothwatch_incidents_open", "Unresolved incidents by priority and state",
                ["priority", "state"], open_by)
    yield gauge("boothwatch_responders_on_duty", "Responders on duty now, by role", ["role"],
                {(role,): float(n) for role, n in core.roster.on_duty_by_role(now).items()})
    offset = datetime.fromtimestamp(now, core.roster.tz).utcoffset()
    yield gauge("boothwatch_site_utc_offset_seconds",
                "The site's time zone's offset from UTC now (3600 for UTC+1): hour-of-day "
                "panels group by local time with it", [],
                {(): offset.total_seconds() if offset is not None else 0.0})
    views = core.booth_views()
    booths = [v.id for v in views]
    per_booth = per_booth or BoothGauges()
    occupied = [1.0 if v.occupied else 0.0 for v in views]
    yield gauge("boothwatch_sessions_active", "Booths occupied now", [],
                {(): float(sum(occupied))})
    yield per_booth.family("boothwatch_booth_occupied", "1 while the booth is occupied",
                           booths, occupied)
    yield per_booth.family("boothwatch_booth_still",
                           "1 while an occupied booth's person is still", booths,
                           [1.0 if v.occupied and v.motion in ("still", "absent") else 0.0
                            for v in views])
    rank = {"low": 1.0, "medium": 2.0, "high": 3.0}
    yield per_booth.family("boothwatch_booth_incident_priority",
                           "Open incident at the booth: 0 none, 1 low, 2 medium, 3 high",
                           booths, [rank[v.incident.priority] if v.incident else 0.0
                                    for v in views])
    oldest = min((inc.raised_at for inc in core.incidents.values()), default=None)
    yield gauge("boothwatch_oldest_open_incident_age_seconds",
                "Age of the oldest unresolved incident (0 when none)", [],
                {(): 0.0 if oldest is None else now - oldest})
    devices = core.device_views()
    if devices:
        by_state: dict[tuple[str, ...], float] = {("online",): 0.0, ("offline",): 0.0}
        for d in devices:
            by_state[("online" if d.online else "offline",)] += 1
        yield gauge("boothwatch_devices", "Configured devices by state", ["state"], by_state)
        yield gauge("boothwatch_device_last_seen_age_seconds",
                    "Seconds since a device was last heard", ["device", "booth"],
                    {(d.id, d.booth): now - d.last_seen for d in devices
                     if d.last_seen is not None})
        yield gauge("boothwatch_device_battery_percent", "Last reported battery",
                    ["device", "booth"],
                    {(d.id, d.booth): float(d.battery) for d in devices
                     if d.battery is not None})
    yield per_booth.family("boothwatch_booth_unmonitored", "1 while a booth sensor is offline",
                           booths, [1.0 if v.unmonitored else 0.0 for v in views])
    yield per_booth.family("boothwatch_booth_high_risk",
                           "1 while the booth's session is marked high risk", booths,
                           [1.0 if v.risk == "high" else 0.0 for v in views])
    # the "no events" alert holds its peace outside opening hours (deploy/prometheus)
    yield gauge("boothwatch_site_open", "1 within the site's opening hours ([site] hours; "
                "always 1 without them)", [], {(): 0.0 if core.closed else 1.0})


def process_gauges(clock: Callable[[], float]) -> Iterable[Metric]:
    # a leak of tasks (one per page, per connection...) shows here long before memory
    yield gauge("boothwatch_event_loop_tasks", "Tasks alive on the service's event loop",
                [], {(): float(len(asyncio.all_tasks()))})
    if isinstance(clock, ServiceClock):
        yield gauge("boothwatch_clock_skew_seconds",
                    "Wall clock minus the service clock (timers follow the service clock)",
                    [], {(): clock.skew()})


def board_gauges(feed: BoardFeed, config: Config, clock: Callable[[], float]
                 ) -> Iterable[Metric]:
    """The station boards: how many are connected, whether one should be, how many fell behind."""
    yield gauge("boothwatch_boards_connected", "Station boards with an open stream", [],
                {(): float(feed.connected)})
    hours = config.board.expected_hours
    expected = hours is None or within(hours, clock(), ZoneInfo(config.site.timezone))
    yield gauge("boothwatch_board_expected",
                "1 while a station board should be connected ([board] expected_hours)", [],
                {(): float(expected)})
    yield counter("boothwatch_boards_dropped",
                  "Station boards cut off for falling behind (each reconnects to a fresh "
                  "snapshot)", feed.dropped)


def store_gauges(store: Store) -> Iterable[Metric]:
    yield gauge("boothwatch_store_writable", "1 while the last store commit succeeded",
                [], {(): 1.0 if store.writable else 0.0})
    yield gauge("boothwatch_store_pending_writes", "Rows waiting for the next commit",
                [], {(): float(store.pending())})
    yield gauge("boothwatch_store_last_commit_seconds", "Duration of the last commit",
                [], {(): store.last_commit_seconds})
    yield counter("boothwatch_store_commit_failures",
                  "Store commits that failed (each is retried, never dropped)",
                  store.commit_failures)
