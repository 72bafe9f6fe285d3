"""One booth: its session, what its motion sensor says, and maintenance. Pure, no I/O.

Theory of operation
-------------------
A booth runs three small machines, each a table below; an input a machine's
table does not have for its state raises `IllegalBoothTransition` and changes
nothing.

**Session** (`Session`): *vacant* or *occupied*, and in a door booth also
*awaiting* presence.

* Sensor booths (``occupancy_from = "sensor"``): occupancy readings start and
  end sessions (`SENSOR_SESSION`).
* Door booths (``occupancy_from = "door"``, `DOOR_SESSION`): the door closing
  makes the booth *await* presence for ``door_window``; presence within it (or
  already there) starts the session, later presence does not (the window has
  expired: the booth is vacant again). The door opening ends the session. A door
  reported closed again without an open between means an open was missed: the
  old session ends and the booth awaits presence afresh. An occupancy sensor only
  confirms presence; it never ends a session, so a presence sensor that loses a
  still person cannot end the session either.

**Motion** (`MotionState`, any state to any other): ``still_since`` is when the
booth last went from moving to still or absent.

**Maintenance** (`Mode`, `MAINTENANCE`): *normal* -> *maintenance* (start) ->
*normal* (end, by a person or by itself at ``until``). Starting it twice or
ending it when none is active is refused.

Two timers run while a booth is occupied, each firing once:

* **unresponsive**: motion ``still`` or ``absent`` continuously for the
  booth's ``stillness``. A presence sensor often loses a person who stops
  moving, so ``absent`` while occupied counts as still, never as vacant. The
  clock starts at the later of ``still_since`` and the session start (a booth
  that was empty and "absent" before someone walked in counts from their entry),
  and restarts when an incident of this booth is resolved (or maintenance ends)
  while the person is still there, so staff who leave a still person are
  reminded again. With no motion reading at all there is nothing to time; device
  health flags such a booth as unmonitored.
* **long_session**: occupied continuously for the booth's ``long_session``.

**Risk**: each session is ``standard`` unless staff mark it ``high`` (at check-in:
the occupancy event, the API, the board), for that session only: while it lasts
the two timers run on the booth's ``high_risk`` thresholds, so a mark made when a
person has already been still longer than the high-risk stillness fires at once.
Only an occupied booth's session can be marked (`SessionMark`); the next session
starts standard again. A risk and a route, never who the person is.

The booth reports what changed and what fired; the site core turns that into
incidents.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from monitor.core.events import MotionState
from monitor.core.settings import BoothConfig, Risk, Route


class Timer(enum.Enum):
    UNRESPONSIVE = "unresponsive"
    LONG_SESSION = "long_session"


class Session(enum.Enum):
    VACANT = "vacant"
    AWAITING = "awaiting"  # a door booth's door closed: presence expected within the window
    OCCUPIED = "occupied"


class Sensed(enum.Enum):
    """What a session machine is told."""

    OCCUPIED = "occupied"  # an occupancy sensor sees someone
    VACANT = "vacant"  # an occupancy sensor sees no one
    PRESENCE = "presence"  # someone is there: motion, or occupancy in a door booth
    LATE_PRESENCE = "late_presence"  # presence after the door window expired
    DOOR_CLOSED = "door_closed"
    DOOR_OPENED = "door_opened"


SENSOR_SESSION: dict[tuple[Session, Sensed], Session] = {
    (Session.VACANT, Sensed.OCCUPIED): Session.OCCUPIED,
    (Session.VACANT, Sensed.VACANT): Session.VACANT,
    (Session.OCCUPIED, Sensed.OCCUPIED): Session.OCCUPIED,  # a repeat: not a new session
    (Session.OCCUPIED, Sensed.VACANT): Session.VACANT,
}
DOOR_SESSION: dict[tuple[Session, Sensed], Session] = {
    (Session.VACANT, Sensed.DOOR_CLOSED): Session.AWAITING,
    (Session.VACANT, Sensed.DOOR_OPENED): Session.VACANT,
    (Session.VACANT, Sensed.PRESENCE): Session.VACANT,  # nobody closed the door
    (Session.AWAITING, Sensed.PRESENCE): Session.OCCUPIED,
    (Session.AWAITING, Sensed.LATE_PRESENCE): Session.VACANT,
    (Session.AWAITING, Sensed.DOOR_CLOSED): Session.AWAITING,  # the window starts again
    (Session.AWAITING, Sensed.DOOR_OPENED): Session.VACANT,
    (Session.OCCUPIED, Sensed.PRESENCE): Session.OCCUPIED,
    (Session.OCCUPIED, Sensed.DOOR_OPENED): Session.VACANT,
    (Session.OCCUPIED, Sensed.DOOR_CLOSED): Session.AWAITING,  # an open was missed
}


class Mode(enum.Enum):
    NORMAL = "normal"
    MAINTENANCE = "maintenance"


class Maintain(enum.Enum):
    START = "start"
    END = "end"


MAINTENANCE: dict[tuple[Mode, Maintain], Mode] = {
    (Mode.NORMAL, Maintain.START): Mode.MAINTENANCE,
    (Mode.MAINTENANCE, Maintain.END): Mode.NORMAL,
}


class SessionMark(enum.Enum):
    RISK = "mark the session's risk"


#: the session states in which a session's risk can be marked: one is under way
MARKABLE = frozenset({Session.OCCUPIED})


class IllegalBoothTransition(Exception):
    def __init__(self, booth: str, state: enum.Enum, what: enum.Enum) -> None:
        super().__init__(f"booth {booth} is {state.value}: cannot {what.value}")
        self.booth = booth
        self.state = state
        self.what = what


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
    # for the station board: the thresholds in force (the session's risk's), so it can say
    # "no movement for 3m" and draw the stillness countdown; when the unresponsive alarm
    # fires if nobody moves (None: not timing); each device in trouble as {"device",
    # "role", "trouble"}
    stillness: float = 0.0
    long_session: float = 0.0
    unresponsive_at: float | None = None
    troubles: tuple[dict[str, str], ...] = ()
    # the session's risk and route (standard and None between sessions)
    risk: Risk = "standard"
    route: Route | None = None
    closed: bool = False  # outside [site] hours (the site core says)
    # the device self-test running now, as {"until", "tester"} (the site core says), so
    # every board shows it; never restored: a restart ends a test
    test: dict[str, Any] | None = None
    # kept for restart, not published: the id of the booth's latest incident, which the
    # next one's id is made from (`monitor.core.ids`); committed with that incident
    last_incident: str | None = None


_STILL = (MotionState.STILL, MotionState.ABSENT)


class Booth:
    def __init__(self, config: BoothConfig) -> None:
        self.config = config
        self.session = Session.VACANT
        self.occupied = False  # session is OCCUPIED: read on every event, so kept, not derived
        self.session_started_at: float | None = None
        self.motion: MotionState | None = None
        self.still_since: float | None = None
        self.stillness_from: float | None = None
        self.unresponsive_fired = False
        self.long_fired = False
        self.door_closed: bool | None = None
        self.door_closed_at: float | None = None
        self.maintenance: dict[str, Any] | None = None
        self.risk: Risk = "standard"
        self.route: Route | None = None
        self.limits = config.thresholds("standard")  # the session's, read on every event
        self.last_incident: str | None = None  # see BoothView.last_incident
        self._table = DOOR_SESSION if config.occupancy_from == "door" else SENSOR_SESSION

    @property
    def mode(self) -> Mode:
        return Mode.NORMAL if self.maintenance is None else Mode.MAINTENANCE

    # --- the session ------------------------------------------------------------------

    def _sense(self, sensed: Sensed, now: float) -> bool:
        """Run the session machine; True when a session started or ended."""
        new = self._table.get((self.session, sensed))
        if new is None:
            raise IllegalBoothTransition(self.config.id, self.session, sensed)
        was_occupied, self.session = self.occupied, new
        self.occupied = new is Session.OCCUPIED
        if sensed is Sensed.DOOR_CLOSED:
            self.door_closed_at = now
        elif new is not Session.AWAITING:
            self.door_closed_at = None
        if was_occupied and not (sensed is Sensed.PRESENCE or sensed is Sensed.OCCUPIED):
            self._ended()
            return True
        if not was_occupied and self.occupied:
            self._started(now)
            return True
        return False

    def _started(self, now: float) -> None:
        self.unresponsive_fired = self.long_fired = False
        self.session_started_at = now
        self.stillness_from = self._still_clock_start(now)
        self._set_risk("standard", None)  # a mark is for one session only

    def _ended(self) -> None:
        self.unresponsive_fired = self.long_fired = False
        self.session_started_at = None
        self.stillness_from = None
        self._set_risk("standard", None)

    def _set_risk(self, risk: Risk, route: Route | None) -> None:
        self.risk, self.route = risk, route
        self.limits = self.config.thresholds(risk)

    def mark(self, risk: Risk, route: Route | None) -> bool:
        """Staff say how closely this session is watched; True when that changed it.
        Refused with no session under way."""
        if self.session not in MARKABLE:
            raise IllegalBoothTransition(self.config.id, self.session, SessionMark.RISK)
        if (risk, route) == (self.risk, self.route):
            return False
        self._set_risk(risk, route)
        return True

    def occupancy_reading(self, occupied: bool, now: float) -> bool:
        """An occupancy event: sets the session, or in a door booth confirms presence."""
        if self._table is SENSOR_SESSION:
            return self._sense(Sensed.OCCUPIED if occupied else Sensed.VACANT, now)
        return self.presence_seen(now) if occupied else False

    def presence_seen(self, now: float) -> bool:
        """Someone is in the booth: in a door booth, the session the door announced starts."""
        if self._table is SENSOR_SESSION:
            return False
        late = (self.session is Session.AWAITING and self.door_closed_at is not None
                and now - self.door_closed_at > self.config.door_window)
        return self._sense(Sensed.LATE_PRESENCE if late else Sensed.PRESENCE, now)

    def door(self, closed: bool, now: float) -> bool:
        """A door report; True when a session started or ended."""
        self.door_closed = closed
        if self._table is SENSOR_SESSION:
            return False  # recorded and shown, but sessions come from the occupancy sensor
        changed = self._sense(Sensed.DOOR_CLOSED if closed else Sensed.DOOR_OPENED, now)
        if closed and self.motion in (MotionState.MOVING, MotionState.STILL):
            changed = self.presence_seen(now) or changed  # they are already inside
        return changed

    # --- motion -----------------------------------------------------------------------

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

    # --- maintenance ------------------------------------------------------------------

    def _maintain(self, what: Maintain) -> None:
        if (self.mode, what) not in MAINTENANCE:
            raise IllegalBoothTransition(self.config.id, self.mode, what)

    def start_maintenance(self, now: float, until: float, reason: str, by: str) -> None:
        self._maintain(Maintain.START)
        self.maintenance = {"since": now, "until": until, "reason": reason, "by": by}

    def end_maintenance(self, now: float) -> dict[str, Any]:
        """Back to normal; a person still in the booth is timed afresh from now."""
        self._maintain(Maintain.END)
        ended, self.maintenance = self.maintenance, None
        assert ended is not None  # the table allows END only in maintenance
        self.incident_resolved(now)
        return ended

    def incident_resolved(self, now: float) -> None:
        """Staff finished with the booth: a person still there is timed afresh."""
        if self.occupied and self.motion in _STILL:
            self.stillness_from = now
            self.unresponsive_fired = False

    def person_answered(self, now: float) -> None:
        """The person answered through the door or the intercom: alive now, so a person
        still there is timed afresh (a sensor may not see someone who speaks move)."""
        self.incident_resolved(now)

    # --- timers -----------------------------------------------------------------------

    def _still_clock_start(self, now: float) -> float | None:
        if not self.occupied or self.motion not in _STILL:
            return None
        starts = [t for t in (self.still_since, self.session_started_at) if t is not None]
        return max(starts) if starts else now

    def unresponsive_at(self) -> float | None:
        """When the unresponsive timer fires if nobody moves (None: not timing)."""
        if self.occupied and self.stillness_from is not None and not self.unresponsive_fired:
            return self.stillness_from + self.limits.stillness
        return None

    def _long_session_at(self) -> float | None:
        if self.occupied and self.session_started_at is not None and not self.long_fired:
            return self.session_started_at + self.limits.long_session
        return None

    def deadlines(self) -> dict[Timer, float]:
        out: dict[Timer, float] = {}
        unresponsive = self.unresponsive_at()
        if unresponsive is not None:
            out[Timer.UNRESPONSIVE] = unresponsive
        long_session = self._long_session_at()
        if long_session is not None:
            out[Timer.LONG_SESSION] = long_session
        return out

    def next_deadline(self) -> float | None:
        """The earlier of `deadlines` (asked on every event of the booth: no dict made)."""
        unresponsive, long_session = self.unresponsive_at(), self._long_session_at()
        if unresponsive is None or long_session is None:
            return long_session if unresponsive is None else unresponsive
        return min(unresponsive, long_session)

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

    # --- views and restart ------------------------------------------------------------

    def view(
        self, incident: IncidentRef | None, devices_ok: bool = True, unmonitored: bool = False,
        troubles: tuple[dict[str, str], ...] = (), closed: bool = False,
        test: dict[str, Any] | None = None,
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
            awaiting_presence=self.session is Session.AWAITING,
            stillness=self.limits.stillness,
            long_session=self.limits.long_session,
            unresponsive_at=self.unresponsive_at(),
            troubles=troubles,
            risk=self.risk,
            route=self.route,
            closed=closed,
            test=test,
            last_incident=self.last_incident,
        )

    def load(self, view: BoothView) -> None:
        """Take up the state `view` describes (as stored before a restart)."""
        # a booth that awaited presence as a door booth, now configured as a sensor booth,
        # is simply vacant: the sensor table has no awaiting state
        awaiting = view.awaiting_presence and self._table is DOOR_SESSION
        self.session = (Session.OCCUPIED if view.occupied else
                        Session.AWAITING if awaiting else Session.VACANT)
        self.occupied = view.occupied
        self.session_started_at = view.session_started_at
        self.motion = MotionState(view.motion) if view.motion else None
        self.still_since = view.still_since
        self.stillness_from = view.stillness_from
        self.unresponsive_fired = view.unresponsive_fired
        self.long_fired = view.long_fired
        self.door_closed = None if view.door is None else view.door == "closed"
        self.door_closed_at = view.door_closed_at
        self.maintenance = view.maintenance
        self.last_incident = view.last_incident
        # a mark outlives a restart only with its session
        self._set_risk(view.risk if view.occupied else "standard",
                       view.route if view.occupied else None)
