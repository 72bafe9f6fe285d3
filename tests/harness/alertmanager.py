"""A real Alertmanager for integration tests, from a test copy of the shipped config.

Never the system's Alertmanager (Debian's package may start one on 9093): each test runs its
own process (tests/harness/daemon.py) on a free 127.0.0.1 port, with clustering off (no
gossip port 9094) and its own storage. Its config is deploy/alertmanager/alertmanager.yml
changed by `config_for_test` in three ways only, so routes, matchers, receivers, inhibitions
and URL paths and queries are the shipped ones:
- every route's `group_wait` becomes 0s, `group_interval` 500ms and `repeat_interval` 1s, as a
  test cannot wait minutes for a notification or its repeat;
- each webhook URL's scheme and host:port is replaced by the test's local receiver for that
  host (path and query kept);
- each `credentials_file` is replaced by a file the test wrote.
A host or file the test does not replace fails, so a new receiver changes the test too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from tests.harness.daemon import Daemon, missing

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "alertmanager" / "alertmanager.yml"
TEST_TIMINGS = {"group_wait": "0s", "group_interval": "500ms", "repeat_interval": "1s"}


@dataclass(frozen=True)
class AlertmanagerBin:
    alertmanager: str
    amtool: str


def find_alertmanager() -> AlertmanagerBin | None:
    """The server (Debian names it prometheus-alertmanager) and amtool, on PATH."""
    server = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    amtool = shutil.which("amtool")
    if server is None or amtool is None:
        return None
    return AlertmanagerBin(server, amtool)


def require_alertmanager() -> AlertmanagerBin:
    """The binaries, else skip the test (fail it under CI)."""
    found = find_alertmanager()
    if found is None:
        missing("alertmanager is not installed "
                "(make test installs it: apt-get install prometheus-alertmanager)")
    return found


def amtool(binary: AlertmanagerBin, *args: str | Path) -> str:
    """amtool's output; a non-zero exit fails the test with what amtool said."""
    run = subprocess.run([binary.amtool, *map(str, args)], capture_output=True, text=True,
                         timeout=30, check=False)
    assert run.returncode == 0, f"amtool {args}:\n{run.stdout}\n{run.stderr}"
    return run.stdout


def routes(route: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A route and every route under it."""
    yield route
    for child in route.get("routes", []):
        yield from routes(child)


def webhooks(config: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(receiver name, webhook config) for every webhook of every receiver."""
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            yield receiver["name"], webhook


def config_for_test(
    dest: Path, hosts: Mapping[str, str], files: Mapping[str, Path], source: Path = CONFIG,
) -> Path:
    """Write the test copy of ``source`` (see the module's docstring) to ``dest``.

    ``hosts`` maps a shipped URL's host:port to the test receiver's base URL, ``files`` a
    shipped credentials_file to the test's."""
    # through JSON: the copy has no YAML aliases, so changing a webhook changes only it
    config = json.loads(json.dumps(yaml.safe_load(source.read_text(encoding="utf-8"))))
    for route in routes(config["route"]):
        for key in TEST_TIMINGS.keys() & route.keys():
            route[key] = TEST_TIMINGS[key]
    for name, webhook in webhooks(config):
        shipped = urlsplit(webhook["url"])
        if shipped.netloc not in hosts:
            raise ValueError(f"{source}: receiver {name}: no test receiver for {shipped.netloc}")
        local = urlsplit(hosts[shipped.netloc])
        webhook["url"] = urlunsplit(shipped._replace(scheme=local.scheme, netloc=local.netloc))
        auth = webhook.get("http_config", {}).get("authorization")
        if auth is not None:
            if auth["credentials_file"] not in files:
                raise ValueError(f"{source}: no test file for {auth['credentials_file']}")
            auth["credentials_file"] = str(files[auth["credentials_file"]])
    dest.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return dest


class Alertmanager(Daemon):
    """``async with Alertmanager(...)``: started on the test copy of the shipped config (see
    `config_for_test` for ``hosts`` and ``files``), stopped after."""

    name = "alertmanager"

    def __init__(
        self, workdir: Path, binary: str, hosts: Mapping[str, str], files: Mapping[str, Path],
    ) -> None:
        super().__init__(workdir, binary)
        self.hosts = hosts
        self.files = files
        self.config_path = self.workdir / "alertmanager.yml"

    @property
    def address(self) -> str:
        """host:port, as Prometheus's alerting config names it."""
        return f"127.0.0.1:{self.port}"

    def write_config(self) -> None:
        config_for_test(self.config_path, self.hosts, self.files)

    def arguments(self) -> list[str]:
        return [
            f"--config.file={self.config_path}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address={self.address}",
            "--cluster.listen-address=",  # one instance: no gossip, no port 9094
            "--log.level=warn",
        ]
