"""Escalation policy: which step fires when, and whom it pages. Pure, no I/O.

Theory of operation
-------------------
A policy is a list of steps, each ``after`` seconds from the start of the plan,
plus ``repeat`` (resend the last step this often) and ``ack_timeout``. An
incident carries an `Escalation`: the index of the next step to fire and the
wall-clock time it is due (``next_at``; ``None`` while paused by an
acknowledgement or when nothing is left to send). Indices past the last step are
repeats of the last step.

Each fired step schedules the next one from its own *scheduled* time, not from
when it actually ran, so a plan restored after a crash keeps its original
timetable: what fell due while the service was down fires at once, the rest on
time. When several steps fall due together (after downtime) they are folded
into one page per responder at the highest level among them: nobody gets the
same page several times on purpose, and nobody a skipped step named is left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from monitor.config import Policy, Priority, ResponderConfig, Step


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


def level_of(policy: Policy, index: int) -> int:
    """The 1-based level of step ``index`` (repeats keep the last step's level)."""
    return min(index, len(policy.steps) - 1) + 1


def step_of(policy: Policy, index: int) -> Step:
    return policy.steps[min(index, len(policy.steps) - 1)]


def gap_after(policy: Policy, index: int) -> float | None:
    """Seconds from step ``index`` to the next one; ``None`` when nothing follows."""
    if index + 1 < len(policy.steps):
        return policy.steps[index + 1].after - policy.steps[index].after
    return policy.repeat


def fire_due(policy: Policy, esc: Escalation, now: float) -> Fired | None:
    """Advance ``esc`` past every step due at ``now``; return them folded, or None."""
    indices: list[int] = []
    while esc.next_at is not None and esc.next_at <= now:
        indices.append(esc.next_index)
        gap = gap_after(policy, esc.next_index)
        esc.next_index += 1
        if gap is None:
            esc.next_at = None
        elif gap <= 0 and esc.next_index >= len(policy.steps):
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
    """True while a step above the current one (not a repeat) is still to come."""
    return esc.next_index < len(policy.steps)


def resolve_targets(
    targets: Iterable[str], responders: Sequence[ResponderConfig]
) -> tuple[str, ...]:
    """Responder ids for step targets: ``role:X`` is everyone with role X, else an id."""
    out: list[str] = []
    for target in targets:
        if target.startswith("role:"):
            role = target[len("role:") :]
            ids = [r.id for r in responders if role in r.roles]
        else:
            ids = [r.id for r in responders if r.id == target]
        for rid in ids:
            if rid not in out:
                out.append(rid)
    return tuple(out)
