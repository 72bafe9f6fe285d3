"""The real `boothwatch` process: kill -9 and restart, SIGTERM, and the CLI commands."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest

from tests.harness.broker import Mosquitto, Publish, free_port, retained
from tests.harness.process import ROOT, ServiceProcess
from tests.harness.receivers import Webhook
from tests.harness.service import event, events_topic, eventually
from tests.harness.site import SITE, Site, service_site

pytestmark = pytest.mark.integration

INTERFACE = ROOT.parent / "shared" / "interface.md"


def _service(tmp_path: Path, broker: Mosquitto, hook: Webhook, step2: str = "1s",
             repeat: str = "1s", stillness: str = "3m") -> ServiceProcess:
    return ServiceProcess.of(service_site(
        mqtt_port=broker.port, http_port=free_port(), webhook_url=hook.url,
        store=tmp_path / "boothwatch.db", step2=step2, repeat=repeat, stillness=stillness),
        tmp_path)


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
        assert await svc.stop() == 0


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
        assert await svc.stop() == 0


async def test_sigterm_exits_zero_and_marks_offline(
    tmp_path: Path, mosquitto: Mosquitto, hook: Webhook
) -> None:
    """SIGTERM stops the service cleanly: exit 0, retained status 'offline'."""
    svc = _service(tmp_path, mosquitto, hook)
    svc.start()
    await svc.ready()
    assert retained(mosquitto, f"boothwatch/{SITE}/status") == {"raw": b"online"}
    assert await svc.stop() == 0
    assert retained(mosquitto, f"boothwatch/{SITE}/status") == {"raw": b"offline"}


async def test_kill9_leaves_the_last_will(
    tmp_path: Path, mosquitto: Mosquitto, hook: Webhook
) -> None:
    """A crash is announced by the broker: the Last Will sets status to 'offline'."""
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
    site = Site(store=tmp_path / "x.db")
    site.defaults.update(stillness="soon", long_session="-5m")
    site.responder("rui")["roles"] = "boss"
    path = site.write(tmp_path / "bad.toml")
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
