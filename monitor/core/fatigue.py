"""Alarm fatigue: which outcomes needed nothing, and what a booth's last alarms were. Pure.

Theory of operation
-------------------
An alarm is *non-actionable* when the person who resolved it recorded
``false_alarm`` or ``no_one_there``, and *actionable* for any other outcome a
person records (``ok`` too: someone had to look). The outcomes sensors record
(``session_ended``...) and an incident resolved without an outcome say nothing
either way: they are skipped, neither lengthening nor breaking a run.

Alarm-fatigue research measures the drift in response after a run of alarms
that needed nothing: staff who learned that booth 3 "always goes off for
nothing" answer booth 3 more slowly. So an incident is classed by its booth's
previous incidents (a booth has one open incident at a time, so every earlier
one was resolved before it was raised):

* ``run``: the last `run` classed incidents of the booth were all non-actionable;
* ``actionable``: the last classed one was actionable;
* neither (fewer than `run` classed so far, or a shorter run of non-actionable
  ones): not classed.

`boothwatch report --fatigue` and the ``boothwatch_time_to_acknowledge_after_seconds``
histogram both class incidents with `History`, so the report and the dashboard
row agree, but for one thing: the report reads the outcomes as finally recorded,
the service those recorded by the acknowledgement (an outcome added to the
previous incident later does not reach the metric).
"""

from __future__ import annotations

from collections import deque
from typing import Literal

from monitor.core.events import OUTCOMES

#: outcomes of alarms that needed nothing
NON_ACTIONABLE: frozenset[str] = frozenset({"false_alarm", "no_one_there"})
#: the other outcomes a person records: someone had to look
ACTIONABLE: frozenset[str] = frozenset(OUTCOMES) - NON_ACTIONABLE
#: how many non-actionable alarms in a row make a run
DEFAULT_RUN = 3

After = Literal["run", "actionable"]
AFTER: tuple[After, ...] = ("run", "actionable")


def actionable(outcome: str | None) -> bool | None:
    """True or False for an outcome a person recorded; None for anything else."""
    if outcome in NON_ACTIONABLE:
        return False
    if outcome in ACTIONABLE:
        return True
    return None


class History:
    """One booth's last classed outcomes, oldest first."""

    def __init__(self, run: int = DEFAULT_RUN) -> None:
        if run < 1:
            raise ValueError(f"a run is at least 1 alarm, got {run}")
        self.run = run
        self._last: deque[bool] = deque(maxlen=run)

    def add(self, outcome: str | None) -> None:
        """The outcome of the booth's next incident (in the order they were raised)."""
        classed = actionable(outcome)
        if classed is not None:
            self._last.append(classed)

    def after(self) -> After | None:
        """How the booth's next incident is classed (see the module docstring)."""
        if self._last and self._last[-1]:
            return "actionable"
        if len(self._last) == self.run and not any(self._last):
            return "run"
        return None
