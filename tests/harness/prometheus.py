"""A real Prometheus for integration tests: our own config, a free port, a private database.

Never the system's Prometheus (Debian's package may start one on 9090): each test runs its
own process on 127.0.0.1 (tests/harness/daemon.py) that scrapes one target every second and
evaluates rules every second, and may send its alerts to the test's own Alertmanager. The
deploy rules are loaded as a test copy made by `rules_for_test`: every `for:` becomes `0s`
and every group `interval:` is dropped, because a test cannot wait a minute for an alert or
five for a recording rule; thresholds written into an expression are changed by the
replacements the test passes, each of which must match. The production durations and
thresholds are tested by promtool's rule unit tests (deploy/prometheus/rules_test.yml).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness.daemon import Daemon, DaemonError, missing
from tests.harness.site import SITE

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
_FOR = re.compile(r"^(\s*)for:.*$", re.MULTILINE)
_INTERVAL = re.compile(r"^\s*interval:.*\n", re.MULTILINE)


@dataclass(frozen=True)
class PrometheusBin:
    prometheus: str
    promtool: str


def find_prometheus() -> PrometheusBin | None:
    """prometheus and promtool on PATH (Debian's package puts both in /usr/bin)."""
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prometheus is None or promtool is None:
        return None
    return PrometheusBin(prometheus, promtool)


def rules_for_test(source: Path, dest: Path, replace: Mapping[str, str] | None = None) -> Path:
    """Copy a rules file with no `for:` wait, no group interval, and ``replace`` applied."""
    text = _FOR.sub(r"\1for: 0s", source.read_text(encoding="utf-8"))
    text = _INTERVAL.sub("", text)
    for old, new in (replace or {}).items():
        if old not in text:
            raise ValueError(f"{source}: {old!r} not found: the rule changed, change the test")
        text = text.replace(old, new)
    dest.write_text(text, encoding="utf-8")
    return dest


class PrometheusError(DaemonError):
    """Prometheus refused a query; the message says why."""


def require_prometheus() -> PrometheusBin:
    """prometheus and promtool, else skip the test (fail it under CI)."""
    found = find_prometheus()
    if found is None:
        missing("prometheus is not installed (make test installs it: apt-get install prometheus)")
    return found


class Prometheus(Daemon):
    """``async with Prometheus(...)``: started and ready inside, stopped after. It scrapes
    ``target`` as the job boothwatch and, given ``alertmanager`` (host:port), sends it its
    alerts."""

    name = "prometheus"

    def __init__(
        self, workdir: Path, binary: str, target: str, rule_files: list[Path],
        site: str = SITE, alertmanager: str | None = None,
    ) -> None:
        super().__init__(workdir, binary)
        self.target = target
        self.rule_files = rule_files
        self.site = site
        self.alertmanager = alertmanager
        self.config_path = self.workdir / "prometheus.yml"

    async def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query now: the result's samples (a scalar comes back as one)."""
        data = await self._get("/api/v1/query", query=promql)
        result = data["result"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": result}]
        samples: list[dict[str, Any]] = result
        return samples

    async def alerts(self) -> list[dict[str, Any]]:
        """Every active alert (pending or firing) with its labels and state."""
        data = await self._get("/api/v1/alerts")
        alerts: list[dict[str, Any]] = data["alerts"]
        return alerts

    async def firing(self, alertname: str) -> list[dict[str, str]]:
        """The label sets of ``alertname``'s firing alerts."""
        return [a["labels"] for a in await self.alerts()
                if a["labels"]["alertname"] == alertname and a["state"] == "firing"]

    async def label_values(self, label: str, match: str) -> list[str]:
        """The values of ``label`` on series matching ``match``, as Grafana's label_values()."""
        values: list[str] = await self._get(f"/api/v1/label/{label}/values", **{"match[]": match})
        return values

    async def rule_groups(self) -> list[dict[str, Any]]:
        data = await self._get("/api/v1/rules")
        groups: list[dict[str, Any]] = data["groups"]
        return groups

    async def _get(self, path: str, **params: str) -> Any:
        async with self.http.get(self.url + path, params=params) as resp:
            body = await resp.json()
        if body.get("status") != "success":
            raise PrometheusError(
                f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def write_config(self) -> None:
        files = "".join(f"\n  - {path}" for path in self.rule_files)
        alerting = "" if self.alertmanager is None else f"""alerting:
  alertmanagers:
    - static_configs:
        - targets: ["{self.alertmanager}"]
"""
        self.config_path.write_text(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:{files}
{alerting}scrape_configs:
  - job_name: boothwatch
    metrics_path: /metrics
    static_configs:
      - targets: ["{self.target}"]
        labels:
          site: {self.site}
""", encoding="utf-8")

    def arguments(self) -> list[str]:
        return [
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
