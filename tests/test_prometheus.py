"""The alert rules and dashboards, checked by promtool and against a real Prometheus scraping
the real service while booths call, wait, go unmonitored and lose their broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness.broker import Mosquitto, Publish
from tests.harness.prometheus import (
    DEPLOY,
    Prometheus,
    PrometheusBin,
    require_prometheus,
    rules_for_test,
)
from tests.harness.service import event, events_topic, eventually, start_service
from tests.harness.site import SITE, Site, device

pytestmark = pytest.mark.integration

RULES = DEPLOY / "rules" / "boothwatch.yml"
DASHBOARDS = sorted((DEPLOY.parent / "grafana" / "dashboards").glob("*.json"))
PANEL_TYPES = {"timeseries", "stat", "table", "bargauge"}
DATASOURCE = {"type": "prometheus", "uid": "boothwatch-prom"}
SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)\{([^}]*)\}")
# the series with a booth label, recorded ones included
BY_BOOTH = re.compile(
    r"boothwatch_(booth_|incidents_raised|incidents_classed|time_to_|device_last_seen|"
    r"device_battery|naloxone_doses)|_booth_le:")
# What Grafana would put in place of its variables; "All" is the allValue, ".*".
GRAFANA_VARIABLES = {"$site": ".*", "$booth": ".*", "$__range": "5m", "$__range_s": "300",
                     "$__interval": "1m", "$__rate_interval": "1m"}

HIGH_AFTER = 6  # seconds: the test copy's "too long" for a high incident, 120 s in production
RULE_CHANGES = {
    "min_over_time(boothwatch_booth_incident_priority[2m])":
        f"min_over_time(boothwatch_booth_incident_priority[{HIGH_AFTER}s])",
    "boothwatch_oldest_open_incident_age_seconds > 120":
        f"boothwatch_oldest_open_incident_age_seconds > {HIGH_AFTER}",
}

def with_radar(site: Site) -> None:
    """b2's motion radar, so the booth can lose its sensor while someone is inside."""
    site.devices = [device("b2-radar", "zigbee2mqtt", "zigbee2mqtt/b2-radar", "b2", "motion")]


@pytest.fixture
def prometheus_bin() -> PrometheusBin:
    """prometheus and promtool; skipped when missing, unless CI says they must be there."""
    return require_prometheus()


def promtool(binary: PrometheusBin, *args: str | Path) -> None:
    # `test rules` is CPU-bound: 17-22 s on one box, 29 s on a slower one (alone): a
    # timeout for a hung promtool, not a speed check
    run = subprocess.run([binary.promtool, *map(str, args)], capture_output=True, text=True,
                         timeout=240, check=False)
    assert run.returncode == 0, f"promtool {args}:\n{run.stdout}\n{run.stderr}"


def test_promtool_accepts_config_and_rules_and_their_unit_tests(
    prometheus_bin: PrometheusBin,
) -> None:
    """check config, check rules, and the rule unit tests at production durations pass."""
    promtool(prometheus_bin, "check", "config", DEPLOY / "prometheus.yml")
    promtool(prometheus_bin, "check", "rules", RULES)
    promtool(prometheus_bin, "test", "rules", DEPLOY / "rules_test.yml")


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # inside a row


def test_dashboards_are_grafana_json_on_our_datasource() -> None:
    """Four dashboards; every panel a known type on boothwatch-prom, placed, with queries."""
    assert [p.name for p in DASHBOARDS] == [
        "devices.json", "incidents.json", "live.json", "response-times.json"]
    uids = set()
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        uids.add(board["uid"])
        assert board["schemaVersion"] >= 39 and board["title"].startswith("Boothwatch / ")
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert set(variables) == {"site", "booth"}, path.name
        ids = [p["id"] for p in panels(board)]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in panels(board):
            where = f"{path.name} {panel['title']!r}"
            if panel["type"] == "row":  # a heading over the panels below it
                assert panel["gridPos"]["w"] == 24 and panel["title"], where
                continue
            assert panel["type"] in PANEL_TYPES, where
            assert panel["datasource"] == DATASOURCE, where
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, where
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(refs) == len(set(refs)), where
            for target in panel["targets"]:
                assert target["datasource"] == DATASOURCE, where
                for name, matchers in SELECTOR.findall(target["expr"]):
                    assert 'site=~"$site"' in matchers, f"{where}: {name} not filtered by site"
                    if BY_BOOTH.search(name):
                        assert 'booth=~"$booth"' in matchers, f"{where}: {name} by booth"
    assert len(uids) == len(DASHBOARDS)


def grafana_expr(expr: str) -> str:
    """``expr`` as Grafana sends it with every site and booth selected."""
    for variable in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(variable, GRAFANA_VARIABLES[variable])
    assert "$" not in expr, expr
    return expr


async def fired(prom: Prometheus, alertname: str, timeout: float = 15) -> list[dict[str, str]]:
    """The label sets of ``alertname`` once it fires."""
    found: list[dict[str, str]] = await eventually(
        lambda: prom.firing(alertname), timeout=timeout, every=0.25)
    return found


async def test_alerts_fire_and_every_panel_has_data(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish, prometheus_bin: PrometheusBin,
) -> None:
    """Calls, a page that fails, a booth unmonitored while occupied, no station board, the
    broker lost, the service stopped: each alert fires; and every dashboard query and
    variable has data."""
    rules = rules_for_test(RULES, tmp_path / "rules.yml", RULE_CHANGES)
    async with (
        aiohttp.ClientSession() as http,
        contextlib.AsyncExitStack() as running,
    ):
        svc = await running.enter_async_context(start_service(
            tmp_path, mosquitto, mqtt_publish, edit=with_radar, long_session="5s", step2="1s",
            repeat="3s"))
        runtime, hook = svc.runtime, svc.hook
        http_cfg = runtime.config.http
        async with Prometheus(tmp_path / "prometheus", prometheus_bin.prometheus,
                              f"{http_cfg.host}:{http_cfg.port}", [rules]) as prom:
            groups = {group["name"] for group in await prom.rule_groups()}
            assert groups == set(re.findall(r"^  - name: (\S+)$", RULES.read_text(), re.M))
            await eventually(lambda: prom.query('up{job="boothwatch"} == 1'), timeout=10)

            async def api(incident: str, action: str, **body: str) -> None:
                url = f"{http_cfg.public_url}/api/incidents/{incident}/{action}"
                async with http.post(url, json={"responder": "ana", **body}) as resp:
                    assert resp.status == 200, await resp.text()

            async def answered_call(booth: str) -> None:
                count = len(hook.pages)
                mqtt_publish(events_topic(booth), event("button", press="call"))
                incident = (await hook.wait(count + 1))[count]["incident"]
                await api(incident, "ack")
                await api(incident, "presence")
                await api(incident, "steps", step="entered")
                await api(incident, "steps", step="naloxone")
                await api(incident, "resolve", outcome="ok")

            def booth(name: str) -> dict[str, Any]:
                return next(b for b in runtime.booths_json() if b["booth"] == name)

            # garbage and a stray gateway ack: the rejection and ack panels have data
            mqtt_publish(events_topic("b1"), b"{nope")
            mqtt_publish(f"boothwatch/{SITE}/ack", json.dumps(
                {"incident": "nope", "responder": "ana"}))

            # b2: someone in the booth calls; nobody answers, and the first page fails
            mqtt_publish(events_topic("b2"), event("occupancy", occupied=True))
            mqtt_publish("zigbee2mqtt/b2-radar",
                         '{"presence":true,"movement":"movement","battery":80}')
            await eventually(lambda: booth("b2")["occupied"], timeout=5)
            hook.fail_next = 1
            mqtt_publish(events_topic("b2"), event("button", press="call"))

            # b1: two calls answered, a second apart so Prometheus sees the histograms move,
            # then a session that runs long and ends
            mqtt_publish(events_topic("b1"), event("occupancy", occupied=True))
            await answered_call("b1")
            await asyncio.sleep(1.5)
            await answered_call("b1")
            await eventually(lambda: (booth("b1")["incident"] or {}).get("priority")
                             == "medium", timeout=8)  # long_session
            mqtt_publish(events_topic("b1"), event("occupancy", occupied=False))
            await eventually(lambda: booth("b1")["incident"] is None)

            # b2's radar drops off the Zigbee network with the person still inside
            mqtt_publish("zigbee2mqtt/b2-radar/availability", '{"state":"offline"}')
            await eventually(lambda: booth("b2")["unmonitored"])

            failing = await fired(prom, "BoothwatchPagesFailing")
            assert [(a["channel"], a["site"]) for a in failing] == [("pager", SITE)]
            unmonitored = await fired(prom, "BoothwatchBoothUnmonitoredWhileOccupied")
            assert [a["booth"] for a in unmonitored] == ["b2"]
            high = await fired(prom, "BoothwatchHighIncidentOpenTooLong")
            assert [a["booth"] for a in high] == ["b2"]  # b1's calls were answered
            no_board = await fired(prom, "BoothwatchNoBoard")  # expected at every hour
            assert [(a["severity"], a["site"]) for a in no_board] == [("critical", SITE)]
            assert await prom.firing("BoothwatchNoEvents") == []
            assert await prom.firing("BoothwatchBrokerDisconnected") == []
            assert await prom.firing("BoothwatchDown") == []

            mosquitto.stop()
            broker = await fired(prom, "BoothwatchBrokerDisconnected")
            assert [(a["severity"], a["site"]) for a in broker] == [("critical", SITE)]

            # every panel's every query, as Grafana would send it, has data
            empty = []
            for path in DASHBOARDS:
                board = json.loads(path.read_text())
                for panel in panels(board):
                    for target in panel.get("targets", ()):  # a row has none
                        if not await prom.query(grafana_expr(target["expr"])):
                            empty.append(f"{path.name} {panel['title']!r} {target['refId']}")
                for variable in board["templating"]["list"]:
                    query = variable["query"]
                    if isinstance(query, dict):  # Grafana 10+; older ones save the string
                        query = query["query"]
                    match = re.fullmatch(r"label_values\((.+), *(\w+)\)", query)
                    assert match, f"{path.name} ${variable['name']}: {query}"
                    values = await prom.label_values(match[2], grafana_expr(match[1]))
                    assert values, f"{path.name} ${variable['name']}: no values"
            assert empty == [], "queries without data:\n" + "\n".join(empty)
            assert await prom.label_values("site", "boothwatch_sessions_active") == [SITE]
            assert await prom.label_values("booth", "boothwatch_booth_occupied") == ["b1", "b2"]

            await running.aclose()  # the service stops: the dead-man alert
            down = await fired(prom, "BoothwatchDown")
            assert [(a["job"], a["site"]) for a in down] == [("boothwatch", SITE)]


async def test_a_channel_unverified_for_36_hours_fires(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish, prometheus_bin: PrometheusBin,
) -> None:
    """[self_test] pages daily; Ana answers hers, Rui never does: 37 hours on (a hand clock),
    Prometheus scraping the real service fires BoothwatchChannelUnverified for Rui's pager
    only, at the production threshold."""
    from tests.harness.service import HandClock

    def self_tested(site: Site) -> None:
        site.self_test = {"schedule": "daily 09:00", "answer_within": "1h"}

    rules = rules_for_test(RULES, tmp_path / "rules.yml")
    async with start_service(tmp_path, mosquitto, mqtt_publish, edit=self_tested,
                             clock=HandClock()) as svc:
        for _ in range(2):  # two days' rounds; Ana answers each
            count = len(svc.hook.pages)
            svc.advance(86400 - 1)
            svc.advance(1)
            tests = [p for p in (await svc.hook.wait(count + 2))[count:] if p["kind"] == "test"]
            ana = next(p for p in tests if p["responder"] == "ana")
            async with svc.http.post(ana["ack_url"]) as resp:
                assert resp.status == 200
        svc.advance(38 * 3600 - 2 * 86400)  # 38 h since the start, for Rui
        assert await svc.metric('boothwatch_channel_unverified_seconds{channel="pager",'
                                'responder="rui"}') > 36 * 3600
        http_cfg = svc.runtime.config.http
        async with Prometheus(tmp_path / "prometheus", prometheus_bin.prometheus,
                              f"{http_cfg.host}:{http_cfg.port}", [rules]) as prom:
            unverified = await fired(prom, "BoothwatchChannelUnverified")
            assert [(a["responder"], a["channel"], a["site"]) for a in unverified] == [
                ("rui", "pager", SITE)]
