"""A booth's device self-test: what it heard and which triggers fired, paging nobody. Pure.

Theory of operation
-------------------
``boothwatch test-booth --booth b3`` (or the API) starts a test of one booth for a
while (at most `MAX_TEST`). Someone stands in the booth and follows the walk-through:
sit down (occupancy), press the call button, then stay still for the booth's
``stillness``. While the test runs, the site core records every event the booth's
devices send (`heard`) and, instead of raising an incident, every trigger that
fires (`fired`), telling only the person testing, when they gave their responder
id. Nobody else is paged, no incident is recorded, so neither the reports nor the
alarm-fatigue figures count a test.

Safety rules: a test starts only on a booth with no open incident (a person may
need help there) and runs for a bounded time; when it ends (asked, or at
``until``) the booth's stillness clock restarts, so the person who tested is timed
afresh like anyone else in the booth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, assert_never

from monitor.core.events import BoothEvent, Button, Door, Heartbeat, Motion, Occupancy

MAX_TEST = 30 * 60.0  # seconds: a walk-through takes minutes; longer is a forgotten test


@dataclass(slots=True)
class BoothTest:
    id: str
    booth: str
    started: float
    until: float
    tester: str | None  # the responder id told of each trigger, if any
    ended: float | None = None
    # device id (or "booth" for events that name none) -> kinds of event heard, first time
    heard: dict[str, dict[str, float]] = field(default_factory=dict)
    fired: list[tuple[float, str]] = field(default_factory=list)  # (at, trigger)

    def hear(self, device: str | None, kind: str, now: float) -> None:
        self.heard.setdefault(device or "booth", {}).setdefault(kind, now)

    def fire(self, trigger: str, now: float) -> None:
        self.fired.append((now, trigger))

    def snapshot(self) -> dict[str, Any]:
        """Times as epoch seconds; the API turns them into ISO 8601."""
        return {
            "id": self.id, "booth": self.booth, "started": self.started, "until": self.until,
            "tester": self.tester, "ended": self.ended, "running": self.ended is None,
            "heard": {device: dict(kinds) for device, kinds in self.heard.items()},
            "fired": [{"at": at, "trigger": trigger} for at, trigger in self.fired],
        }


def heard(event: BoothEvent) -> str:
    """What a booth event said, as the test lists it (for the technician: English)."""
    match event:
        case Occupancy(occupied=occupied):
            return "occupied" if occupied else "vacant"
        case Motion(state=state):
            return f"motion {state.value}"
        case Button(press=press):
            return f"{press.value} button"
        case Heartbeat():
            return "heartbeat"
        case Door(closed=closed):
            return "door closed" if closed else "door open"
        case _:
            assert_never(event)
