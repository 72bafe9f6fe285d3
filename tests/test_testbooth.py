"""`boothwatch test-booth` as a subprocess against the real service (Mosquitto, SQLite, HTTP).

Booth 3 has three canonical devices in the config: a call button, a motion radar and an
occupancy timer that the test never lets speak. The service runs on a hand clock, so the
stillness the walk-through asks for passes when the test says so.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from tests.harness.broker import Mosquitto, Publish
from tests.harness.process import ROOT
from tests.harness.service import (
    HandClock,
    Service,
    event,
    events_topic,
    eventually,
    start_service,
)
from tests.harness.site import SITE, Site, booths, device

pytestmark = pytest.mark.integration


def booth_three(site: Site) -> None:
    site.booths = booths(3)
    topic = f"boothwatch/{SITE}/booths/b3/events"
    site.devices = [device("b3-button", "canonical", topic, "b3", "call_button"),
                    device("b3-radar", "canonical", topic, "b3", "motion"),
                    device("b3-timer", "canonical", topic, "b3", "occupancy")]


async def line(stream: asyncio.StreamReader, seen: list[str], starting: str) -> None:
    """Read the command's output until a line starts so."""
    async with asyncio.timeout(20):
        while not any(s.startswith(starting) for s in seen):
            raw = await stream.readline()
            assert raw, f"output ended before {starting!r}: {seen}"
            seen.append(raw.decode().rstrip("\n"))


async def test_booth_walk_through_reports_devices_and_triggers_and_pages_only_the_tester(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Call, then stillness: both triggers fire, the two devices that spoke are heard and
    the silent one named; Ana, testing, hears of each trigger; nobody is paged, no incident
    is raised; after the test the booth pages again."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, edit=booth_three,
                             clock=HandClock(), stillness="3m") as svc:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "monitor.cli", "test-booth", "--config",
            str(tmp_path / "boothwatch.toml"), "--booth", "b3", "--responder", "ana",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT)
        assert proc.stdout is not None
        out: list[str] = []
        await line(proc.stdout, out, "1. Go into Booth 3")
        assert out[0].startswith("Testing Booth 3 (b3) until ") and out[0].endswith(
            "its alarms page only ana.")

        def send(kind: str, **fields: object) -> None:
            svc.publish(events_topic("b3"), event(kind, **fields))

        send("button", press="call", device="b3-button")
        await line(proc.stdout, out, "2. Now stay still")
        assert out[-2] == "   the call trigger fired"
        send("motion", state="still", device="b3-radar")
        await eventually(lambda: svc.runtime.core.booths["b3"].still_since is not None)
        send("occupancy", occupied=True, device="b3-radar")
        await eventually(lambda: svc.runtime.core.booths["b3"].occupied)
        svc.advance(180)
        async with asyncio.timeout(30):
            rest, err = await proc.communicate()
        out += rest.decode().splitlines()
        assert proc.returncode == 0, (out, err.decode())
        assert "   the unresponsive trigger fired" in out
        report = out[out.index("Devices heard:"):]
        assert report == [
            "Devices heard:",
            "  b3-button: call button",
            "  b3-radar: motion still, occupied",
            "Configured but not heard: b3-timer",
            "Triggers fired: call, unresponsive",
            "PASSED: the call and unresponsive triggers fired",
        ]
        await nobody_paged_but_ana(svc)


async def nobody_paged_but_ana(svc: Service) -> None:
    assert svc.hook.pages == []
    assert await svc.incidents() == []
    notices = await eventually(lambda: len(svc.hook.notices) == 2 and svc.hook.notices)
    assert [(n["responder"], n["message"]) for n in notices] == [
        ("ana", "TEST · Booth 3: call button pressed (a device test: nobody else is paged)"),
        ("ana", "TEST · Booth 3: no movement for 3m (a device test: nobody else is paged)")]
    async with svc.http.get(f"{svc.base}/api/booths/b3/test") as resp:
        test = await resp.json()
    assert (test["running"], [f["trigger"] for f in test["fired"]]) == (
        False, ["call", "unresponsive"])
    # the test is over: the person still there is timed afresh, and a call pages again
    svc.publish(events_topic("b3"), event("button", press="call", device="b3-button"))
    pages = await svc.hook.wait(1)
    assert (pages[0]["booth"], pages[0]["triggers"]) == ("b3", ["call"])


async def test_booth_that_cannot_be_tested_says_why(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """An open incident at the booth: exit 2 naming it; an unknown booth: exit 2."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, edit=booth_three) as svc:
        svc.publish(events_topic("b3"), event("button", press="call"))
        await svc.hook.wait(1)
        config = str(tmp_path / "boothwatch.toml")
        for booth, message in (("b3", "HTTP 409: the booth has an open incident"),
                               ("b9", "unknown booth 'b9' (known: b1, b2, b3)")):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "monitor.cli", "test-booth", "--config", config,
                "--booth", booth, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, cwd=ROOT)
            _, err = await proc.communicate()
            assert proc.returncode == 2 and message in err.decode(), err.decode()
