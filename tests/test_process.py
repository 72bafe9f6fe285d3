"""The real `boothwatch` process: kill -9 and restart, SIGTERM, and the CLI commands."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest

from tests.mosquitto import Mosquitto, Publish, free_port
from tests.service import SITE, Webhook, event, events_topic, eventually, write_config

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
INTERFACE = ROOT.parent / "shared" / "interface.md"


class ServiceProcess:
    """`python -m monitor.cli run --config FILE` as a child process."""

    def __init__(self, config: Path, http_port: int, log: Path) -> None:
        self.config, self.http_port, self.log = config, http_port, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "monitor.cli", "run", "--config", str(self.config)],
                stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT,
                env={k: v for k, v in os.environ.items() if not k.startswith("BOOTHWATCH_")},
            )

    async def ready(self, timeout: float = 15) -> None:
        async def check() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited: {self.log.read_text()[-2000:]}")
            try:
                async with aiohttp.ClientSession() as http, http.get(
                    f"http://127.0.0.1:{self.http_port}/readyz") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(check, timeout, every=0.05)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise
        return self.proc.returncode


@pytest.fixture
async def hook() -> AsyncIterator[Webhook]:
    async with Webhook() as webhook:
        yield webhook


def _service(tmp_path: Path, broker: Mosquitto, hook: Webhook, **config: str) -> ServiceProcess:
    http_port = free_port()
    path = write_config(tmp_path / "boothwatch.toml", mqtt_port=broker.port, http_port=http_port,
                        webhook_url=hook.url, db=tmp_path / "boothwatch.db", **config)
    return ServiceProcess(path, http_port, tmp_path / "service.log")


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def _incidents(port: int) -> list[dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(
        f"http://127.0.0.1:{port}/api/incidents?state=all") as resp:
        result: list[dict[str, object]] = await resp.json()
        return result


async def test_kill9_mid_escalation_keeps_the_original_schedule(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish, hook: Webhook
) -> None:
    """Killed after the first page; on restart level 2 fires at raised_at + 4 s, not later."""
    svc = _service(tmp_path, mosquitto, hook, step2="4s", repeat="1h")
    svc.start()
    try:
        await svc.ready()
        mqtt_publish(events_topic("b1"), event("button", press="call", id="c1"))
        first = (await hook.wait(1))[0]
        await eventually(lambda: _incidents(svc.http_port))  # stored, acked
        svc.kill9()
        svc.start()
        await svc.ready()
        pages = await hook.wait(3, timeout=8)
        level2 = [p for p in pages if p["level"] == 2]
        assert {p["responder"] for p in level2} == {"ana", "rui"}
        assert {p["incident"] for p in pages} == {first["incident"]}
        due = _epoch(first["raised_at"]) + 4
        arrived = hook.received_at[pages.index(level2[0])]
        assert abs(arrived - due) < 0.7, arrived - due
        assert len([p for p in pages if p["level"] == 1]) == 1  # nobody paged twice
    finally:
        assert svc.stop() == 0


async def test_kill9_mid_stillness_and_an_event_sent_while_down(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish, hook: Webhook
) -> None:
    """Stillness due while the service was down pages at once; a call sent meanwhile is paged."""
    svc = _service(tmp_path, mosquitto, hook, stillness="2s", step2="1h", repeat="1h")
    svc.start()
    try:
        await svc.ready()
        mqtt_publish(events_topic("b1"), event("occupancy", occupied=True, id="o1"))
        mqtt_publish(events_topic("b1"), event("motion", state="still", id="m1"))
        still_at = time.time()

        async def stored() -> bool:
            async with aiohttp.ClientSession() as http, http.get(
                f"http://127.0.0.1:{svc.http_port}/api/booths") as resp:
                booths = {b["booth"]: b for b in await resp.json()}
            return booths["b1"]["still_since"] is not None

        await eventually(stored)
        await asyncio.sleep(0.3)  # let the batch commit and the acks go out
        svc.kill9()
        mqtt_publish(events_topic("b2"), event("button", press="call", id="c2"))
        await asyncio.sleep(max(0.0, still_at + 2.5 - time.time()))
        assert hook.pages == []
        restarted = time.time()
        svc.start()
        await svc.ready()
        pages = await hook.wait(2, timeout=5)
        by_booth = {p["booth"]: p for p in pages}
        assert by_booth["b1"]["triggers"] == ["unresponsive"]
        assert by_booth["b2"]["triggers"] == ["call"]
        assert all(t - restarted < 5 for t in hook.received_at)
        assert len(pages) == 2
    finally:
        assert svc.stop() == 0


async def test_sigterm_exits_zero_and_marks_offline(
    tmp_path: Path, mosquitto: Mosquitto, hook: Webhook
) -> None:
    """SIGTERM stops the service cleanly: exit 0, retained status 'offline'."""
    from tests.test_service import retained

    svc = _service(tmp_path, mosquitto, hook)
    svc.start()
    await svc.ready()
    assert retained(mosquitto, f"boothwatch/{SITE}/status") == {"raw": b"online"}
    assert svc.stop() == 0
    assert retained(mosquitto, f"boothwatch/{SITE}/status") == {"raw": b"offline"}


async def test_kill9_leaves_the_last_will(
    tmp_path: Path, mosquitto: Mosquitto, hook: Webhook
) -> None:
    """A crash is announced by the broker: the Last Will sets status to 'offline'."""
    from tests.test_service import retained

    svc = _service(tmp_path, mosquitto, hook)
    svc.start()
    await svc.ready()
    svc.kill9()
    await eventually(lambda: retained(mosquitto, f"boothwatch/{SITE}/status")
                     == {"raw": b"offline"}, timeout=10)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "monitor.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=30)


def test_check_config_accepts_the_interface_example(tmp_path: Path) -> None:
    """The TOML of interface section 3 is accepted and summarised."""
    text = INTERFACE.read_text()
    example = re.search(r"```toml\n(.*?)```", text, re.S)
    assert example is not None
    path = tmp_path / "site.toml"
    path.write_text(example.group(1))
    result = _cli("check-config", str(path))
    assert result.returncode == 0, result.stderr
    for word in ("lisbon-1", "Booth 2", "ana", "role:coordinator"):
        assert word in result.stdout, word


def test_check_config_lists_every_problem(tmp_path: Path) -> None:
    """A wrong config exits 2 naming each mistake by its key path."""
    path = write_config(tmp_path / "bad.toml", mqtt_port=1883, http_port=8080,
                        webhook_url="http://127.0.0.1:9/x", db=tmp_path / "x.db",
                        stillness="soon", long_session="-5m")
    path.write_text(path.read_text().replace('roles = ["coordinator"]', 'roles = "boss"'))
    result = _cli("check-config", str(path))
    assert result.returncode == 2
    for key in ("defaults.stillness", "defaults.long_session", "responders[1].roles"):
        assert key in result.stderr, (key, result.stderr)


def test_version() -> None:
    """--version prints the version."""
    from monitor import __version__

    result = _cli("--version")
    assert result.returncode == 0 and __version__ in result.stdout


def test_run_refuses_a_bad_config(tmp_path: Path) -> None:
    """`run` with a broken config exits 2 before touching anything."""
    path = tmp_path / "bad.toml"
    path.write_text("[site]\nid = 'UPPER case'\n")
    result = _cli("run", "--config", str(path))
    assert result.returncode == 2 and "site.id" in result.stderr
