"""The shipped Alertmanager config: checked by amtool, every rule routed to people, and the
dead-man alert carried end to end from a real Prometheus through a real Alertmanager to the
site's SMS gateway and ntfy, stood in for by local HTTP servers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from aiohttp import web

from tests.harness.alertmanager import (
    CONFIG,
    Alertmanager,
    AlertmanagerBin,
    amtool,
    require_alertmanager,
    webhooks,
)
from tests.harness.broker import free_port
from tests.harness.prometheus import DEPLOY, Prometheus, require_prometheus, rules_for_test
from tests.harness.receivers import LocalService, Seen, local_service
from tests.harness.service import eventually
from tests.harness.site import SITE

pytestmark = pytest.mark.integration

RULES = DEPLOY / "rules" / "boothwatch.yml"
GATEWAY = "sms-gateway.site.example:8080"
NTFY = "ntfy.site.example"
SECRETS = "/etc/prometheus/alertmanager-secrets/"
TOKENS = {SECRETS + "gateway-token": "gateway-t0ken", SECRETS + "ntfy-token": "tk_ntfy-t0ken"}


@pytest.fixture
def alertmanager_bin() -> AlertmanagerBin:
    return require_alertmanager()


def paths(receiver: str) -> set[str]:
    """host:port and path of each webhook of ``receiver`` in the shipped config."""
    shipped = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    urls = [urlsplit(webhook["url"]) for name, webhook in webhooks(shipped)
            if name == receiver]
    return {url.netloc + url.path for url in urls}


def test_amtool_accepts_the_shipped_config(alertmanager_bin: AlertmanagerBin) -> None:
    """amtool check-config passes, and finds the routes, inhibition and receivers."""
    out = amtool(alertmanager_bin, "check-config", CONFIG)
    assert "SUCCESS" in out and "1 inhibit rules" in out and "2 receivers" in out, out


def test_every_alert_reaches_the_technician_and_critical_ones_the_coordinators(
    alertmanager_bin: AlertmanagerBin,
) -> None:
    """Each alerting rule, routed by amtool with its own labels, lands on a receiver that
    texts the technician; a critical one also texts the coordinators and rings ntfy's
    critical topic."""
    rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"]
             for rule in group["rules"] if "alert" in rule]
    assert len(rules) >= 10 and {r["labels"]["severity"] for r in rules} == {"critical",
                                                                            "warning"}
    for rule in rules:
        severity = rule["labels"]["severity"]
        out = amtool(alertmanager_bin, "config", "routes", "test", f"--config.file={CONFIG}",
                     f"alertname={rule['alert']}", f"severity={severity}", f"site={SITE}")
        assert out.split() == [severity], f"{rule['alert']}: routed to {out}"
    assert paths("critical") == {f"{GATEWAY}/alertmanager/technician",
                                 f"{GATEWAY}/alertmanager/coordinators",
                                 f"{NTFY}/boothwatch-critical"}
    assert paths("warning") == {f"{GATEWAY}/alertmanager/technician",
                                f"{NTFY}/boothwatch-warning"}


def ntfy_templates() -> dict[str, str]:
    """The ntfy title and message templates as the config's comment writes them out."""
    found = dict(re.findall(r"^#   ([tm]): (.+)$", CONFIG.read_text(), re.MULTILINE))
    assert set(found) == {"t", "m"}, found
    return found


def down_alerts(request: Seen, instance: str, status: str) -> list[dict[str, Any]]:
    """The BoothwatchDown alerts for ``instance`` with ``status`` in one notification."""
    return [a for a in request.json()["alerts"] if a["status"] == status
            and a["labels"]["alertname"] == "BoothwatchDown"
            and a["labels"].get("instance") == instance]


async def notifications(
    service: LocalService, path: str, instance: str, count: int, status: str = "firing",
) -> list[Seen]:
    """Wait for ``count`` POSTs to ``path`` that carry ``instance``'s dead-man alert with
    ``status``; returns them all."""
    def carrying() -> list[Seen]:
        found = [r for r in service.matching("POST", path) if down_alerts(r, instance, status)]
        return found if len(found) >= count else []
    seen: list[Seen] = await eventually(carrying, timeout=20, every=0.1)
    return seen


def metrics(request: Seen) -> web.Response:
    """An empty but valid scrape: the target is up."""
    return web.Response(text="", content_type="text/plain")


async def test_dead_man_alert_reaches_sms_and_ntfy_repeats_and_resolves(
    tmp_path: Path, alertmanager_bin: AlertmanagerBin,
) -> None:
    """boothwatch is not running: Prometheus, with the shipped rules, fires BoothwatchDown;
    Alertmanager, with the shipped routes, texts the technician and the coordinators through
    the gateway and rings ntfy's critical topic, each with the alert's labels, annotations
    and the service's token; texts again while it lasts; and says when the target is back."""
    prometheus_bin = require_prometheus()
    files = {}
    for shipped_path, token in TOKENS.items():
        files[shipped_path] = tmp_path / Path(shipped_path).name
        files[shipped_path].write_text(token + "\n")
    port = free_port()
    target = f"127.0.0.1:{port}"  # nothing listens there yet: boothwatch is down
    rules = rules_for_test(RULES, tmp_path / "rules.yml")
    async with (
        local_service() as gateway,
        local_service() as ntfy,
        Alertmanager(tmp_path / "alertmanager", alertmanager_bin.alertmanager,
                     {GATEWAY: gateway.url, NTFY: ntfy.url}, files) as alertmanager,
        Prometheus(tmp_path / "prometheus", prometheus_bin.prometheus, target, [rules],
                   alertmanager=alertmanager.address),
    ):
        technician = await notifications(gateway, "/alertmanager/technician", target, 2)
        coordinators = await notifications(gateway, "/alertmanager/coordinators", target, 1)
        phones = await notifications(ntfy, "/boothwatch-critical", target, 1)
        async with local_service(metrics, port):  # boothwatch is back
            await notifications(gateway, "/alertmanager/technician", target, 1, "resolved")
            await notifications(gateway, "/alertmanager/coordinators", target, 1, "resolved")
            await notifications(ntfy, "/boothwatch-critical", target, 1, "resolved")

    first = technician[0].json()
    assert (first["receiver"], first["status"]) == ("critical", "firing")
    [alert] = down_alerts(technician[0], target, "firing")
    assert alert["labels"] == {"alertname": "BoothwatchDown", "severity": "critical",
                               "job": "boothwatch", "instance": target, "site": SITE}
    assert alert["annotations"]["summary"] == f"boothwatch {target} ({SITE}) is down"
    assert "systemctl status boothwatch" in alert["annotations"]["description"]
    # the repeat is the same alert, not a new one
    assert down_alerts(technician[1], target, "firing")[0]["startsAt"] == alert["startsAt"]
    for request in technician + coordinators:
        assert request.headers["Authorization"] == "Bearer gateway-t0ken"

    ntfy_request = phones[0]
    assert ntfy_request.headers["Authorization"] == "Bearer tk_ntfy-t0ken"
    assert ntfy_request.query == {"tpl": "1", "p": "5", **ntfy_templates()}
    # what the templates read is in the body
    body = ntfy_request.json()
    assert body["status"] == "firing" and body["commonLabels"]["alertname"] == "BoothwatchDown"
    assert all(a["annotations"]["summary"] and a["annotations"]["description"]
               for a in body["alerts"])
