"""One incident at one booth: its state machine, triggers, escalation, timeline. Pure.

Theory of operation
-------------------
States: ``open`` -> ``acknowledged`` -> ``attended`` -> ``resolved``.

* A booth has at most one unresolved incident. Triggers (``call``,
  ``unresponsive``, ``long_session``) fold into it; its priority is the highest
  of its triggers. A trigger of higher priority re-plans escalation under the
  higher policy at once and re-opens an acknowledged incident (the ack was for
  something less urgent); with staff already at the booth it is only recorded.
* ``open``: escalation steps fire on their schedule.
* ``acknowledged``: escalation pauses; if nobody is at the booth by
  ``ack_timeout`` the incident re-opens and the *next* step fires at once.
* ``attended``: presence stops escalation for good.
* Protocol steps (``knocked``, ``answered``, ``entered``, ``naloxone`` with its
  doses, ``oxygen``, ``ems_called``, ``ems_arrived``, a ``note``) are recorded
  against an unresolved incident with who and when. Those only done at the booth
  (knocked, entered, naloxone, oxygen) are presence too, if nobody was there yet:
  a nurse answering from her phone at a sensor-only booth has nothing else to
  press. ``answered`` on an ``unresponsive`` incident means the person is fine:
  it attends the incident (escalation stops, as presence does) without stamping
  ``presence_at``; with a call or another reason it is only recorded. Nobody is
  at the booth then, so the answer settles only the alarm it answered: a later
  high trigger (still again, a call, a sensor lost while occupied) re-opens the
  incident and pages from the first step, unlike with staff at the booth.
* A page sent after an ack timeout re-opened the incident says so, naming the
  acknowledgement that lapsed (``last_ack``); a re-open by a higher trigger or a
  second call forgets it, since those pages name their own reason.
* A call pressed again on an open incident (the person is still waiting)
  marks it *urgent* and jumps escalation to the next step at once (Brave
  Buttons' rule); on an acknowledged incident it re-opens it first.
* ``resolved``: final. Only a person resolves an incident with a ``call`` or
  ``unresponsive`` trigger (clear at the booth, or resolve through the API).
  Sensors may *clear* the other triggers: vacancy clears ``long_session``, the
  device coming back clears ``device_offline``, a fresh battery clears
  ``low_battery``; an incident whose every trigger is cleared resolves itself.
  A trigger's priority is its own unless the core says otherwise
  (``device_offline`` is ``high`` in an occupied booth, ``low`` in an empty one).

Every change appends to the timeline. ``acknowledged_at``, ``presence_at`` and
``resolved_at`` are set once, on the first time, so response times measure from
``raised_at`` to the first person who answered, arrived, finished.

`TRANSITIONS` is the whole state machine; an action not in it for the current
state raises `IllegalTransition` and changes nothing.

An incident remembers whether a trigger came in a high-risk session (``risk``)
and whether it was raised outside opening hours (``after_hours``: its low
policy is then the technician's, which the site core hands it).
``engaged()`` says who is busy with it (acknowledged or at the booth), so the
site core can page them last, or skip them, for another booth.

Besides the timeline (the record people read), an incident keeps typed `Change`s
since it was last asked (`take_changes`): each state transition, escalation step,
skipped step, duty gap, busy responder skipped, all staff engaged, and outcome.
The site core turns them into notices and commands, and the metrics adapter
counts them, so nobody re-reads the timeline.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from monitor.core.booth import IncidentRef
from monitor.core.escalation import Escalation, Fired, fire_due, has_next_step, jump
from monitor.core.events import OUTCOMES, ProtocolStep
from monitor.core.settings import Policy, Priority, Risk


class State(enum.Enum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    ATTENDED = "attended"
    RESOLVED = "resolved"


class Trigger(enum.Enum):
    CALL = "call"
    UNRESPONSIVE = "unresponsive"
    LONG_SESSION = "long_session"
    DEVICE_OFFLINE = "device_offline"
    LOW_BATTERY = "low_battery"


PRIORITY: dict[Trigger, Priority] = {
    Trigger.CALL: "high",
    Trigger.UNRESPONSIVE: "high",
    Trigger.LONG_SESSION: "medium",
    Trigger.DEVICE_OFFLINE: "low",
    Trigger.LOW_BATTERY: "low",
}
#: the outcome recorded when sensors clear the last trigger of an incident
CLEARED_OUTCOME: dict[Trigger, str] = {
    Trigger.LONG_SESSION: "session_ended",
    Trigger.DEVICE_OFFLINE: "device_back",
    Trigger.LOW_BATTERY: "battery_ok",
}
RANK: dict[Priority, int] = {"low": 0, "medium": 1, "high": 2}
#: triggers that only a person may resolve
PERSON_ONLY = frozenset({Trigger.CALL, Trigger.UNRESPONSIVE})
#: protocol steps a responder can only take at the booth: they are presence too
AT_THE_BOOTH = frozenset({ProtocolStep.KNOCKED, ProtocolStep.ENTERED, ProtocolStep.NALOXONE,
                          ProtocolStep.OXYGEN})
#: the triggers a person answering through the door settles (unresponsive must be one)
ANSWER_SETTLES = frozenset({Trigger.UNRESPONSIVE, Trigger.LONG_SESSION})


class Action(enum.Enum):
    ACK = "ack"
    PRESENCE = "presence"
    RESOLVE = "resolve"
    ACK_TIMEOUT = "ack_timeout"
    REOPEN = "reopen"  # a higher-priority trigger on an acknowledged incident
    TRIGGER = "trigger"  # a trigger folds in (it may then re-open, see add_trigger)
    STEP = "step"  # a protocol step is recorded (it may then attend, see record_step)
    ANSWERED = "answered"  # the person answered on an unresponsive incident: fine


TRANSITIONS: dict[State, dict[Action, State]] = {
    State.OPEN: {
        Action.ACK: State.ACKNOWLEDGED,
        Action.PRESENCE: State.ATTENDED,
        Action.RESOLVE: State.RESOLVED,
        Action.TRIGGER: State.OPEN,
        Action.STEP: State.OPEN,
        Action.ANSWERED: State.ATTENDED,
    },
    State.ACKNOWLEDGED: {
        Action.TRIGGER: State.ACKNOWLEDGED,
        Action.ACK: State.ACKNOWLEDGED,
        Action.PRESENCE: State.ATTENDED,
        Action.RESOLVE: State.RESOLVED,
        Action.ACK_TIMEOUT: State.OPEN,
        Action.REOPEN: State.OPEN,
        Action.STEP: State.ACKNOWLEDGED,
        Action.ANSWERED: State.ATTENDED,
    },
    State.ATTENDED: {
        Action.TRIGGER: State.ATTENDED,
        Action.ACK: State.ATTENDED,
        Action.PRESENCE: State.ATTENDED,
        Action.RESOLVE: State.RESOLVED,
        Action.STEP: State.ATTENDED,
        Action.ANSWERED: State.ATTENDED,
        Action.REOPEN: State.OPEN,  # only when attended by an answer (see add_trigger)
    },
    State.RESOLVED: {},
}


@dataclass(frozen=True, slots=True)
class Transition:
    """The incident moved to ``to`` (from ``was``; None when it was raised)."""

    at: float
    was: State | None
    to: State
    by: str | None = None
    first: bool = False  # the first acknowledgement, or the first person at the booth
    step: str | None = None  # the protocol step that made it (answered, entered...)


@dataclass(frozen=True, slots=True)
class StepFired:
    at: float
    level: int


@dataclass(frozen=True, slots=True)
class StepSkipped:
    """A step with nobody on duty was skipped at once for the next one."""

    at: float
    level: int


@dataclass(frozen=True, slots=True)
class DutyGap:
    """A step targeted roles with nobody on duty."""

    at: float
    level: int
    roles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OutcomeSet:
    """A person recorded what happened (on resolve or afterwards)."""

    at: float
    outcome: str


@dataclass(frozen=True, slots=True)
class StepRecorded:
    """A responder recorded a protocol step; ``first`` when it is the incident's first of
    that step (time to enter, time to the first naloxone)."""

    at: float
    step: ProtocolStep
    by: str
    count: int | None  # naloxone's doses, None for the other steps
    first: bool


@dataclass(frozen=True, slots=True)
class BusySkipped:
    """A step passed over responders of ``role`` busy at another booth for free ones."""

    at: float
    level: int
    role: str
    responders: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AllEngaged:
    """Every on-duty responder of ``roles`` was busy elsewhere: paged anyway."""

    at: float
    level: int
    roles: tuple[str, ...]


Change = (Transition | StepFired | StepSkipped | DutyGap | OutcomeSet | BusySkipped | AllEngaged
          | StepRecorded)


class OutcomeRecorded(Exception):
    """A person already recorded this incident's outcome; a correction is a coordinator's."""


class IllegalTransition(Exception):
    def __init__(self, incident: str, state: State, action: Action) -> None:
        super().__init__(f"incident {incident} is {state.value}: cannot {action.value}")
        self.incident = incident
        self.state = state
        self.action = action


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    at: float
    kind: str  # trigger, page, page_failed, state, escalated, step, note
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IncidentView:
    """An incident as published, served by the API and kept in the store."""

    id: str
    booth: str
    priority: Priority
    state: str
    triggers: tuple[str, ...]
    level: int
    max_level: int
    raised_at: float
    acknowledged_at: float | None
    acknowledged_by: str | None
    presence_at: float | None
    presence_by: str | None
    resolved_at: float | None
    resolved_by: str | None
    outcome: str | None
    outcome_note: str | None
    urgent: bool
    reopened: int
    timeline: tuple[TimelineEntry, ...]
    trigger_priorities: dict[str, Priority]
    cleared: tuple[str, ...]
    first_steps: dict[str, float]  # protocol step -> when it was first recorded
    # kept for restart
    escalation_priority: Priority
    next_index: int
    next_at: float | None
    ack_deadline: float | None
    last_ack: tuple[str, float] | None
    risk: Risk = "standard"  # "high": a trigger came in a high-risk session
    after_hours: bool = False  # raised outside opening hours: its low policy is the technician's

    def ref(self) -> IncidentRef:
        return IncidentRef(id=self.id, priority=self.priority, state=self.state, level=self.level)


class Incident:
    def __init__(
        self, id: str, booth: str, trigger: Trigger, now: float, policies: dict[Priority, Policy],
        priority: Priority | None = None, risk: Risk = "standard", after_hours: bool = False,
    ) -> None:
        self.id = id
        self.booth = booth
        self.policies = policies
        self.raised_at = now
        self.triggers: list[Trigger] = [trigger]
        self.trigger_priority: dict[Trigger, Priority] = {trigger: priority or PRIORITY[trigger]}
        self.cleared: set[Trigger] = set()
        self.state = State.OPEN
        self.level = 0
        self.max_level = 0
        self.reopened = 0
        self.acknowledged_at: float | None = None
        self.acknowledged_by: str | None = None
        self.presence_at: float | None = None
        self.presence_by: str | None = None
        self.resolved_at: float | None = None
        self.resolved_by: str | None = None
        self.outcome: str | None = None
        self.outcome_note: str | None = None
        self.urgent = False
        self.ack_deadline: float | None = None
        self.last_ack: tuple[str, float] | None = None  # who acknowledged last, and when
        self.first_steps: dict[ProtocolStep, float] = {}
        self.risk: Risk = risk
        self.after_hours = after_hours
        # who acknowledged or came, first first: True for who came to the booth
        self._engaged: dict[str, bool] = {}
        self.timeline: list[TimelineEntry] = []
        self.changes: list[Change] = [Transition(now, None, State.OPEN)]
        self.escalation = Escalation.start(self.priority, policies[self.priority], now)
        self.note(now, "trigger", trigger=trigger.value, priority=self.priority,
                  **_risk_detail(risk))
        self.note(now, "state", to=State.OPEN.value)

    # --- derived --------------------------------------------------------------------

    @property
    def priority(self) -> Priority:
        return max(self.trigger_priority.values(), key=RANK.__getitem__)

    @property
    def policy(self) -> Policy:
        return self.policies[self.escalation.priority]

    def engaged(self) -> tuple[str, ...]:
        """Who is busy with this incident: acknowledged it or at the booth, while it is
        acknowledged or attended (nobody once it is open again)."""
        if self.state not in (State.ACKNOWLEDGED, State.ATTENDED):
            return ()
        return tuple(self._engaged)

    def _engage(self, responder: str, came: bool = False) -> None:
        if responder != "booth":  # the booth's own presence button names nobody
            self._engaged[responder] = self._engaged.get(responder, False) or came

    def _lapse(self) -> None:
        """Open again (an ack timeout, an alarm after an answer): who only acknowledged is
        not on the way any more, and is free for other booths until they acknowledge again."""
        self._engaged = {r: came for r, came in self._engaged.items() if came}

    def paged(self, upto: int | None = None) -> list[str]:
        """Everyone paged for this incident (before timeline entry `upto`), first paged first."""
        return list(dict.fromkeys(e.detail["responder"] for e in self.timeline[:upto]
                                  if e.kind == "page"))

    def note(self, now: float, kind: str, **detail: Any) -> TimelineEntry:
        entry = TimelineEntry(at=now, kind=kind, detail=detail)
        self.timeline.append(entry)
        return entry

    def take_changes(self) -> list[Change]:
        """The typed changes since the last call (see the module docstring)."""
        changes, self.changes = self.changes, []
        return changes

    def _go(self, action: Action, now: float, first: bool = False, **detail: Any) -> None:
        allowed = TRANSITIONS[self.state]
        if action not in allowed:
            raise IllegalTransition(self.id, self.state, action)
        new = allowed[action]
        if new is not self.state:
            if new is State.OPEN:
                self._lapse()
            self.note(now, "state", to=new.value, **{"from": self.state.value}, **detail)
            self.changes.append(Transition(now, self.state, new, detail.get("by"), first,
                                           detail.get("step")))
            self.state = new

    # --- actions --------------------------------------------------------------------

    def add_trigger(self, trigger: Trigger, now: float, priority: Priority | None = None,
                    risk: Risk = "standard") -> bool:
        """Fold a trigger in; True when escalation was re-planned under a higher policy."""
        self._go(Action.TRIGGER, now)
        if risk == "high":
            self.risk = risk
        was = self.priority
        priority = priority or PRIORITY[trigger]
        known = self.trigger_priority.get(trigger)
        self.cleared.discard(trigger)
        if self.state is State.ATTENDED and self.presence_at is None and (
                priority == "high" or trigger not in ANSWER_SETTLES):
            # what the answer did not settle (a high alarm, device trouble) pages again
            return self._alarm_after_answer(trigger, priority, now, risk)
        if known is not None and trigger is Trigger.CALL:
            return self._called_again(now)
        if known is not None and RANK[priority] <= RANK[known]:
            self.note(now, "trigger", trigger=trigger.value, repeated=True)
            return False
        if known is None:
            self.triggers.append(trigger)
        self.trigger_priority[trigger] = priority
        self.note(now, "trigger", trigger=trigger.value, priority=priority, **_risk_detail(risk))
        if RANK[self.priority] <= RANK[was] or self.state is State.ATTENDED:
            return False
        if self.state is State.ACKNOWLEDGED:
            self._go(Action.REOPEN, now, reason="higher priority trigger")
            self.ack_deadline = self.last_ack = None
        self.escalation = Escalation.start(self.priority, self.policy, now)
        self.note(now, "replanned", priority=self.priority)
        return True

    def _alarm_after_answer(self, trigger: Trigger, priority: Priority, now: float,
                            risk: Risk) -> bool:
        """A high trigger or device trouble on an incident the person's answer attended,
        nobody at the booth: the answer settled the alarm before, not this one. Re-open and
        page afresh."""
        known = self.trigger_priority.get(trigger)
        if known is None:
            self.triggers.append(trigger)
        elif RANK[known] > RANK[priority]:
            priority = known
        self.trigger_priority[trigger] = priority
        self.note(now, "trigger", trigger=trigger.value, priority=priority, after_answer=True,
                  **_risk_detail(risk))
        self._go(Action.REOPEN, now, reason="alarm after the person answered")
        self.last_ack = None  # its pages are about this alarm, not a lapsed ack
        self.escalation = Escalation.start(self.priority, self.policy, now)
        self.note(now, "replanned", priority=self.priority)
        return True

    def _called_again(self, now: float) -> bool:
        """The person pressed call again: urgent, and the next step now. True if it jumped."""
        self.urgent = True
        self.note(now, "trigger", trigger=Trigger.CALL.value, repeated=True, urgent=True)
        if self.state is State.ATTENDED:
            return False  # staff are with them
        if self.state is State.ACKNOWLEDGED:
            self._go(Action.REOPEN, now, reason="call pressed again")
            self.ack_deadline = self.last_ack = None
        jump(self.policy, self.escalation, now)
        self.note(now, "jumped", reason="call pressed again")
        return True

    def skip_step(self, level: int, gaps: tuple[str, ...], now: float) -> bool:
        """Nobody on duty for a step: pull the next step in now. False at the top."""
        if self.state is not State.OPEN or not has_next_step(self.policy, self.escalation):
            return False
        self.note(now, "step_skipped", level=level, roles=list(gaps), reason="nobody on duty")
        self.changes.append(StepSkipped(now, level))
        self.escalation.next_at = now
        return True

    def duty_gap(self, level: int, roles: tuple[str, ...], now: float) -> None:
        """Nobody on duty for ``roles``, targeted by the step at ``level``."""
        self.note(now, "duty_gap", level=level, roles=list(roles))
        self.changes.append(DutyGap(now, level, roles))

    def busy_skipped(self, level: int, role: str, responders: tuple[str, ...],
                     where: dict[str, str], now: float) -> None:
        """``responders`` of ``role`` are busy at the booths ``where`` says: skipped."""
        self.note(now, "busy_skipped", level=level, role=role, responders=list(responders),
                  booths=[where[r] for r in responders])
        self.changes.append(BusySkipped(now, level, role, responders))

    def all_engaged(self, level: int, roles: tuple[str, ...], now: float) -> None:
        """Every on-duty responder of ``roles`` is busy elsewhere; they are paged anyway."""
        self.note(now, "all_engaged", level=level, roles=list(roles))
        self.changes.append(AllEngaged(now, level, roles))

    def acknowledge(self, responder: str, now: float, via: str) -> None:
        self._go(Action.ACK, now, self.acknowledged_at is None, by=responder, via=via)
        self.note(now, "ack", responder=responder, via=via)
        self.last_ack = (responder, now)
        self._engage(responder)
        if self.acknowledged_at is None:
            self.acknowledged_at, self.acknowledged_by = now, responder
        if self.state is State.ACKNOWLEDGED:
            self.escalation.next_at = None  # paused; next_index is where a re-open resumes
            timeout = self.policy.ack_timeout
            self.ack_deadline = now + timeout if timeout is not None else None

    def attend(self, responder: str, now: float, via: str, step: str | None = None) -> None:
        """A person at the booth: pressed presence, or took a step only done there."""
        because = {"step": step} if step is not None else {}
        first, was = self.presence_at is None, self.state
        self._go(Action.PRESENCE, now, first, by=responder, via=via, **because)
        if first and was is State.ATTENDED:
            # attended by an answer through the door: this is still the first person there,
            # which time to presence counts, though the state stays
            self.changes.append(Transition(now, was, was, responder, True, step))
        self.note(now, "presence", responder=responder, via=via, **because)
        self._engage(responder, came=True)
        if self.presence_at is None:
            self.presence_at, self.presence_by = now, responder
        self._stop()

    def record_step(self, step: ProtocolStep, responder: str, now: float, via: str,
                    count: int | None = None, note: str | None = None) -> None:
        """A protocol step, with what it implies (see the module docstring)."""
        self._go(Action.STEP, now)  # a resolved incident raises here, before any change
        doses = (count or 1) if step is ProtocolStep.NALOXONE else None
        detail: dict[str, Any] = {"step": step.value, "responder": responder, "via": via}
        if doses is not None:
            detail["count"] = doses
        if note is not None:
            detail["note"] = note
        self.note(now, "step", **detail)
        first = step not in self.first_steps
        if first:
            self.first_steps[step] = now
        self.changes.append(StepRecorded(now, step, responder, doses, first))
        if step in AT_THE_BOOTH and self.presence_at is None:
            self.attend(responder, now, via, step.value)
        elif step is ProtocolStep.ANSWERED and self.answer_settles():
            self._go(Action.ANSWERED, now, by=responder, via=via, step=step.value)
            self._stop()

    def answer_settles(self) -> bool:
        """Whether the person answering means nobody need come: an unresponsive incident
        with no reason left that answering leaves standing (a call, a device)."""
        live = set(self.triggers) - self.cleared
        return Trigger.UNRESPONSIVE in live and live <= ANSWER_SETTLES

    def resolve(
        self, responder: str | None, now: float, outcome: str | None, via: str,
        note: str | None = None,
    ) -> None:
        if self.state is not State.RESOLVED and self.presence_at is None and via == "booth":
            # clear pressed at the booth: whoever pressed it was there
            self.attend(responder or "booth", now, via)
        self._go(Action.RESOLVE, now, by=responder, via=via)
        self.resolved_at, self.resolved_by, self.outcome = now, responder, outcome
        self.outcome_note = note
        if outcome is not None:
            self.note(now, "outcome", outcome=outcome, by=responder, note=note)
            self.changes.append(OutcomeSet(now, outcome))
        self._stop()

    def add_outcome(self, responder: str, outcome: str, note: str | None, now: float) -> None:
        """What happened, told after the incident was resolved (by the clear button...)."""
        if self.state is not State.RESOLVED:
            raise IllegalTransition(self.id, self.state, Action.RESOLVE)
        if self.outcome in OUTCOMES:
            raise OutcomeRecorded(self.id)  # a sensor's outcome (session_ended...) gives way
        self.outcome, self.outcome_note = outcome, note
        self.note(now, "outcome", outcome=outcome, by=responder, note=note)
        self.changes.append(OutcomeSet(now, outcome))

    def page_report(self, responder: str, level: int, channel: str, ok: bool,
                    reason: str | None, now: float) -> None:
        """Where a page went: accepted by a channel, or a channel failed over to the next."""
        if ok:
            self.note(now, "page_sent", responder=responder, level=level, channel=channel)
        else:
            self.note(now, "page_fallback", responder=responder, level=level, channel=channel,
                      reason=reason)

    def clear(self, trigger: Trigger, now: float, via: str) -> bool:
        """A sensor says a trigger's cause is gone; True when that resolved the incident."""
        if trigger in PERSON_ONLY or trigger not in self.trigger_priority:
            return False
        self.cleared.add(trigger)
        self.note(now, "cleared", trigger=trigger.value, via=via)
        if self.cleared >= set(self.triggers):
            self.resolve(None, now, CLEARED_OUTCOME[trigger], via)
            return True
        return False

    def vacated(self, now: float) -> bool:
        """The session ended: that clears long_session; other triggers stay."""
        if self.clear(Trigger.LONG_SESSION, now, "vacancy"):
            return True
        self.note(now, "note", text="booth vacated; incident stays open until a person resolves")
        return False

    def page_failed(
        self, responder: str, level: int, channel: str, reason: str, now: float
    ) -> bool:
        """A page could not be delivered; escalate at once. True when a step was pulled in."""
        self.note(
            now, "page_failed", responder=responder, level=level, channel=channel, reason=reason
        )
        esc = self.escalation
        if (
            self.state is State.OPEN
            and level == self.level
            and esc.next_at is not None
            and esc.next_at > now
            and has_next_step(self.policy, esc)
        ):
            esc.next_at = now
            self.note(now, "escalated", reason="page failed")
            return True
        return False

    def _stop(self) -> None:
        self.escalation.next_at = None
        self.ack_deadline = None

    # --- time -----------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        times = [t for t in (self.escalation.next_at, self.ack_deadline) if t is not None]
        return min(times, default=None)

    def on_timer(self, now: float) -> Fired | None:
        """Handle an ack timeout and fire due steps; return what must be paged."""
        if (
            self.state is State.ACKNOWLEDGED
            and self.ack_deadline is not None
            and self.ack_deadline <= now
        ):
            self._go(Action.ACK_TIMEOUT, now, reason="nobody at the booth")
            self.reopened += 1
            self.ack_deadline = None
            self.escalation.next_at = now  # continue from the next step, at once
        if self.state is not State.OPEN:
            return None
        fired = fire_due(self.policy, self.escalation, now)
        if fired is not None:
            self.level = fired.level
            self.max_level = max(self.max_level, fired.level)
            self.note(now, "escalated", level=fired.level, priority=self.escalation.priority)
            self.changes.append(StepFired(now, fired.level))
        return fired

    # --- views and restart ----------------------------------------------------------

    def view(self) -> IncidentView:
        return IncidentView(
            id=self.id,
            booth=self.booth,
            priority=self.priority,
            state=self.state.value,
            triggers=tuple(t.value for t in self.triggers),
            level=self.level,
            max_level=self.max_level,
            raised_at=self.raised_at,
            acknowledged_at=self.acknowledged_at,
            acknowledged_by=self.acknowledged_by,
            presence_at=self.presence_at,
            presence_by=self.presence_by,
            resolved_at=self.resolved_at,
            resolved_by=self.resolved_by,
            outcome=self.outcome,
            outcome_note=self.outcome_note,
            urgent=self.urgent,
            reopened=self.reopened,
            timeline=tuple(self.timeline),
            trigger_priorities={t.value: p for t, p in self.trigger_priority.items()},
            cleared=tuple(sorted(t.value for t in self.cleared)),
            first_steps={s.value: at for s, at in self.first_steps.items()},
            escalation_priority=self.escalation.priority,
            next_index=self.escalation.next_index,
            next_at=self.escalation.next_at,
            ack_deadline=self.ack_deadline,
            last_ack=self.last_ack,
            risk=self.risk,
            after_hours=self.after_hours,
        )

    @classmethod
    def from_view(cls, view: IncidentView, policies: dict[Priority, Policy]) -> Incident:
        """The incident a stored view describes (`view` is its inverse)."""
        self = cls.__new__(cls)  # every field is set below, from the view alone
        self.id, self.booth, self.policies = view.id, view.booth, policies
        self.raised_at = view.raised_at
        self.triggers = [Trigger(t) for t in view.triggers]
        self.trigger_priority = {Trigger(t): p for t, p in view.trigger_priorities.items()}
        self.cleared = {Trigger(t) for t in view.cleared}
        self.state = State(view.state)
        self.level, self.max_level, self.reopened = view.level, view.max_level, view.reopened
        self.acknowledged_at, self.acknowledged_by = view.acknowledged_at, view.acknowledged_by
        self.presence_at, self.presence_by = view.presence_at, view.presence_by
        self.resolved_at, self.resolved_by = view.resolved_at, view.resolved_by
        self.outcome, self.outcome_note = view.outcome, view.outcome_note
        self.urgent = view.urgent
        self.ack_deadline = view.ack_deadline
        self.last_ack = view.last_ack
        self.first_steps = {ProtocolStep(s): at for s, at in view.first_steps.items()}
        self.risk, self.after_hours = view.risk, view.after_hours
        self._engaged = {}
        for entry in view.timeline:  # as it went: who acknowledged, came, or lapsed
            if entry.kind in ("ack", "presence"):
                self._engage(entry.detail["responder"], came=entry.kind == "presence")
            elif entry.kind == "state" and entry.detail.get("to") == State.OPEN.value:
                self._lapse()
        self.timeline = list(view.timeline)
        self.changes = []
        self.escalation = Escalation(priority=view.escalation_priority,
                                     next_index=view.next_index, next_at=view.next_at)
        return self


def _risk_detail(risk: Risk) -> dict[str, str]:
    """A trigger's timeline entry says when it came in a high-risk session."""
    return {"risk": risk} if risk == "high" else {}
