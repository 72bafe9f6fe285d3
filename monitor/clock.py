"""The service's clock: epoch seconds that advance with the monotonic clock.

Every deadline (escalation steps, long sessions, stillness, device timeouts) is a
point in this time; the timer task sleeps on asyncio's monotonic clock towards it.
Were the core fed ``time.time()``, an NTP step of +1 h would make every timer due
within the next hour fire at once, and a step of -1 h would hold every page back
by an hour. So the clock is read as wall time once, at start, and from then on
moves only with ``time.monotonic()``.

A step of the wall clock while running is noticed (``observe``), logged and counted
by the runtime, and shown as the skew between wall time and service time; records
keep using service time until the next start, so a session's durations stay true.
At start the clock never goes back behind the newest time already recorded
(``not_before``): after a backward step and a restart, stored deadlines are not
pushed an hour into the future.
"""

from __future__ import annotations

import time
from collections.abc import Callable

STEP_THRESHOLD = 2.0  # seconds of skew change that count as a step, not drift


class ServiceClock:
    def __init__(self, wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic) -> None:
        self._wall = wall
        self._mono = mono
        self._offset = wall() - mono()
        self._last_skew = 0.0

    def __call__(self) -> float:
        return self._offset + self._mono()

    def not_before(self, floor: float | None) -> None:
        """Start no earlier than ``floor`` (the newest recorded time), before first use."""
        if floor is not None and self() < floor:
            self._offset += floor - self()
        self._last_skew = self.skew()

    def skew(self) -> float:
        """Wall time minus service time: 0 unless the wall clock was stepped."""
        return self._wall() - self()

    def observe(self) -> float | None:
        """The size of a wall-clock step since the last call, or None if there was none."""
        skew = self.skew()
        step = skew - self._last_skew
        if abs(step) < STEP_THRESHOLD:
            return None
        self._last_skew = skew
        return step
