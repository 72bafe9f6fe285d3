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

from collections.abc import Callable, Container, Iterable, Sequence
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

    responders: tuple[str, ...]  # free responders first, busy ones last
    gaps: tuple[str, ...]  # roles targeted with nobody on duty
    # (role, its busy responders passed over for free ones), with skip_busy
    skipped: tuple[tuple[str, tuple[str, ...]], ...] = ()
    engaged: tuple[str, ...] = ()  # roles whose every on-duty responder is busy


def resolve_targets(
    targets: Iterable[str],
    responders: Sequence[ResponderConfig],
    on_duty: Callable[[str], bool] | None = None,
    busy: Container[str] = frozenset(),
    skip_busy: bool = False,
) -> Targets:
    """Responder ids for step targets: ``role:X`` is everyone with role X who is on duty
    (everyone with it when `on_duty` is None); a responder id is paged regardless.

    Of a role's responders, those ``busy`` at another booth are paged after the free
    ones, or with ``skip_busy`` not at all while one is free; when all are busy they are
    paged anyway (someone must always hear) and the role is ``engaged``."""
    first: list[str] = []
    last: list[str] = []
    gaps: list[str] = []
    skipped: list[tuple[str, tuple[str, ...]]] = []
    engaged: list[str] = []
    for target in targets:
        if not target.startswith("role:"):
            first.extend(r.id for r in responders if r.id == target)
            continue
        role = target[len("role:") :]
        ids = [r.id for r in responders
               if role in r.roles and (on_duty is None or on_duty(r.id))]
        if not ids:
            gaps.append(role)
        free = [rid for rid in ids if rid not in busy]
        taken = [rid for rid in ids if rid in busy]
        first.extend(free)
        if ids and not free:
            engaged.append(role)
        if skip_busy and free:
            skipped.append((role, tuple(taken)))
        else:
            last.extend(taken)
    out = tuple(dict.fromkeys(first + last))
    skipped = [(role, left) for role, ids in skipped
               if (left := tuple(rid for rid in ids if rid not in out))]
    return Targets(out, tuple(gaps), tuple(skipped), tuple(engaged))
