"""Prometheus metrics, each registry private to one runtime (tests run several).

Label values are bounded: booth ids come from the config, reasons and results
from fixed sets, never from payloads; no label carries personal data.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from alerts.delivery import after_pages
from devices.adapters.payload import REASONS
from monitor.clock import ServiceClock
from monitor.core.events import OUTCOMES as OUTCOME_VALUES
from monitor.core.events import Audit, IncidentChanged
from monitor.core.incident import (
    Change,
    DutyGap,
    IncidentView,
    OutcomeSet,
    State,
    StepFired,
    StepSkipped,
    Transition,
    Trigger,
)
from monitor.core.settings import Config
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
        self._live = CollectorRegistry()  # scrape-time gauges from the core's state
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
        common = ["trigger", "priority", "booth", "level"]
        self.to_ack = Histogram(
            "boothwatch_time_to_acknowledge_seconds", "From raised_at to the first acknowledgement",
            common, buckets=RESPONSE_BUCKETS, registry=r,
        )
        self.to_presence = Histogram(
            "boothwatch_time_to_presence_seconds", "From raised_at to the first presence",
            common, buckets=RESPONSE_BUCKETS, registry=r,
        )
        self.to_resolve = Histogram(
            "boothwatch_time_to_resolve_seconds", "From raised_at to resolved",
            common, buckets=RESPONSE_BUCKETS, registry=r,
        )

    def count(self, counter: Counter, *labels: str) -> None:
        """``counter.labels(*labels).inc()`` for the per-message counters, the labelled
        child cached: prometheus_client's labels() cost more than the rest of counting."""
        key = (id(counter), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*labels)
        child.inc()

    def watch(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Add gauges computed at scrape time from live state (read on the event loop)."""
        self._live.register(_Live(collect))

    def render(self) -> bytes:
        return generate_latest(self.registry) + generate_latest(self._live)

    async def render_async(self) -> bytes:
        """The same text, without holding the event loop for the whole render.

        The live gauges read the core's state, so they are rendered here on the loop;
        the counters and histograms (thread-safe in prometheus_client) in a worker
        thread. At a few thousand per-booth histogram series the text is megabytes
        and takes most of a second to render: on the loop, that would hold back pages
        for as long; in a thread, the loop gets the GIL back every switch interval.
        """
        live = generate_latest(self._live)
        return await asyncio.to_thread(generate_latest, self.registry) + live


class _Live(Collector):
    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


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

    def command(self, cmd: IncidentChanged | Audit) -> None:
        match cmd:
            case IncidentChanged(view=view, changes=changes):
                self._incident(view, changes)
            case Audit(kind=kind, subject=subject, detail=detail):
                log.info("audit", kind=kind, subject=subject,
                         **{k: v for k, v in detail.items() if k in _AUDIT_LOGGED})
                if kind == "trigger_suppressed":
                    self.metrics.suppressed.labels(detail["trigger"], subject).inc()

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
                case OutcomeSet(outcome=outcome):
                    if outcome in OUTCOME_VALUES:
                        m.outcomes.labels(outcome, trigger).inc()
                case Transition(was=None):
                    m.incidents_raised.labels(trigger, view.priority, view.booth).inc()
                    log_soon("incident_raised", incident=view.id, booth=view.booth,
                             trigger=trigger, priority=view.priority)
                case Transition(to=State.OPEN):
                    m.reopened.inc()
                case Transition(to=State.ACKNOWLEDGED, first=True, at=at):
                    m.to_ack.labels(*labels).observe(at - view.raised_at)
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


def log_soon(event: str, **fields: Any) -> None:
    """An info line written once the pages sent meanwhile are out (a line costs tens of µs)."""
    after_pages(functools.partial(log.info, event, **fields))


# never free text; a "by" that is not a responder id is hidden by monitor/logs.py
_AUDIT_LOGGED = frozenset({"trigger", "by", "on", "via", "until"})


def precreate(metrics: Metrics, config: Config) -> None:
    """Start bounded label sets at 0, so rate() and increase() see the first event.

    Per-booth series are left to appear on first use: at thousands of booths they
    would cost more than the first sample is worth.
    """
    m = metrics
    for reason in (*REASONS, "retained"):
        m.rejected.labels(reason)
    for event in ("monitoring_down", "monitoring_restored"):
        for result in ("sent", "failed"):
            m.monitoring_messages.labels(event, result)
    for trigger in Trigger:
        for outcome in OUTCOMES:
            m.incidents_resolved.labels(outcome, trigger.value)
        for outcome in OUTCOME_VALUES:
            m.outcomes.labels(outcome, trigger.value)
    roles = {role for r in config.responders for role in r.roles}
    for priority, policy in config.escalation.items():
        for level in range(1, len(policy.steps) + 1):
            m.steps.labels(str(level), priority)
            m.steps_skipped.labels(str(level), priority)
        for role in roles:
            m.duty_gaps.labels(role, priority)


def core_gauges(core: SiteCore, clock: Callable[[], float]) -> Iterable[Metric]:
    """The site's state now: incidents, duty, sessions, booths and devices."""
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
    views = core.booth_views()
    yield gauge("boothwatch_sessions_active", "Booths occupied now", [],
                {(): float(sum(1 for v in views if v.occupied))})
    yield gauge("boothwatch_booth_occupied", "1 while the booth is occupied", ["booth"],
                {(v.id,): float(v.occupied) for v in views})
    yield gauge("boothwatch_booth_still", "1 while an occupied booth's person is still",
                ["booth"], {(v.id,): float(v.occupied and v.motion in ("still", "absent"))
                            for v in views})
    rank = {"low": 1.0, "medium": 2.0, "high": 3.0}
    yield gauge("boothwatch_booth_incident_priority",
                "Open incident at the booth: 0 none, 1 low, 2 medium, 3 high", ["booth"],
                {(v.id,): rank[v.incident.priority] if v.incident else 0.0 for v in views})
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
    yield gauge("boothwatch_booth_unmonitored", "1 while a booth sensor is offline",
                ["booth"], {(v.id,): 1.0 if v.unmonitored else 0.0 for v in views})


def process_gauges(clock: Callable[[], float]) -> Iterable[Metric]:
    # a leak of tasks (one per page, per connection...) shows here long before memory
    yield gauge("boothwatch_event_loop_tasks", "Tasks alive on the service's event loop",
                [], {(): float(len(asyncio.all_tasks()))})
    if isinstance(clock, ServiceClock):
        yield gauge("boothwatch_clock_skew_seconds",
                    "Wall clock minus the service clock (timers follow the service clock)",
                    [], {(): clock.skew()})


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
