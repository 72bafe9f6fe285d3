"""Each coordinator metric moves in the scenario that should move it (real service, real HTTP)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.broker import Mosquitto, Publish
from tests.harness.service import HandClock, Service, event, events_topic, start_service

pytestmark = pytest.mark.integration


async def samples(svc: Service) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics, keyed by name and label set."""
    async with svc.http.get(f"{svc.base}/metrics") as resp:
        text = await resp.text()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(all_: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:
    return all_.get((name, frozenset(labels.items())), 0.0)


async def test_incident_metrics_follow_a_call_from_raise_to_resolve(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Raised, steps by level, re-open, response times by booth and level, outcome, gauges.
    Time is stepped by hand."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="0.5s", repeat="1h",
                             ack_timeout="0.7s", clock=HandClock()) as svc:
        before = await samples(svc)
        assert value(before, "boothwatch_booth_incident_priority", booth="b1") == 0
        assert value(before, "boothwatch_oldest_open_incident_age_seconds") == 0

        svc.publish(events_topic("b1"), event("occupancy", occupied=True))
        svc.publish(events_topic("b1"), event("motion", state="still"))
        svc.publish(events_topic("b1"), event("button", press="call"))
        await svc.hook.wait(1)
        svc.advance(1)  # level 2 (nurse and coordinator) at 0.5 s
        page = (await svc.hook.wait(3))[0]
        iid = page["incident"]
        m = await samples(svc)
        assert value(m, "boothwatch_incidents_raised_total", trigger="call", priority="high",
                     booth="b1") == 1
        assert value(m, "boothwatch_escalation_steps_total", level="1", priority="high") == 1
        assert value(m, "boothwatch_escalation_steps_total", level="2", priority="high") == 1
        assert value(m, "boothwatch_booth_occupied", booth="b1") == 1
        assert value(m, "boothwatch_booth_still", booth="b1") == 1
        assert value(m, "boothwatch_booth_incident_priority", booth="b1") == 3
        assert value(m, "boothwatch_incidents_open", priority="high", state="open") == 1
        assert value(m, "boothwatch_oldest_open_incident_age_seconds") == 1
        assert value(m, "boothwatch_last_event_age_seconds") >= 0
        assert ("boothwatch_last_event_age_seconds", frozenset()) in m

        await svc.post(f"/api/incidents/{iid}/ack", {"responder": "ana"})
        svc.advance(0.7)  # nobody came within the ack timeout
        assert value(await samples(svc), "boothwatch_incidents_reopened_total") == 1
        await svc.post(f"/api/incidents/{iid}/ack", {"responder": "rui"})
        await svc.post(f"/api/incidents/{iid}/presence", {"responder": "rui"})
        await svc.post(f"/api/incidents/{iid}/resolve",
                       {"responder": "rui", "outcome": "overdose_naloxone"})
        m = await samples(svc)
        labels = {"trigger": "call", "priority": "high", "booth": "b1", "level": "2"}
        for name in ("boothwatch_time_to_acknowledge_seconds",
                     "boothwatch_time_to_presence_seconds",
                     "boothwatch_time_to_resolve_seconds"):
            assert value(m, f"{name}_count", **labels) == 1, name
        assert value(m, "boothwatch_incidents_resolved_total", outcome="overdose_naloxone",
                     trigger="call") == 1
        assert value(m, "boothwatch_incidents_reopened_total") == 1
        assert value(m, "boothwatch_booth_incident_priority", booth="b1") == 0
        assert value(m, "boothwatch_oldest_open_incident_age_seconds") == 0
        assert value(m, "boothwatch_incidents_open", priority="high", state="open") == 0


async def test_free_text_outcome_is_bounded_in_labels(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """An outcome outside the known set is refused: labels stay bounded."""
    async with start_service(tmp_path, mosquitto, mqtt_publish) as svc:
        svc.publish(events_topic("b2"), event("button", press="call"))
        iid = (await svc.hook.wait(1))[0]["incident"]
        status, _ = await svc.post(f"/api/incidents/{iid}/resolve",
                                   {"responder": "ana", "outcome": "anything_typed"})
        assert status == 400
        status, _ = await svc.post(f"/api/incidents/{iid}/resolve",
                                   {"responder": "ana", "outcome": "other", "note": "typed"})
        assert status == 200
        m = await samples(svc)
        assert value(m, "boothwatch_incidents_resolved_total", outcome="other",
                     trigger="call") == 1
        assert value(m, "boothwatch_incident_outcomes_total", outcome="other",
                     trigger="call") == 1
        assert not any(("outcome", "anything_typed") in labels for _, labels in m)
