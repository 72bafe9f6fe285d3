"""One booth: its session and what its motion sensor says. Pure, no I/O.

Theory of operation
-------------------
A booth is *vacant* or *occupied*. ``occupancy`` events start and end a
session (``session_started_at``). ``motion`` events set the motion state;
``still_since`` is when the booth last went from moving to still or absent.

Two timers run while a booth is occupied, each firing once:

* **unresponsive**: motion ``still`` or ``absent`` continuously for the
  booth's ``stillness``. A presence sensor often loses a person who stops
  moving, so ``absent`` while occupied counts as still, never as vacant. The
  clock starts at the later of ``still_since`` and the session start (a booth
  that was empty and "absent" before someone walked in counts from their entry),
  and restarts when an incident of this booth is resolved while the person is
  still there, so staff who leave a still person are reminded again.
  With no motion reading at all there is nothing to time; device health
  (later) flags such a booth as unmonitored.
* **long_session**: occupied continuously for the booth's ``long_session``.

Door booths (``occupancy_from = "door"``): the door closing starts a session
when presence follows within ``door_window`` (or is already there); the door
opening ends it. A door reported closed again without an open between means an
open was missed: the old session ends and a new one may start. In such a booth
an occupancy sensor only confirms presence; it never ends a session, so a
presence sensor that loses a still person cannot end the session either.

The booth reports what fired; the site core turns that into incidents.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from monitor.core.events import MotionState
from monitor.core.settings import BoothConfig


class Timer(enum.Enum):
    UNRESPONSIVE = "unresponsive"
    LONG_SESSION = "long_session"


@dataclass(frozen=True, slots=True)
class IncidentRef:
    id: str
    priority: str
    state: str
    level: int


@dataclass(frozen=True, slots=True)
class BoothView:
    """A booth as published on its retained state topic and kept in the store."""

    id: str
    name: str
    occupied: bool
    session_started_at: float | None
    motion: str | None
    still_since: float | None
    incident: IncidentRef | None
    devices_ok: bool
    mode: str  # "normal" | "maintenance"
    # {"since", "until", "reason", "by"} while automatic triggers are suppressed
    maintenance: dict[str, Any] | None
    door: str | None  # "closed" | "open" | None (no door reports)
    unmonitored: bool  # a motion, occupancy or door sensor of this booth is offline
    # kept for restart, not published
    stillness_from: float | None
    unresponsive_fired: bool
    long_fired: bool
    door_closed_at: float | None = None
    awaiting_presence: bool = False


_STILL = (MotionState.STILL, MotionState.ABSENT)


class Booth:
    def __init__(self, config: BoothConfig) -> None:
        self.config = config
        self.occupied = False
        self.session_started_at: float | None = None
        self.motion: MotionState | None = None
        self.still_since: float | None = None
        self.stillness_from: float | None = None
        self.unresponsive_fired = False
        self.long_fired = False
        self.door_closed: bool | None = None
        self.door_closed_at: float | None = None
        self.awaiting_presence = False
        self.maintenance: dict[str, Any] | None = None

    @property
    def door_mode(self) -> bool:
        return self.config.occupancy_from == "door"

    # --- events ---------------------------------------------------------------------

    def set_occupied(self, occupied: bool, now: float) -> bool:
        """Apply an occupancy reading; True when a session started or ended."""
        if occupied == self.occupied:
            return False  # a repeated reading is not a new session
        self.occupied = occupied
        self.unresponsive_fired = False
        self.long_fired = False
        if occupied:
            self.session_started_at = now
            self.stillness_from = self._still_clock_start(now)
        else:
            self.session_started_at = None
            self.stillness_from = None
        return True

    def set_motion(self, state: MotionState, now: float) -> bool:
        """Apply a motion reading; True when the motion state changed."""
        if state == self.motion:
            return False
        was_still = self.motion in _STILL
        self.motion = state
        if state in _STILL:
            if not was_still:
                self.still_since = now
                self.unresponsive_fired = False
                self.stillness_from = self._still_clock_start(now)
        else:
            self.still_since = None
            self.stillness_from = None
            self.unresponsive_fired = False
        return True

    def occupancy_reading(self, occupied: bool, now: float) -> bool:
        """An occupancy event: sets the session, or in a door booth confirms presence."""
        if not self.door_mode:
            return self.set_occupied(occupied, now)
        return self.presence_seen(now) if occupied else False

    def presence_seen(self, now: float) -> bool:
        """Someone is in a door booth: start the session the door closing announced."""
        if (
            self.door_mode
            and self.awaiting_presence
            and self.door_closed_at is not None
            and now - self.door_closed_at <= self.config.door_window
        ):
            self.awaiting_presence = False
            return self.set_occupied(True, now)
        return False

    def door(self, closed: bool, now: float) -> bool:
        """A door report; True when a session started or ended."""
        again = closed and self.door_closed is True
        self.door_closed = closed
        if not self.door_mode:
            return False
        changed = False
        if self.occupied and (again or not closed):
            changed = self.set_occupied(False, now)  # opened (or an open was missed)
        self.awaiting_presence = closed
        self.door_closed_at = now if closed else None
        if closed and self.motion in (MotionState.MOVING, MotionState.STILL):
            changed = self.presence_seen(now) or changed  # they are already inside
        return changed

    def start_maintenance(self, now: float, until: float, reason: str, by: str) -> None:
        self.maintenance = {"since": now, "until": until, "reason": reason, "by": by}

    def end_maintenance(self, now: float) -> dict[str, Any] | None:
        """Back to normal; a person still in the booth is timed afresh from now."""
        ended, self.maintenance = self.maintenance, None
        if ended is not None:
            self.incident_resolved(now)
        return ended

    def incident_resolved(self, now: float) -> None:
        """Staff finished with the booth: a person still there is timed afresh."""
        if self.occupied and self.motion in _STILL:
            self.stillness_from = now
            self.unresponsive_fired = False

    # --- timers ---------------------------------------------------------------------

    def _still_clock_start(self, now: float) -> float | None:
        if not self.occupied or self.motion not in _STILL:
            return None
        starts = [t for t in (self.still_since, self.session_started_at) if t is not None]
        return max(starts) if starts else now

    def deadlines(self) -> dict[Timer, float]:
        out: dict[Timer, float] = {}
        if self.occupied and self.stillness_from is not None and not self.unresponsive_fired:
            out[Timer.UNRESPONSIVE] = self.stillness_from + self.config.stillness
        if self.occupied and self.session_started_at is not None and not self.long_fired:
            out[Timer.LONG_SESSION] = self.session_started_at + self.config.long_session
        return out

    def next_deadline(self) -> float | None:
        return min(self.deadlines().values(), default=None)

    def on_timer(self, now: float) -> list[Timer]:
        """Fire every timer due at ``now``; each fires once per session or still spell."""
        fired = [timer for timer, at in self.deadlines().items() if at <= now]
        for timer in fired:
            match timer:
                case Timer.UNRESPONSIVE:
                    self.unresponsive_fired = True
                case Timer.LONG_SESSION:
                    self.long_fired = True
        return fired

    # --- views and restart ----------------------------------------------------------

    def view(
        self, incident: IncidentRef | None, devices_ok: bool = True, unmonitored: bool = False
    ) -> BoothView:
        return BoothView(
            id=self.config.id,
            name=self.config.name,
            occupied=self.occupied,
            session_started_at=self.session_started_at,
            motion=self.motion.value if self.motion else None,
            still_since=self.still_since,
            incident=incident,
            devices_ok=devices_ok,
            mode="normal" if self.maintenance is None else "maintenance",
            maintenance=self.maintenance,
            door=None if self.door_closed is None else ("closed" if self.door_closed else "open"),
            unmonitored=unmonitored,
            stillness_from=self.stillness_from,
            unresponsive_fired=self.unresponsive_fired,
            long_fired=self.long_fired,
            door_closed_at=self.door_closed_at,
            awaiting_presence=self.awaiting_presence,
        )

    def restore(self, snap: dict[str, Any]) -> None:
        """Load the fields `view` wrote (as stored JSON)."""
        self.occupied = bool(snap["occupied"])
        self.session_started_at = snap["session_started_at"]
        self.motion = MotionState(snap["motion"]) if snap["motion"] else None
        self.still_since = snap["still_since"]
        self.stillness_from = snap["stillness_from"]
        self.unresponsive_fired = bool(snap["unresponsive_fired"])
        self.long_fired = bool(snap["long_fired"])
        door = snap.get("door")
        self.door_closed = None if door is None else door == "closed"
        self.door_closed_at = snap.get("door_closed_at")
        self.awaiting_presence = bool(snap.get("awaiting_presence", False))
        self.maintenance = snap.get("maintenance")
