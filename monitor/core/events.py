"""What goes into the core (events) and what comes out of it (commands).

Events are facts the adapters observed: a canonical booth event from MQTT, an
acknowledgement from a pager gateway or the HTTP API, a page that could not be
delivered. Commands are what the core wants done: page a responder, publish
and store a changed booth or incident. All are frozen, slotted, and check
their own fields, so a bad value fails where it was made.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from monitor.core.settings import RISKS, ROUTES, Risk, Route

if TYPE_CHECKING:
    from monitor.core.booth import BoothView
    from monitor.core.devices import DeviceView
    from monitor.core.incident import Change, IncidentView, TimelineEntry
    from monitor.core.readings import Reading
    from monitor.core.words import Words


class MotionState(enum.Enum):
    MOVING = "moving"
    STILL = "still"
    ABSENT = "absent"


class Press(enum.Enum):
    CALL = "call"
    PRESENCE = "presence"
    CLEAR = "clear"


def _need(value: str, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")


# --- booth events (canonical MQTT events, interface section 4) -------------------------


def check_risk(risk: object, route: object) -> None:
    """A session's risk and route: the only things said about the person in a booth."""
    if risk not in RISKS:
        raise ValueError(f"risk must be one of {', '.join(RISKS)}, got {risk!r}")
    if route is not None and route not in ROUTES:
        raise ValueError(f"route must be one of {', '.join(ROUTES)}, got {route!r}")


@dataclass(frozen=True, slots=True)
class Occupancy:
    """A session starts or ends; a start (or a repeat while occupied) may say its risk."""

    booth: str
    occupied: bool
    device: str | None = None
    risk: Risk | None = None  # None: not said (a new session is standard)
    route: Route | None = None

    def __post_init__(self) -> None:
        _need(self.booth, "booth")
        if not isinstance(self.occupied, bool):
            raise ValueError("occupied must be a bool")
        if self.risk is not None or self.route is not None:
            check_risk(self.risk or "standard", self.route)


@dataclass(frozen=True, slots=True)
class Motion:
    booth: str
    state: MotionState
    device: str | None = None

    def __post_init__(self) -> None:
        _need(self.booth, "booth")
        if not isinstance(self.state, MotionState):
            raise ValueError("state must be a MotionState")


@dataclass(frozen=True, slots=True)
class Button:
    booth: str
    press: Press
    device: str | None = None

    def __post_init__(self) -> None:
        _need(self.booth, "booth")
        if not isinstance(self.press, Press):
            raise ValueError("press must be a Press")


@dataclass(frozen=True, slots=True)
class Heartbeat:
    booth: str
    battery: int | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        _need(self.booth, "booth")
        if self.battery is not None and not (
            isinstance(self.battery, int) and 0 <= self.battery <= 100
        ):
            raise ValueError("battery must be an int from 0 to 100")


@dataclass(frozen=True, slots=True)
class Door:
    """A door contact report: closed or open."""

    booth: str
    closed: bool
    device: str | None = None

    def __post_init__(self) -> None:
        _need(self.booth, "booth")
        if not isinstance(self.closed, bool):
            raise ValueError("closed must be a bool")


BoothEvent = Occupancy | Motion | Button | Heartbeat | Door


@dataclass(frozen=True, slots=True)
class DeviceReading:
    """What an off-the-shelf device's message said (after its firmware adapter)."""

    device: str
    reading: Reading
    retained: bool = False

    def __post_init__(self) -> None:
        _need(self.device, "device")


# --- people and adapters acting on incidents --------------------------------------------


@dataclass(frozen=True, slots=True)
class Acknowledge:
    """A responder says "I'm going" (ack link, API, or pager gateway)."""

    incident: str
    responder: str
    via: str = "api"

    def __post_init__(self) -> None:
        _need(self.incident, "incident")
        _need(self.responder, "responder")


@dataclass(frozen=True, slots=True)
class Attend:
    """A responder is at the booth (presence through the API)."""

    incident: str
    responder: str
    via: str = "api"

    def __post_init__(self) -> None:
        _need(self.incident, "incident")
        _need(self.responder, "responder")


#: what happened, recorded when a person resolves an incident (interface section 6)
OUTCOMES: tuple[str, ...] = (
    "ok", "overdose_naloxone", "overdose_oxygen", "emergency_services", "false_alarm",
    "no_one_there", "other",
)  # fmt: skip
NOTE_MAX = 500  # characters of free text with an outcome


def check_outcome(outcome: str | None, note: str | None) -> None:
    if outcome is not None and outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    if note is not None and (not isinstance(note, str) or len(note) > NOTE_MAX):
        raise ValueError(f"note must be text of at most {NOTE_MAX} characters")


@dataclass(frozen=True, slots=True)
class Resolve:
    incident: str
    responder: str
    outcome: str | None = None
    via: str = "api"
    note: str | None = None

    def __post_init__(self) -> None:
        _need(self.incident, "incident")
        _need(self.responder, "responder")
        check_outcome(self.outcome, self.note)


@dataclass(frozen=True, slots=True)
class PageFailed:
    """Every retry of a page failed: the core records it and escalates."""

    incident: str
    responder: str
    level: int
    channel: str
    reason: str

    def __post_init__(self) -> None:
        _need(self.incident, "incident")
        _need(self.responder, "responder")


@dataclass(frozen=True, slots=True)
class PageReport:
    """A page reached a channel (``ok``) or a channel failed and the next one takes over."""

    incident: str
    responder: str
    level: int
    channel: str
    ok: bool
    reason: str | None = None

    def __post_init__(self) -> None:
        _need(self.incident, "incident")
        _need(self.responder, "responder")


@dataclass(frozen=True, slots=True)
class AddOutcome:
    """A person says what happened at an incident already resolved (by the clear button,
    or by sensors); ``resolved`` is the incident as the store has it."""

    resolved: IncidentView
    responder: str
    outcome: str
    note: str | None = None
    via: str = "api"

    def __post_init__(self) -> None:
        _need(self.responder, "responder")
        check_outcome(self.outcome, self.note)

    @property
    def incident(self) -> str:
        return self.resolved.id


class ProtocolStep(enum.Enum):
    """What a responder did at an incident, in the order a response usually runs."""

    KNOCKED = "knocked"
    ANSWERED = "answered"  # the person responded through the door or the intercom
    ENTERED = "entered"
    NALOXONE = "naloxone"  # with a dose count
    OXYGEN = "oxygen"
    EMS_CALLED = "ems_called"
    EMS_ARRIVED = "ems_arrived"
    NOTE = "note"  # free text only


#: the step names of the API, the MQTT topic and the ack page
STEPS: tuple[str, ...] = tuple(s.value for s in ProtocolStep)
MAX_DOSES = 10  # naloxone doses in one step: more is a typo, not a dose


def parse_step(step: object, count: object = None, note: object = None) -> ProtocolStep:
    """The step named, after checking its count and note; ValueError names the field."""
    try:
        parsed = ProtocolStep(step)
    except ValueError:
        raise ValueError(f"step: one of {', '.join(STEPS)}") from None
    if count is not None:
        if parsed is not ProtocolStep.NALOXONE:
            raise ValueError("count: only with naloxone (the doses given)")
        # bool is an int in Python, never a dose count
        if type(count) is not int or not 1 <= count <= MAX_DOSES:
            raise ValueError(f"count: a whole number of doses from 1 to {MAX_DOSES}")
    if note is not None and (not isinstance(note, str) or len(note) > NOTE_MAX):
        raise ValueError(f"note: text of at most {NOTE_MAX} characters")
    if parsed is ProtocolStep.NOTE and not (isinstance(note, str) and note.strip()):
        raise ValueError("note: the note step needs its text")
    return parsed


@dataclass(frozen=True, slots=True)
class RecordStep:
    """A responder records a protocol step against an open incident (the ack page, the API,
    the station board, or a pager gateway); ``count`` is naloxone's doses (1 if not given)."""

    incident: str
    responder: str
    step: ProtocolStep
    count: int | None = None
    note: str | None = None
    via: str = "api"

    def __post_init__(self) -> None:
        _need(self.incident, "incident")
        _need(self.responder, "responder")
        if not isinstance(self.step, ProtocolStep):
            raise ValueError("step must be a ProtocolStep")
        parse_step(self.step.value, self.count, self.note)


IncidentEvent = Acknowledge | Attend | Resolve | PageFailed | PageReport | AddOutcome | RecordStep


@dataclass(frozen=True, slots=True)
class SetDuty:
    """A responder checks in (``on``) or out, through the API or MQTT."""

    responder: str
    on: bool
    by: str
    via: str = "api"

    def __post_init__(self) -> None:
        _need(self.responder, "responder")
        _need(self.by, "by")
        if not isinstance(self.on, bool):
            raise ValueError("on must be a bool")


@dataclass(frozen=True, slots=True)
class StartMaintenance:
    """Take a booth out of automatic monitoring until ``until`` (epoch seconds)."""

    booth: str
    until: float
    reason: str
    by: str

    def __post_init__(self) -> None:
        _need(self.booth, "booth")
        _need(self.reason, "reason")
        _need(self.by, "by")


@dataclass(frozen=True, slots=True)
class EndMaintenance:
    booth: str
    by: str

    def __post_init__(self) -> None:
        _need(self.booth, "booth")
        _need(self.by, "by")


@dataclass(frozen=True, slots=True)
class StartBoothTest:
    """Test a booth's devices until ``until``: triggers are recorded, not raised; only
    ``tester`` (a responder id, if given) hears of them (`monitor.core.boothtest`)."""

    booth: str
    until: float
    tester: str | None = None

    def __post_init__(self) -> None:
        _need(self.booth, "booth")
        if self.tester is not None:
            _need(self.tester, "tester")


@dataclass(frozen=True, slots=True)
class EndBoothTest:
    booth: str

    def __post_init__(self) -> None:
        _need(self.booth, "booth")


@dataclass(frozen=True, slots=True)
class MarkSession:
    """Staff mark the session under way at a booth (API, board): its risk and route."""

    booth: str
    risk: Risk
    by: str
    route: Route | None = None
    via: str = "api"

    def __post_init__(self) -> None:
        _need(self.booth, "booth")
        _need(self.by, "by")
        check_risk(self.risk, self.route)


SiteEvent = (SetDuty | StartMaintenance | EndMaintenance | MarkSession | StartBoothTest
             | EndBoothTest)
Event = BoothEvent | DeviceReading | IncidentEvent | SiteEvent


# --- commands ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendPage:
    """Page one responder for one escalation level of an incident."""

    incident: str
    booth: str
    booth_name: str
    responder: str
    level: int
    priority: str
    triggers: tuple[str, ...]
    message: Words  # said in the site's language by the page port (monitor/paging.py)
    raised_at: float
    urgent: bool = False

    def __post_init__(self) -> None:
        _need(self.incident, "incident")
        _need(self.responder, "responder")
        if self.level < 1:
            raise ValueError("level starts at 1")


@dataclass(frozen=True, slots=True)
class SendNotice:
    """Tell a responder already paged that someone is attending, or that all is clear."""

    incident: str
    booth: str
    booth_name: str
    responder: str
    priority: str
    message: Words  # said in the site's language by the page port (monitor/paging.py)

    def __post_init__(self) -> None:
        _need(self.incident, "incident")
        _need(self.responder, "responder")


@dataclass(frozen=True, slots=True)
class BoothChanged:
    """A booth's state changed: publish it (retained) and store it."""

    view: BoothView


@dataclass(frozen=True, slots=True)
class IncidentChanged:
    """An incident changed: publish it and store it. `new` are the timeline entries added
    (the record), `changes` the same news typed (what metrics count)."""

    view: IncidentView
    new: tuple[TimelineEntry, ...] = field(default=())
    changes: tuple[Change, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class StopPaging:
    """Someone is on it or it is over: pages of the incident still being retried can stop
    (notices go on)."""

    incident: str


@dataclass(frozen=True, slots=True)
class DeviceChanged:
    """A device's health or last state changed: store it (and show it in metrics)."""

    view: DeviceView
    snapshot: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Audit:
    """Something a coordinator must be able to look up later that belongs to no incident:
    maintenance started, ended or expired, a trigger suppressed, a duty change."""

    at: float
    kind: str
    subject: str  # a booth or responder id
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DutyChanged:
    """A check-in or check-out to store, so a restart keeps it."""

    snapshot: dict[str, Any]


Command = (
    SendPage | SendNotice | StopPaging | BoothChanged | IncidentChanged | DeviceChanged | Audit
    | DutyChanged
)
