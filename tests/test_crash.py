"""Crash anywhere: the real service SIGKILLed at random moments loses no event, incident or page.

A handful of seeded trials of `tests/harness/crash.py` (the scenario, the kill plans and
the oracle are described there); `bench/crash.py` runs hundreds. BOOTHWATCH_CRASH_SEED
moves the seeds, e.g. to replay a failure `bench/crash.py` found.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.harness.broker import Mosquitto
from tests.harness.crash import run_trials

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
