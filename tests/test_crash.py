"""Crash anywhere: the real service SIGKILLed at random moments loses no event, incident or page,
and an incident raised again after a kill keeps the id its first pages named.

A handful of seeded trials of `tests/harness/crash.py` (the scenario, the kill plans and
the oracle are described there); `bench/crash.py` runs hundreds. BOOTHWATCH_CRASH_SEED
moves the seeds, e.g. to replay a failure `bench/crash.py` found.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.harness.broker import Mosquitto
from tests.harness.crash import KillPlan, Trial, run_trials

pytestmark = pytest.mark.integration

TRIALS = 7  # about 9 s each on the 2-core machine
SEED = int(os.environ.get("BOOTHWATCH_CRASH_SEED", "7100"))


async def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path, mosquitto: Mosquitto
                                                       ) -> None:
    """Seeded trials of 1-3 kills each: every event stored once, every incident once with
    its stamps in the script's window, every page due before the ack received."""
    results = await run_trials(range(SEED, SEED + TRIALS), (mosquitto.host, mosquitto.port),
                               tmp_path, stop_on_failure=True)
    failed = [r for r in results if r.failures]
    assert not failed, "\n".join(r.report() for r in failed)
    # the trials did what they claim: killed the service and checked real traffic
    assert len(results) == TRIALS and sum(r.kills for r in results) >= TRIALS
    assert all(r.events == 15 and r.incidents == 3 for r in results)
    assert sum(r.pages_expected for r in results) >= 3 * TRIALS
    # incidents lost before their commit came back under the ids they were paged with
    assert sum(r.ghost_incidents + r.reacks + r.offers_taken for r in results) == 0


@pytest.mark.parametrize("point", ["page:b1:1", "page:b2:1"])
async def test_killed_as_the_first_page_arrives_the_incident_keeps_its_id(
        tmp_path: Path, mosquitto: Mosquitto, point: str) -> None:
    """Killed the moment the first page reaches the pager, before the incident's commit: the
    call redelivered (b1) or the stillness timer restored (b2) raises it again under the id
    of that page, whose MQTT ack (b1) or ack link (b2) then acknowledges it."""
    plan = [KillPlan(point, delay=0.0, downtime=0.5, again_after=None)]
    result = await Trial(SEED, (mosquitto.host, mosquitto.port), tmp_path, plan=plan).run()
    assert not result.failures, result.report()
    assert result.kills == 1
    assert result.ghost_incidents == result.reacks == result.offers_taken == 0
