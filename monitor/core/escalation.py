"""Escalation policy: which step fires when, and whom it pages. Pure, no I/O.

Theory of operation
-------------------
A policy is a list of steps, each ``after`` seconds from the start of the plan,
plus ``repeat`` (resend the last step this often) and ``ack_timeout``. An
incident carries an `Escalation`: the index of the next step to fire and the
wall-clock time it is due (``next_at``; ``None`` while paused by an
acknowledgement or when nothing is left to send). The index counts positions
in the plan: without ``max_repeats`` positions past the last step are repeats of
the last step. With ``max_repeats = N`` the whole list of steps runs N more times
(each new cycle starts ``repeat`` after the last step of the one before, at
level 1 again, as PagerDuty's "repeat this policy"), and after that the last
step, the top level, repeats every ``repeat``: paging never stops while an
incident is open.

Jumps move the plan forward at once: `jump` (a repeated call press) fires the
next higher step now, or, at the top, the top level now and from then on;
`has_next_step` tells whether a higher step is still to come (a failed page or
a step with nobody on duty pulls it in).

Each fired step schedules the next one from its own *scheduled* time, not from
when it actually ran, so a plan restored after a crash keeps its original
timetable: what fell due while the service was down fires at once, the rest on
time. When several steps fall due together (after downtime) they are folded
into one page per responder at the highest level among them: nobody gets the
same page several times on purpose, and nobody a skipped step named is left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from monitor.core.settings import Policy, Priority, ResponderConfig, Step


@dataclass(slots=True)
class Escalation:
    """Where an incident stands in its policy."""

    priority: Priority
    next_index: int = 0
    next_at: float | None = None

    @classmethod
    def start(cls, priority: Priority, policy: Policy, now: float) -> Escalation:
        """A fresh plan whose first step is due ``after`` seconds from ``now``."""
        return cls(priority=priority, next_index=0, next_at=now + policy.steps[0].after)


@dataclass(frozen=True, slots=True)
class Fired:
    """Steps that fell due together, folded into one round of pages."""

    level: int
    targets: tuple[str, ...]  # step targets as configured ("role:nurse", "ana")
    indices: tuple[int, ...]


def top_from(policy: Policy) -> int:
    """The first position from which only the last step repeats."""
    return len(policy.steps) * ((policy.max_repeats or 0) + 1)


def step_index(policy: Policy, index: int) -> int:
    """Which step (0-based) plan position ``index`` fires."""
    if index >= top_from(policy):
        return len(policy.steps) - 1
    return index % len(policy.steps)


def level_of(policy: Policy, index: int) -> int:
    """The 1-based level of position ``index`` (repeats keep the last step's level)."""
    return step_index(policy, index) + 1


def step_of(policy: Policy, index: int) -> Step:
    return policy.steps[step_index(policy, index)]


def gap_after(policy: Policy, index: int) -> float | None:
    """Seconds from position ``index`` to the next one; ``None`` when nothing follows."""
    here, after = step_index(policy, index), step_index(policy, index + 1)
    if after == here + 1:
        return policy.steps[after].after - policy.steps[here].after
    return policy.repeat  # a repeat of the top level, or a new cycle


def fire_due(policy: Policy, esc: Escalation, now: float) -> Fired | None:
    """Advance ``esc`` past every step due at ``now``; return them folded, or None."""
    indices: list[int] = []
    while esc.next_at is not None and esc.next_at <= now:
        indices.append(esc.next_index)
        gap = gap_after(policy, esc.next_index)
        esc.next_index += 1
        if gap is None:
            esc.next_at = None
        elif gap <= 0 and step_index(policy, esc.next_index) <= step_index(policy, indices[-1]):
            # a zero repeat would spin forever; config refuses it, this keeps the core total
            esc.next_at = None
        else:
            esc.next_at += gap
    if not indices:
        return None
    targets: list[str] = []
    for index in indices:
        for target in step_of(policy, index).notify:
            if target not in targets:
                targets.append(target)
    return Fired(
        level=max(level_of(policy, i) for i in indices),
        targets=tuple(targets),
        indices=tuple(indices),
    )


def has_next_step(policy: Policy, esc: Escalation) -> bool:
    """True when the next position is a step above the last one fired (not a repeat)."""
    if esc.next_index == 0:
        return True
    return step_index(policy, esc.next_index) > step_index(policy, esc.next_index - 1)


def jump(policy: Policy, esc: Escalation, now: float) -> None:
    """Fire the next higher step now; at the top, the top level now and from then on."""
    if not has_next_step(policy, esc):
        esc.next_index = max(esc.next_index, top_from(policy))
    esc.next_at = now


@dataclass(frozen=True, slots=True)
class Targets:
    """Who a round of pages goes to, and which roles had nobody on duty."""

    responders: tuple[str, ...]
    gaps: tuple[str, ...]  # roles targeted with nobody on duty


def resolve_targets(
    targets: Iterable[str],
    responders: Sequence[ResponderConfig],
    on_duty: Callable[[str], bool] | None = None,
) -> Targets:
    """Responder ids for step targets: ``role:X`` is everyone with role X who is on duty
    (everyone with it when `on_duty` is None); a responder id is paged regardless."""
    out: list[str] = []
    gaps: list[str] = []
    for target in targets:
        if target.startswith("role:"):
            role = target[len("role:") :]
            ids = [r.id for r in responders
                   if role in r.roles and (on_duty is None or on_duty(r.id))]
            if not ids:
                gaps.append(role)
        else:
            ids = [r.id for r in responders if r.id == target]
        for rid in ids:
            if rid not in out:
                out.append(rid)
    return Targets(tuple(out), tuple(gaps))
