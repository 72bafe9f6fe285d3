"""Wall-clock steps (NTP) neither fire timers early nor hold them back.

The unit tests step both clocks by hand. The service tests run the whole service
against a real Mosquitto with a wall clock the test can step (the machine's own
clock cannot be stepped under the other tests): the service clock reads it once at
start and then follows the monotonic clock, as it does in production.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from monitor.clock import ServiceClock
from tests.harness.broker import Mosquitto, Publish
from tests.harness.service import event, events_topic, start_service

HOUR = 3600.0


class Hand:
    """A clock moved by hand."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_service_time_follows_the_monotonic_clock_not_wall_steps() -> None:
    wall, mono = Hand(1_800_000_000.0), Hand(50.0)
    clock = ServiceClock(wall, mono)
    assert clock() == 1_800_000_000.0
    mono.t += 10
    wall.t += 10
    assert clock() == 1_800_000_010.0
    assert clock.observe() is None  # no step: both moved together
    wall.t += HOUR  # NTP steps the wall clock forward
    assert clock() == 1_800_000_010.0
    assert clock.skew() == HOUR
    assert clock.observe() == HOUR
    assert clock.observe() is None  # counted once
    wall.t -= 2 * HOUR
    assert clock.observe() == -2 * HOUR
    mono.t += 5
    assert clock() == 1_800_000_015.0


def test_small_drift_is_not_a_step() -> None:
    wall, mono = Hand(1_800_000_000.0), Hand(0.0)
    clock = ServiceClock(wall, mono)
    wall.t += 0.5
    assert clock.observe() is None


def test_start_never_goes_behind_the_records() -> None:
    wall, mono = Hand(1_800_000_000.0), Hand(0.0)
    clock = ServiceClock(wall, mono)
    clock.not_before(1_800_000_600.0)  # records written before the clock went back 10 min
    assert clock() == 1_800_000_600.0
    assert clock.observe() is None  # the start offset is not a step
    clock.not_before(1_700_000_000.0)  # older records change nothing
    assert clock() == 1_800_000_600.0


class Stepped:
    """The wall clock, plus a step the test makes."""

    def __init__(self) -> None:
        self.step = 0.0

    def __call__(self) -> float:
        return time.time() + self.step


@pytest.mark.integration
@pytest.mark.parametrize("step", [HOUR, -HOUR], ids=["forward", "back"])
async def test_a_wall_clock_step_neither_fires_nor_delays_timers(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish, step: float,
) -> None:
    wall = Stepped()
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="3s", repeat="1h",
                             long_session="20m", clock=ServiceClock(wall)) as svc:
        svc.publish(events_topic("b2"), event("occupancy", occupied=True))  # 20 min to go
        svc.publish(events_topic("b1"), event("button", press="call"))
        await svc.hook.wait(1, timeout=5)
        pressed = svc.hook.received_at[0]
        wall.step = step  # NTP steps the wall clock
        pages = await svc.hook.wait(3, timeout=8)  # level 2: Ana and Rui, 3 s after the press
        assert sorted((p["responder"], p["level"]) for p in pages[1:3]) == [
            ("ana", 2), ("rui", 2)]
        # neither early (a forward step made it due at once) nor an hour late
        assert svc.hook.received_at[1] - pressed >= 2.5
        incidents = await svc.incidents()
        assert [(i["booth"], i["triggers"]) for i in incidents] == [("b1", ["call"])], \
            "the 20 min session on booth 2 must not have fired"
        assert await svc.metric("boothwatch_clock_steps_total") == 1
        assert abs(await svc.metric("boothwatch_clock_skew_seconds") - step) < 5


@pytest.mark.integration
async def test_after_a_backward_step_while_down_the_clock_starts_at_the_records(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish,
) -> None:
    async with start_service(tmp_path, mosquitto, mqtt_publish) as svc:
        svc.publish(events_topic("b1"), event("button", press="call"))
        await svc.hook.wait(1, timeout=5)
        await svc.runtime.store.flush()
        recorded = await svc.runtime.store.latest_time()
    assert recorded is not None
    wall = Stepped()
    wall.step = -600.0  # the wall clock went back 10 min while the service was down
    clock = ServiceClock(wall)
    async with start_service(tmp_path, mosquitto, mqtt_publish, clock=clock) as svc:
        assert clock() >= recorded
        [incident] = await svc.incidents()
        assert incident["state"] == "open"
