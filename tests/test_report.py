"""`boothwatch report` on a real store: a simulated week driven through the real core.

The week (UTC, Monday 2025-11-24 = d0) has eight incidents with response times
chosen here, so every figure the report gives is known in advance:

    A d0 02:00 b1 call          ack +10  presence +60   resolve +300  ok
    B d0 09:00 b1 call          ack +20  presence +90   resolve +600  naloxone
                                (steps: entered +95, naloxone 2 doses +120)
    C d1 17:00 b2 call          ack +30 (level 2 fired at +30)  presence +90  resolve +900 naloxone
                                (steps: entered +100, naloxone +150, naloxone +300)
    D d2 23:30 b2 call          ack +10  presence +60 (booth)   clear at booth +120 (no outcome)
    E d3 12:00 b3 long_session  nobody; vacancy resolves it at +240: session_ended
    F d4 20:00 b1 call          ack +10, ack timeout at +130 re-opens (level 2), presence +140,
                                resolve +400 ok
    G d5 03:00 b3 unresponsive  ack +25 (rui)  presence +70  resolve +900 oxygen
    H d6 21:00 b2 call          never answered: still open (pages at +0, +30, +90)

Pages to rui fail; the others are sent. D is 00:30 on Thursday in Berlin (UTC+1).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from monitor.cli import _parser
from monitor.cli import main as cli_main
from monitor.core.events import (
    Acknowledge,
    Attend,
    Button,
    Event,
    IncidentChanged,
    Motion,
    MotionState,
    Occupancy,
    Press,
    ProtocolStep,
    RecordStep,
    Resolve,
    SendPage,
)
from monitor.core.words import english
from monitor.report import (
    DEFAULT_SHIFTS,
    GROUPINGS,
    build_report,
    human,
    nearest_rank,
    open_store,
    parse_shifts,
    parse_time,
    render_csv,
    render_json,
    render_table,
)
from monitor.store import PageRow, Store
from tests.harness.core import CoreDriver, make_config
from tests.harness.postgres import PASSWORD

REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2025, 11, 24, tzinfo=UTC).timestamp()  # a Monday, 00:00 UTC
DAY, HOUR, MINUTE = 86400.0, 3600.0, 60.0
WEEK_END = "2025-12-01"  # --to: exclusive
NOW = T0 + 8 * DAY  # when the tests say the report runs: after the week


class Site:
    """The real site core on a hand-stepped clock, keeping what the runtime would store."""

    def __init__(self) -> None:
        self.driver = CoreDriver(make_config(booths=3), now=T0)

    @property
    def now(self) -> float:
        return self.driver.now

    @property
    def changes(self) -> list[IncidentChanged]:
        return [c for _, c in self.driver.history if isinstance(c, IncidentChanged)]

    @property
    def pages(self) -> list[tuple[float, SendPage]]:
        return [(at, c) for at, c in self.driver.history if isinstance(c, SendPage)]

    def at(self, when: float) -> None:
        """Move the clock to `when`, firing every deadline on the way."""
        self.driver.at(when)

    def send(self, when: float, event: Event) -> str | None:
        """Send an event at `when`; the id of the incident it changed, if any."""
        self.driver.at(when)
        changed = [c.view.id for c in self.driver.send(event) if isinstance(c, IncidentChanged)]
        return changed[-1] if changed else None

    def new_incident(self) -> str:
        return self.changes[-1].view.id


def simulate_week() -> tuple[Site, dict[str, str]]:
    site = Site()
    ids: dict[str, str] = {}

    def call(name: str, booth: str, at: float) -> float:
        iid = site.send(at, Button(booth, Press.CALL))
        assert iid is not None
        ids[name] = iid
        return at

    # A, B: b1, night and day of Monday
    t = call("A", "b1", T0 + 2 * HOUR)
    site.send(t + 10, Acknowledge(ids["A"], "ana"))
    site.send(t + 60, Attend(ids["A"], "ana"))
    site.send(t + 300, Resolve(ids["A"], "ana", outcome="ok"))
    t = call("B", "b1", T0 + 9 * HOUR)
    site.send(t + 20, Acknowledge(ids["B"], "ana"))
    site.send(t + 90, Attend(ids["B"], "ana"))
    site.send(t + 95, RecordStep(ids["B"], "ana", ProtocolStep.ENTERED))
    site.send(t + 120, RecordStep(ids["B"], "ana", ProtocolStep.NALOXONE, count=2))
    site.send(t + 600, Resolve(ids["B"], "ana", outcome="overdose_naloxone"))
    # C: acknowledged only when step two (nurse and coordinator) has fired
    t = call("C", "b2", T0 + DAY + 17 * HOUR)
    site.send(t + 30, Acknowledge(ids["C"], "ana"))
    site.send(t + 90, Attend(ids["C"], "ana"))
    site.send(t + 100, RecordStep(ids["C"], "ana", ProtocolStep.ENTERED))
    site.send(t + 150, RecordStep(ids["C"], "ana", ProtocolStep.NALOXONE))
    site.send(t + 300, RecordStep(ids["C"], "ana", ProtocolStep.NALOXONE))
    site.send(t + 900, Resolve(ids["C"], "ana", outcome="overdose_naloxone"))
    # D: late evening UTC, cleared at the booth (no outcome)
    t = call("D", "b2", T0 + 2 * DAY + 23 * HOUR + 30 * MINUTE)
    site.send(t + 10, Acknowledge(ids["D"], "ana"))
    site.send(t + 60, Button("b2", Press.PRESENCE))
    site.send(t + 120, Button("b2", Press.CLEAR))
    # E: a long session (20 min) nobody answers; the person leaves
    t = T0 + 3 * DAY + 12 * HOUR
    site.send(t - 20 * MINUTE, Occupancy("b3", True))
    site.at(t)
    ids["E"] = site.new_incident()
    site.send(t + 240, Occupancy("b3", False))
    # F: acknowledged, nobody there by the ack timeout (120 s): re-opened, step two
    t = call("F", "b1", T0 + 4 * DAY + 20 * HOUR)
    site.send(t + 10, Acknowledge(ids["F"], "ana"))
    site.send(t + 140, Attend(ids["F"], "ana"))
    site.send(t + 400, Resolve(ids["F"], "ana", outcome="ok"))
    # G: a still person (stillness 180 s) is unresponsive at 03:00
    t = T0 + 5 * DAY + 3 * HOUR
    site.send(t - 180, Occupancy("b3", True))
    site.send(t - 180, Motion("b3", MotionState.STILL))
    site.at(t)
    ids["G"] = site.new_incident()
    site.send(t + 25, Acknowledge(ids["G"], "rui"))
    site.send(t + 70, Attend(ids["G"], "rui"))
    site.send(t + 900, Resolve(ids["G"], "rui", outcome="overdose_oxygen"))
    site.send(t + 900, Occupancy("b3", False))
    # H: Sunday evening, never answered
    t = call("H", "b2", T0 + 6 * DAY + 21 * HOUR)
    site.at(t + 90)
    return site, ids


async def write_store(where: Path | str, site: Site, password: str | None = None) -> None:
    store = await Store.open(str(where), password=password)
    writer = asyncio.create_task(store.run_writer())
    for change in site.changes:
        store.put_incident(change.view, change.new)
    for n, (at, page) in enumerate(site.pages):
        status = "failed" if page.responder == "rui" else "sent"
        store.put_page(PageRow(
            id=f"page{n}", incident=page.incident, responder=page.responder, channel="pager",
            level=page.level, payload={"text": english(page.message)}, status=status,
            attempts=1 if status == "sent" else 4, created_at=at, updated_at=at + 1,
            sent_at=at + 1 if status == "sent" else None,
        ))
    # a page still being retried counts as neither sent nor failed
    store.put_page(PageRow(id="retrying", incident=site.changes[-1].view.id, responder="ana",
                           channel="pager", level=2, payload={}, status="retrying",
                           attempts=2, created_at=site.now, updated_at=site.now))
    await store.flush()
    writer.cancel()
    await store.close()


@pytest.fixture(scope="module")
def week(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Site, dict[str, str]]:
    path = tmp_path_factory.mktemp("report") / "week.db"
    site, ids = simulate_week()
    asyncio.run(write_store(path, site))
    return path, site, ids


@pytest.fixture
def db(week: tuple[Path, Site, dict[str, str]]) -> Path:
    return week[0]


def report(
    path: Path, by: str = "booth", tz: str = "UTC", start: str | None = None,
    end: str | None = WEEK_END, **kwargs: Any,
) -> dict[str, Any]:
    zone = ZoneInfo(tz)
    with closing(open_store(path)) as conn:
        return build_report(
            conn, start=parse_time(start, zone) if start else None,
            end=parse_time(end, zone) if end else None, by=by, tz=zone,
            shifts=parse_shifts(DEFAULT_SHIFTS), now=NOW, **kwargs,
        )


def stats(n: int, p50: float | None, p90: float | None, mx: float | None) -> dict[str, Any]:
    return {"n": n, "p50": p50, "p90": p90, "max": mx}


def groups(rep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["key"]: g for g in rep["groups"]}


def test_the_simulated_week_is_what_the_docstring_says(
    week: tuple[Path, Site, dict[str, str]],
) -> None:
    """Guard for the expectations below: the core did what the scenario intends."""
    _, site, ids = week
    last = {c.view.id: c.view for c in site.changes}
    assert datetime.fromtimestamp(T0, UTC).strftime("%A") == "Monday"
    assert [last[ids[k]].triggers[0] for k in "ABCDEFGH"] == [
        "call", "call", "call", "call", "long_session", "call", "unresponsive", "call"]
    assert last[ids["F"]].reopened == 1 and last[ids["C"]].max_level == 2
    assert last[ids["H"]].state == "open"
    per_incident = {k: sum(p.incident == ids[k] for _, p in site.pages) for k in ids}
    assert per_incident == {"A": 1, "B": 1, "C": 3, "D": 1, "E": 1, "F": 3, "G": 1, "H": 5}


def test_totals_of_the_week(db: Path) -> None:
    """Counts, exact nearest-rank percentiles, outcomes, re-opens, levels and pages."""
    total = report(db)["total"]
    assert total["incidents"] == 8
    assert total["priority"] == {"high": 7, "medium": 1, "low": 0}
    # ack: 10 10 10 20 25 30; presence: 60 60 70 90 90 140; resolve: 120 240 300 400 600 900 900
    assert total["to_acknowledge"] == stats(6, 10, 30, 30)
    assert total["to_presence"] == stats(6, 70, 140, 140)
    assert total["to_resolve"] == stats(7, 400, 900, 900)
    assert total["outcomes"] == {"overdose_naloxone": 2, "ok": 2, "overdose_oxygen": 1,
                                 "session_ended": 1, "unspecified": 1}
    assert total["unresolved"] == 1
    assert total["reopened"] == 1
    assert total["max_level"] == 2
    assert total["pages"] == {"sent": 12, "failed": 4}  # rui's: C, F and two of H


def test_by_booth(db: Path) -> None:
    rep = report(db, by="booth")
    assert [g["key"] for g in rep["groups"]] == ["b1", "b2", "b3"]
    b1, b2, b3 = (groups(rep)[b] for b in ("b1", "b2", "b3"))
    assert (b1["incidents"], b2["incidents"], b3["incidents"]) == (3, 3, 2)
    assert b1["to_acknowledge"] == stats(3, 10, 20, 20)
    assert b1["to_presence"] == stats(3, 90, 140, 140)
    assert b1["to_resolve"] == stats(3, 400, 600, 600)
    assert (b1["reopened"], b1["max_level"], b1["pages"]) == (1, 2, {"sent": 4, "failed": 1})
    assert b2["to_acknowledge"] == stats(2, 10, 30, 30)
    assert b2["to_resolve"] == stats(2, 120, 900, 900)
    assert (b2["unresolved"], b2["outcomes"]) == (1, {"overdose_naloxone": 1, "unspecified": 1})
    assert b2["pages"] == {"sent": 6, "failed": 3}
    # one value: p50 = p90 = max = that value
    assert b3["to_acknowledge"] == stats(1, 25, 25, 25)
    assert b3["to_presence"] == stats(1, 70, 70, 70)
    assert b3["to_resolve"] == stats(2, 240, 900, 900)
    assert b3["priority"] == {"high": 1, "medium": 1, "low": 0}
    assert (b3["max_level"], b3["outcomes"]) == (1, {"overdose_oxygen": 1, "session_ended": 1})


def test_by_first_trigger(db: Path) -> None:
    by = groups(report(db, by="trigger"))
    assert {k: g["incidents"] for k, g in by.items()} == {
        "call": 6, "long_session": 1, "unresponsive": 1}
    assert by["long_session"]["to_acknowledge"] == stats(0, None, None, None)
    assert by["long_session"]["to_resolve"] == stats(1, 240, 240, 240)
    assert by["call"]["to_acknowledge"] == stats(5, 10, 30, 30)  # 10 10 10 20 30
    assert by["unresponsive"]["priority"]["high"] == 1


def test_by_shift_in_utc_and_in_berlin(db: Path) -> None:
    rep = report(db, by="shift")
    assert [g["key"] for g in rep["groups"]] == ["night", "day", "evening"]
    assert {k: g["incidents"] for k, g in groups(rep).items()} == {
        "night": 2, "day": 2, "evening": 4}
    assert rep["shifts"][2] == {"name": "evening", "start": "16:00", "end": "24:00",
                                "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}
    # Berlin is UTC+1: D (23:30 UTC) is at 00:30, a night incident
    berlin = groups(report(db, by="shift", tz="Europe/Berlin"))
    assert {k: g["incidents"] for k, g in berlin.items()} == {"night": 3, "day": 2, "evening": 3}
    assert berlin["night"]["to_acknowledge"] == stats(3, 10, 25, 25)  # A 10, D 10, G 25


def test_by_day_and_time_zone_moves_late_evening_to_next_day(db: Path) -> None:
    utc = groups(report(db, by="day"))
    assert {k: g["incidents"] for k, g in utc.items()} == {
        "2025-11-24": 2, "2025-11-25": 1, "2025-11-26": 1, "2025-11-27": 1,
        "2025-11-28": 1, "2025-11-29": 1, "2025-11-30": 1}
    berlin = groups(report(db, by="day", tz="Europe/Berlin"))
    assert "2025-11-26" not in berlin  # D moved to Thursday
    assert berlin["2025-11-27"]["incidents"] == 2
    assert berlin["2025-11-27"]["outcomes"] == {"session_ended": 1, "unspecified": 1}


def test_date_filters_are_half_open_in_the_time_zone(db: Path) -> None:
    """[from, to): a DATE is midnight in the report's zone; an ISO time is exact."""
    assert report(db, start="2025-11-25", end="2025-11-27")["total"]["incidents"] == 2  # C, D
    # Berlin midnight of the 27th is 23:00 UTC on the 26th: D (23:30 UTC) is after it
    berlin = report(db, start="2025-11-25", end="2025-11-27", tz="Europe/Berlin")
    assert berlin["total"]["incidents"] == 1
    assert berlin["from"] == "2025-11-25T00:00:00+01:00"
    assert berlin["to"] == "2025-11-27T00:00:00+01:00"
    # an incident raised exactly at `from` is in; exactly at `to`, out
    assert report(db, start="2025-11-24T02:00:00Z", end="2025-11-24T09:00:00Z")[
        "total"]["incidents"] == 1
    assert report(db, start="2025-11-24T02:00:01Z")["total"]["incidents"] == 7
    # no --from: from the first incident
    assert report(db, end="2025-11-25")["from"] is None
    assert report(db, end="2025-11-25")["total"]["incidents"] == 2


def test_longest_incidents_with_timeline(db: Path, week: tuple[Path, Site, dict[str, str]]
                                         ) -> None:
    """Open H counts by its age at the report's end (3 h); ties: the earlier first."""
    ids = week[2]
    rep = report(db)
    longest = rep["longest"]
    assert [i["id"] for i in longest] == [ids[k] for k in ("H", "C", "G", "B", "F")]
    assert [i["duration"] for i in longest] == [3 * HOUR, 900, 900, 600, 400]
    assert [i["open"] for i in longest] == [True, False, False, False, False]
    f = longest[4]
    assert f["response"] == {"to_acknowledge": 10, "to_presence": 140, "to_resolve": 400,
                             "to_enter": None, "to_naloxone": None}
    assert f["reopened"] == 1
    kinds = [e["kind"] for e in f["timeline"]]
    assert kinds[:2] == ["trigger", "state"] and "ack" in kinds and "presence" in kinds
    assert f["timeline"][0]["at"] == "2025-11-28T20:00:00.000Z"
    assert len(report(db, longest=2)["longest"]) == 2
    assert report(db, longest=0)["longest"] == []
    # report ending before "now": H's age is measured at --to
    assert report(db, end="2025-11-30T22:00:00Z")["longest"][0]["duration"] == HOUR


def test_time_to_enter_and_to_the_first_naloxone(db: Path, tmp_path: Path) -> None:
    """From the protocol steps B and C recorded: the first of each step counts, per group, in
    total, in CSV and in the table; a store made before steps reports none."""
    rep = report(db)
    total, by_booth = rep["total"], groups(rep)
    assert total["to_enter"] == stats(2, 95, 100, 100)
    assert total["to_naloxone"] == stats(2, 120, 150, 150)
    assert by_booth["b1"]["to_naloxone"] == stats(1, 120, 120, 120)
    assert by_booth["b2"]["to_enter"] == stats(1, 100, 100, 100)
    assert by_booth["b3"]["to_enter"] == stats(0, None, None, None)
    rows = {r["booth"]: r for r in csv.DictReader(io.StringIO(render_csv(rep)))}
    assert (rows["b2"]["to_naloxone_n"], rows["b2"]["to_naloxone_p50"]) == ("1", "150.0")
    lines = render_table(rep).splitlines()
    at = lines.index("Protocol steps from raised (n: incidents with that step)")
    assert lines[at + 1].split() == ["to", "enter", "to", "first", "naloxone"]
    assert lines[at + 3].split() == ["b1", "1", "1m35s", "1m35s", "1m35s",
                                     "1", "2m00s", "2m00s", "2m00s"]
    assert max(len(line) for line in lines) <= 100
    old = tmp_path / "old.db"
    old.write_bytes(db.read_bytes())
    with closing(sqlite3.connect(old)) as conn:
        conn.execute("DROP TABLE steps")
        conn.commit()
    assert report(old)["total"]["to_enter"] == stats(0, None, None, None)


def test_csv_one_row_per_group_in_seconds(db: Path) -> None:
    rows = list(csv.reader(io.StringIO(render_csv(report(db, by="booth")))))
    header, body = rows[0], rows[1:]
    assert header[:4] == ["booth", "incidents", "high", "medium"]
    assert [r[0] for r in body] == ["b1", "b2", "b3"]
    b1 = dict(zip(header, body[0], strict=True))
    assert b1["to_acknowledge_n"] == "3"
    assert float(b1["to_presence_p90"]) == 140
    assert float(b1["to_resolve_max"]) == 600
    assert b1["pages_failed"] == "1" and b1["outcome_ok"] == "2"
    assert b1["outcome_overdose_naloxone"] == "1" and b1["outcome_overdose_oxygen"] == "0"
    trig = list(csv.DictReader(io.StringIO(render_csv(report(db, by="trigger")))))
    ls = next(r for r in trig if r["trigger"] == "long_session")
    assert ls["to_acknowledge_n"] == "0" and ls["to_acknowledge_p50"] == ""


def test_json_is_stable_and_parses(db: Path) -> None:
    rep = json.loads(render_json(report(db, by="day")))
    assert list(rep) == ["from", "to", "by", "timezone", "shifts", "groups", "total", "longest",
                         "filters", "listed"]
    assert list(rep["groups"][0]) == [
        "key", "keys", "incidents", "priority", "to_acknowledge", "to_presence", "to_resolve",
        "to_enter", "to_naloxone", "unresolved", "outcomes", "reopened", "max_level", "pages"]
    assert list(rep["total"]) == list(rep["groups"][0])[2:]
    assert (rep["by"], rep["timezone"], rep["to"]) == ("day", "UTC", "2025-12-01T00:00:00+00:00")


def test_table_is_readable(db: Path, week: tuple[Path, Site, dict[str, str]]) -> None:
    assert render_table(report(db)).startswith("Incidents raised before 2025-12-01, UTC")
    text = render_table(report(db, by="booth", start="2025-11-24"))
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert lines[0] == ("Incidents raised from 2025-11-24 to 2025-12-01 (exclusive), "
                        "UTC time (UTC+00:00), by booth")
    b1 = next(line for line in lines if line.startswith("b1 ") and "m" in line)
    assert b1.split() == ["b1", "3", "10s", "20s", "20s", "3", "1m30s", "2m20s", "2m20s",
                          "3", "6m40s", "10m00s", "10m00s"]
    assert any(line.split()[:3] == ["total", "8", "7"] for line in lines)
    assert f"1. {week[2]['H']}  booth b2  high  call" in text
    assert "still open after 3h00m" in text
    assert "re-opened 1x" in text  # F
    day = render_table(report(db, by="day"))
    assert "Mon 2025-11-24" in day


def test_times_shown_carry_the_zone_and_its_offset(db: Path) -> None:
    """Every time the table shows a person is in the report's zone, with its UTC offset,
    both offsets when the span crosses a clock change."""
    berlin = render_table(report(db, tz="Europe/Berlin", start="2025-11-24"))
    assert "Europe/Berlin time (UTC+01:00), by booth" in berlin.splitlines()[0]
    raised = [line for line in berlin.splitlines() if line.strip().startswith("raised ")]
    assert raised and all(re.search(r"raised \w{3} 2025-11-\d\d \d\d:\d\d:\d\d \+01:00,",
                                    line) for line in raised), raised
    lisbon = render_table(report(db, tz="Europe/Lisbon", start="2025-03-01"))
    assert "Europe/Lisbon time (UTC+00:00 to +00:00)" not in lisbon
    assert "Europe/Lisbon time (UTC+00:00), by booth" in lisbon.splitlines()[0]
    summer = render_table(report(db, tz="Europe/Lisbon", start="2025-09-01"))
    assert "Europe/Lisbon time (UTC+01:00 to +00:00), by booth" in summer.splitlines()[0]


def test_without_a_config_the_zone_is_the_one_the_service_recorded(
        db: Path, tmp_path: Path) -> None:
    """`boothwatch run` records the site's time zone in the store: a report without
    --config or --timezone uses it; --timezone still wins."""
    import shutil
    import sqlite3

    copy = tmp_path / "site.db"
    shutil.copy(db, copy)
    with closing(sqlite3.connect(copy)) as conn, conn:
        conn.execute("INSERT INTO meta(key, value) VALUES ('site_timezone', 'Europe/Berlin')")
    code, out, _ = run_cli("--db", str(copy), "--format", "json", "--to", WEEK_END)
    assert (code, json.loads(out)["timezone"]) == (0, "Europe/Berlin")
    code, out, _ = run_cli("--db", str(copy), "--to", WEEK_END)
    assert "Europe/Berlin time (UTC+01:00)" in out.splitlines()[0]
    code, out, _ = run_cli("--db", str(copy), "--format", "json", "--to", WEEK_END,
                           "--timezone", "UTC")
    assert json.loads(out)["timezone"] == "UTC"
    code, out, _ = run_cli("--db", str(db), "--format", "json", "--to", WEEK_END)
    assert json.loads(out)["timezone"] == "UTC"  # an older store, with no zone recorded


def test_empty_report(db: Path) -> None:
    rep = report(db, start="2020-01-01", end="2020-01-02")
    assert rep["groups"] == [] and rep["total"]["incidents"] == 0
    assert rep["total"]["to_resolve"] == stats(0, None, None, None)
    assert "No incidents." in render_table(rep)
    assert render_csv(rep).count("\r\n") == 1  # the header only


def test_human_durations() -> None:
    assert [human(s) for s in (None, 0, 2.5, 7, 59.6, 65, 600, 3599, 3600, 7380, 90000)] == [
        "-", "0s", "2.5s", "7s", "1m00s", "1m05s", "10m00s", "59m59s", "1h00m", "2h03m",
        "1d01h"]


def test_nearest_rank_percentiles() -> None:
    assert nearest_rank([42.0], 50) == 42.0 and nearest_rank([42.0], 90) == 42.0
    assert nearest_rank([10, 20, 30, 40], 50) == 20
    assert nearest_rank([10, 20, 30, 40], 90) == 40
    assert nearest_rank(list(range(1, 11)), 90) == 9


def test_shift_specs() -> None:
    night = parse_shifts("night=22:00-06:00,day=06:00-22:00")
    assert [len(list(s.minutes())) for s in night] == [480, 960]
    assert len(list(parse_shifts("all=00:00-24:00")[0].minutes())) == 1440
    for bad, why in (("night=00:00-09:00,day=08:00-16:00", "overlaps"),
                     ("night=0:00-8:00", "expected"), ("x=08:00-08:00", "same time"),
                     ("a=00:00-01:00,a=02:00-03:00", "twice"), ("x=25:00-26:00", "24:00"),
                     ("other=00:00-01:00", "no shift")):
        with pytest.raises(ValueError, match=why):
            parse_shifts(bad)


def test_gaps_between_shifts_are_other(db: Path) -> None:
    zone = ZoneInfo("UTC")
    with closing(open_store(db)) as conn:
        rep = build_report(conn, start=None, end=parse_time(WEEK_END, zone), by="shift",
                           tz=zone, shifts=parse_shifts("morning=08:00-14:00"), now=NOW)
    assert {g["key"]: g["incidents"] for g in rep["groups"]} == {"morning": 2, "other": 6}


def test_progress_bar_only_past_the_threshold(db: Path) -> None:
    bar = io.StringIO()
    report(db, progress=bar, progress_min_rows=100)
    assert bar.getvalue() == ""
    report(db, progress=bar, progress_min_rows=3)
    drawn = bar.getvalue()
    assert "reading incidents" in drawn and "/8 " in drawn  # the bar knows the 8 rows


def test_the_store_is_opened_read_only(db: Path) -> None:
    import sqlite3

    with closing(open_store(db)) as conn, pytest.raises(sqlite3.OperationalError):
        conn.execute("DELETE FROM incidents")


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    args = _parser().parse_args(["report", *argv])
    from monitor import report_cli as module

    real_err = sys.stderr
    sys.stderr = err
    try:
        code = module.main(args, stdout=out)
    finally:
        sys.stderr = real_err
    return code, out.getvalue(), err.getvalue()


def test_cli_problems_exit_with_a_message(db: Path, tmp_path: Path) -> None:
    code, _, err = run_cli("--db", str(tmp_path / "none.db"))
    assert (code, err) == (1, f"boothwatch report: {tmp_path / 'none.db'}: no such file\n")
    (tmp_path / "junk.db").write_text("not sqlite")
    assert run_cli("--db", str(tmp_path / "junk.db"))[0] == 1
    assert "not a boothwatch store" in run_cli("--db", str(tmp_path / "junk.db"))[2]
    assert run_cli("--db", str(db), "--from", "yesterday")[2].endswith(
        "'yesterday': expected YYYY-MM-DD or an ISO 8601 time\n")
    assert "--to is exclusive" in run_cli("--db", str(db), "--from", "2025-11-25",
                                          "--to", "2025-11-25")[2]
    assert "unknown time zone" in run_cli("--db", str(db), "--timezone", "Mars/Olympus")[2]
    assert run_cli("--db", str(db), "--shifts", "x")[0] == 2
    assert "--db FILE|URL is required" in run_cli()[2]


def test_cli_config_gives_time_zone_and_store(db: Path, tmp_path: Path) -> None:
    config = (REPO / "deploy" / "boothwatch.toml").read_text()
    config = config.replace('"/var/lib/boothwatch/boothwatch.db"', json.dumps(str(db)))
    assert str(db) in config
    (tmp_path / "site.toml").write_text(config)
    code, out, _ = run_cli("--config", str(tmp_path / "site.toml"), "--format", "json",
                           "--from", "2025-11-24", "--to", WEEK_END)
    assert code == 0
    rep = json.loads(out)
    assert rep["timezone"] == "Europe/Lisbon" and rep["total"]["incidents"] == 8
    code, out, _ = run_cli("--config", str(tmp_path / "site.toml"), "--timezone", "UTC",
                           "--format", "json", "--to", WEEK_END)
    assert json.loads(out)["timezone"] == "UTC"


def test_cli_subprocess(db: Path) -> None:
    """The real command line, as a script would run it."""
    done = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "report", "--db", str(db), "--by", "trigger",
         "--from", "2025-11-24", "--to", WEEK_END, "--format", "json"],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no progress bar without a terminal
    rep = json.loads(done.stdout)
    assert [g["key"] for g in rep["groups"]] == ["call", "long_session", "unresponsive"]
    assert rep["total"]["to_presence"] == stats(6, 70, 140, 140)


def test_cli_main_dispatches_report(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["report", "--db", str(db), "--to", WEEK_END, "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("booth,incidents,high,medium,low,")


def test_filters_by_booth_and_first_trigger(db: Path, week: tuple[Path, Site, dict[str, str]]
                                            ) -> None:
    """--booth and --trigger select before grouping; the report says what it selected."""
    ids = week[2]
    rep = report(db, booths=["b3"], incidents=True)
    assert [g["key"] for g in rep["groups"]] == ["b3"]
    assert [i["id"] for i in rep["groups"][0]["list"]] == [ids["E"], ids["G"]]
    assert rep["filters"] == {"booth": ["b3"], "trigger": []}
    rep = report(db, by="trigger", triggers=["call"], booths=["b1", "b2"])
    assert {k: g["incidents"] for k, g in groups(rep).items()} == {"call": 6}
    assert [i["id"] for i in rep["longest"]][:1] == [ids["H"]]
    text = render_table(rep)
    assert "only booth b1, b2; trigger call" in text.splitlines()[1]


def test_by_several_keys_at_once(db: Path) -> None:
    """--by booth,shift: one group per pair that has incidents, booths then shifts in order."""
    rep = report(db, by="booth,shift", booths=["b1", "b2"])
    assert [(g["key"], g["incidents"]) for g in rep["groups"]] == [
        ("b1 / night", 1), ("b1 / day", 1), ("b1 / evening", 1), ("b2 / evening", 3)]
    assert rep["groups"][0]["keys"] == {"booth": "b1", "shift": "night"}
    assert rep["by"] == "booth,shift"
    rows = list(csv.reader(io.StringIO(render_csv(rep))))
    assert rows[0][:3] == ["booth", "shift", "incidents"]
    assert [r[:3] for r in rows[1:]] == [["b1", "night", "1"], ["b1", "day", "1"],
                                         ["b1", "evening", "1"], ["b2", "evening", "3"]]
    lines = render_table(rep).splitlines()
    assert lines[0].endswith("by booth and shift")
    assert next(line for line in lines if line.startswith("b2 ")).split()[:3] == [
        "b2", "evening", "3"]
    with pytest.raises(ValueError, match="not one of"):
        report(db, by="booth,week")


def test_incidents_behind_each_group(db: Path, week: tuple[Path, Site, dict[str, str]]) -> None:
    """--incidents: each group lists its incidents with their times, in JSON, CSV, table."""
    ids = week[2]
    rep = report(db, by="trigger", incidents=True)
    unresponsive = groups(rep)["unresponsive"]["list"]
    assert unresponsive == [{
        "id": ids["G"], "booth": "b3", "trigger": "unresponsive", "priority": "high",
        "raised_at": "2025-11-29T03:00:00+00:00", "to_acknowledge": 25, "to_presence": 70,
        "to_resolve": 900, "outcome": "overdose_oxygen", "open": False}]
    rows = list(csv.DictReader(io.StringIO(render_csv(rep))))
    assert len(rows) == 8 and rows[0]["trigger"] == "call"
    assert next(r for r in rows if r["id"] == ids["H"])["open"] == "True"
    text = render_table(rep)
    assert "unresponsive (1)" in text
    lines = text.splitlines()
    at = lines.index("unresponsive (1)")
    assert lines[at + 1].split() == "id raised booth ack presence resolve outcome".split()
    assert lines[at + 2].split() == [ids["G"], "Sat", "11-29", "03:00", "b3", "25s", "1m10s",
                                     "15m00s", "overdose_oxygen"]


def test_roster_shifts_overlap_goes_to_the_latest_start() -> None:
    """Roster shifts may overlap: a moment is in the shift that began last; none: other."""
    from monitor.core.roster import parse_shift
    from monitor.report_time import ShiftTable, roster_shifts

    shifts = roster_shifts(parse_shift(s) for s in (
        "mon-fri 08:00-16:00", "daily 09:00-17:00", "Mon-Fri 08:00-16:00",
        "sat,sun 20:00-08:00"))
    assert [s.name for s in shifts] == [
        "mon-fri 08:00-16:00", "daily 09:00-17:00", "sat,sun 20:00-08:00"]
    table = ShiftTable(shifts)
    utc = ZoneInfo("UTC")

    def at(day: int, hour: int, minute: int = 0) -> datetime:
        return datetime(2025, 11, 24, hour, minute, tzinfo=utc) + timedelta(days=day)

    assert table.of(at(0, 8, 30)) == "mon-fri 08:00-16:00"
    assert table.of(at(0, 9)) == "daily 09:00-17:00"  # the later start
    assert table.of(at(0, 16, 30)) == "daily 09:00-17:00"
    assert table.of(at(0, 18)) == "other"
    assert table.of(at(6, 7)) == "sat,sun 20:00-08:00"  # Sunday morning: Saturday's night
    assert table.of(at(7, 7)) == "sat,sun 20:00-08:00"  # Monday morning: Sunday's night
    assert table.minutes_left(at(0, 16, 30)) == 30


async def test_the_report_is_the_same_from_postgresql(
        db: Path, week: tuple[Path, Site, dict[str, str]], postgres_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The week written to PostgreSQL reports exactly as it does from SQLite, by every
    grouping and through the command line (--db URL, the password from
    BOOTHWATCH_DB_PASSWORD); the report's connection is read-only."""
    await write_store(postgres_url, week[1], password=PASSWORD)
    zone = ZoneInfo("Europe/Lisbon")
    for by in (*GROUPINGS, "booth,shift", "trigger,day"):
        with closing(open_store(db)) as lite, closing(open_store(postgres_url, PASSWORD)) as pg:
            kw: dict[str, Any] = {"start": None, "end": parse_time(WEEK_END, zone), "by": by,
                                  "tz": zone, "shifts": parse_shifts(DEFAULT_SHIFTS),
                                  "now": NOW, "incidents": True, "fatigue": True}
            assert build_report(pg, **kw) == build_report(lite, **kw)
            kw |= {"booths": ["b1", "b3"], "triggers": ["call"]}
            assert build_report(pg, **kw) == build_report(lite, **kw)
    monkeypatch.setenv("BOOTHWATCH_DB_PASSWORD", PASSWORD)
    from_pg = run_cli("--db", postgres_url, "--format", "json", "--to", WEEK_END)
    assert from_pg == run_cli("--db", str(db), "--format", "json", "--to", WEEK_END)
    assert json.loads(from_pg[1])["total"]["incidents"] == 8
    with closing(open_store(postgres_url, PASSWORD)) as pg, pytest.raises(
            psycopg.errors.ReadOnlySqlTransaction):
        # a statement that writes (a server-side cursor takes no DELETE)
        pg.execute("SELECT nextval(pg_get_serial_sequence('events', 'seq'))").fetchall()
    monkeypatch.setenv("BOOTHWATCH_DB_PASSWORD", "wrong")
    code, _, err = run_cli("--db", postgres_url)
    assert code == 1 and "password authentication failed" in err
    assert err.startswith(f"boothwatch report: cannot connect to {postgres_url}: ")
