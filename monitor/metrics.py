"""Prometheus metrics, each registry private to one runtime (tests run several).

Label values are bounded: booth ids come from the config, reasons and results
from fixed sets, never from payloads; no label carries personal data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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
