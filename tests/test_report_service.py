"""`boothwatch report` on the store of the real service: incidents and sessions this test made.

The service runs with a real Mosquitto, real SQLite and real HTTP on a hand clock that
starts on Monday 2025-11-24 06:00 in Lisbon (UTC+0 in winter). The roster has a day
shift (Ana, 08:00-20:00) and a night shift (Bea, 20:00-08:00); Rui coordinates. At b3:

    06:00-06:30  session          06:10  call  ack +20  false_alarm
    06:40        call (no one)    ack +15  no_one_there
    07:00        call             ack +10  false_alarm         (a run of three)
    08:30-10:30  session          09:00  call  ack +40  ok     (after the run)
                                  10:00  call  ack +5   false_alarm  (after an actionable one)

and a call at b1 at 09:30 that `--booth b3` leaves out.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

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
from tests.harness.site import Site, booths, responder

pytestmark = pytest.mark.integration

LISBON = ZoneInfo("Europe/Lisbon")
START = datetime(2025, 11, 24, 6, 0, tzinfo=LISBON).timestamp()
DAY_SHIFT, NIGHT_SHIFT = "daily 08:00-20:00", "daily 20:00-08:00"


def roster(site: Site) -> None:
    site.booths = booths(3)
    site.responders = [
        responder("ana", ["nurse"], ["pager"], shifts=[DAY_SHIFT]),
        responder("bea", ["nurse"], ["pager"], shifts=[NIGHT_SHIFT]),
        responder("rui", ["coordinator"], ["pager"]),
    ]


class Shift:
    """The test's day at the site: move the hand clock to a local time, act there."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc

    def at(self, hhmm: str) -> None:
        hours, minutes = (int(x) for x in hhmm.split(":"))
        when = START + (hours - 6) * 3600 + minutes * 60
        self.svc.advance(when - self.svc.runtime.clock())

    async def publish(self, booth: str, kind: str, **fields: Any) -> None:
        """An event, handled at the clock's time (the service stamps what it receives)."""
        accepted = f'boothwatch_events_total{{kind="{kind}",result="accepted"}}'
        before = await self.svc.metric(accepted)
        self.svc.publish(events_topic(booth), event(kind, **fields))

        async def taken() -> bool:
            return await self.svc.metric(accepted) > before

        await eventually(taken)

    async def call(self, booth: str, who: str, ack_after: float, outcome: str) -> str:
        """A call answered by `who` after `ack_after` s, there a minute later, resolved."""
        await self.publish(booth, "button", press="call")
        incident: str = next(i["id"] for i in await self.svc.incidents("open")
                             if i["booth"] == booth)
        for action, after, body in (("ack", ack_after, {}), ("presence", 60, {}),
                                    ("resolve", 60, {"outcome": outcome})):
            self.svc.advance(after)
            status, reply = await self.svc.post(f"/api/incidents/{incident}/{action}",
                                                {"responder": who, **body})
            assert status == 200, reply
        return incident


async def run_report(*args: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor.cli", "report", *args, "--format", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


async def test_report_by_shift_and_fatigue_match_what_the_service_recorded(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """`report --booth b3 --by shift` groups this test's incidents by the roster's shifts
    in the site's zone; `--fatigue` gives the shares, occupied hours and the drift."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, clock=HandClock(START),
                             edit=roster, long_session="3h", step2="30s", repeat="1m",
                             ack_timeout="10m") as svc:
        day = Shift(svc)
        ids = {}
        await day.publish("b3", "occupancy", occupied=True)
        day.at("06:10")
        ids["night1"] = await day.call("b3", "bea", 20, "false_alarm")
        day.at("06:30")
        await day.publish("b3", "occupancy", occupied=False)
        day.at("06:40")
        ids["night2"] = await day.call("b3", "bea", 15, "no_one_there")
        day.at("07:00")
        ids["night3"] = await day.call("b3", "bea", 10, "false_alarm")
        day.at("08:30")
        await day.publish("b3", "occupancy", occupied=True)
        day.at("09:00")
        ids["day1"] = await day.call("b3", "ana", 40, "ok")
        day.at("09:30")
        other = await day.call("b1", "ana", 7, "ok")
        day.at("10:00")
        ids["day2"] = await day.call("b3", "ana", 5, "false_alarm")
        day.at("10:30")
        await day.publish("b3", "occupancy", occupied=False)
        day.at("11:00")
        await svc.runtime.store.flush()
        config = str(tmp_path / "boothwatch.toml")

        rep = await run_report("--config", config, "--booth", "b3", "--by", "shift",
                               "--from", "2025-11-24", "--to", "2025-11-25", "--incidents",
                               "--fatigue")
        assert rep["timezone"] == "Europe/Lisbon"
        assert [s["name"] for s in rep["shifts"]] == [DAY_SHIFT, NIGHT_SHIFT]
        by = {g["key"]: g for g in rep["groups"]}
        assert list(by) == [DAY_SHIFT, NIGHT_SHIFT]
        assert [i["id"] for i in by[NIGHT_SHIFT]["list"]] == [
            ids["night1"], ids["night2"], ids["night3"]]
        assert [i["id"] for i in by[DAY_SHIFT]["list"]] == [ids["day1"], ids["day2"]]
        assert other not in json.dumps(rep)
        assert by[NIGHT_SHIFT]["to_acknowledge"] == {"n": 3, "p50": 15, "p90": 20, "max": 20}
        assert by[DAY_SHIFT]["to_acknowledge"] == {"n": 2, "p50": 5, "p90": 40, "max": 40}
        assert by[NIGHT_SHIFT]["to_presence"] == {"n": 3, "p50": 75, "p90": 80, "max": 80}
        assert by[NIGHT_SHIFT]["outcomes"] == {"false_alarm": 2, "no_one_there": 1}
        assert [i["raised_at"] for i in by[DAY_SHIFT]["list"]] == [
            "2025-11-24T09:00:00+00:00", "2025-11-24T10:00:00+00:00"]

        night, daytime = by[NIGHT_SHIFT]["fatigue"], by[DAY_SHIFT]["fatigue"]
        assert (night["classed"], night["non_actionable"], night["share"]) == (3, 3, 1.0)
        assert (night["occupied_hours"], night["per_occupied_hour"]) == (0.5, 6.0)
        assert night["to_acknowledge_after_run"]["n"] == 0
        assert (daytime["classed"], daytime["non_actionable"], daytime["share"]) == (2, 1, 0.5)
        assert (daytime["occupied_hours"], daytime["per_occupied_hour"]) == (2.0, 1.0)
        assert daytime["to_acknowledge_after_run"] == {"n": 1, "p50": 40, "p90": 40, "max": 40}
        assert daytime["to_acknowledge_after_actionable"] == {
            "n": 1, "p50": 5, "p90": 5, "max": 5}
        assert daytime["drift"] == 35
        assert [i["after"] for i in by[DAY_SHIFT]["list"]] == ["run", "actionable"]
        total = rep["total"]["fatigue"]
        assert (total["non_actionable"], total["classed"], total["occupied_hours"]) == (4, 5, 2.5)
        assert total["per_occupied_hour"] == 2.0

        # without the config: the zone and the roster as the service recorded them
        again = await run_report("--db", str(tmp_path / "boothwatch.db"), "--booth", "b3",
                                 "--by", "shift", "--from", "2025-11-24", "--to", "2025-11-25")
        assert again["timezone"] == "Europe/Lisbon"
        assert [(g["key"], g["incidents"]) for g in again["groups"]] == [
            (DAY_SHIFT, 2), (NIGHT_SHIFT, 3)]
        # several keys, all booths: b1's call is on the day shift
        both = await run_report("--config", config, "--by", "booth,shift",
                                "--from", "2025-11-24", "--to", "2025-11-25")
        assert [(g["keys"]["booth"], g["keys"]["shift"], g["incidents"])
                for g in both["groups"]] == [
            ("b1", DAY_SHIFT, 1), ("b3", DAY_SHIFT, 2), ("b3", NIGHT_SHIFT, 3)]
