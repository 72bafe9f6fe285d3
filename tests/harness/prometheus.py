"""A real Prometheus for integration tests: our own config, a free port, a private database.

Never the system's Prometheus (Debian's package may start one on 9090): each test runs its
own process on 127.0.0.1 that scrapes one target every second and evaluates rules every
second. The deploy rules are loaded as a test copy made by `rules_for_test`: every `for:`
becomes `0s` and every group `interval:` is dropped, because a test cannot wait a minute for
an alert or five for a recording rule; thresholds written into an expression are changed by
the replacements the test passes, each of which must match. The production durations and
thresholds are tested by promtool's rule unit tests (deploy/prometheus/rules_test.yml).
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp

from tests.harness.broker import free_port
from tests.harness.site import SITE

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
_PORT_ATTEMPTS = 3  # a free port can be taken by someone else before prometheus binds it
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


class PrometheusError(RuntimeError):
    """Prometheus did not start, or refused a query; the message says which and why."""


class Prometheus:
    """``async with Prometheus(...)``: started and ready inside, stopped after."""

    def __init__(
        self, workdir: Path, binary: str, target: str, rule_files: list[Path],
        site: str = SITE,
    ) -> None:
        self.binary = binary
        self.workdir = Path(workdir)
        self.target = target
        self.rule_files = rule_files
        self.site = site
        self.config_path = self.workdir / "prometheus.yml"
        self.log_path = self.workdir / "prometheus.log"
        self.port = 0
        self._process: asyncio.subprocess.Process | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        for attempt in range(_PORT_ATTEMPTS):
            self.port = free_port()
            await self._spawn()
            try:
                await self._wait_ready()
                return
            except PrometheusError:
                lost_race = "address already in use" in self.log_text()
                await self._terminate()
                if not lost_race or attempt == _PORT_ATTEMPTS - 1:
                    await self.stop()
                    raise

    async def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL); safe to call more than once."""
        await self._terminate()
        if self._http is not None:
            await self._http.close()
            self._http = None

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

    def log_text(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def _get(self, path: str, **params: str) -> Any:
        assert self._http is not None, "not started"
        async with self._http.get(self.url + path, params=params) as resp:
            body = await resp.json()
        if body.get("status") != "success":
            raise PrometheusError(
                f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def _write_config(self) -> None:
        files = "".join(f"\n  - {path}" for path in self.rule_files)
        self.config_path.write_text(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:{files}
scrape_configs:
  - job_name: boothwatch
    metrics_path: /metrics
    static_configs:
      - targets: ["{self.target}"]
        labels:
          site: {self.site}
""", encoding="utf-8")

    async def _spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                self.binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )

    async def _wait_ready(self) -> None:
        assert self._http is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while loop.time() < deadline:
            if self._process is None or self._process.returncode is not None:
                code = None if self._process is None else self._process.returncode
                raise PrometheusError(f"prometheus exited with {code}:\n{self._log_tail()}")
            try:
                async with self._http.get(self.url + "/-/ready") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise PrometheusError(
            f"prometheus not ready on {self.url} within {START_TIMEOUT:g} s:\n{self._log_tail()}")

    async def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()

    def _log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])
