"""Watching our own link to the broker: tell the staff when monitoring is down. Pure.

Theory of operation
-------------------
While boothwatch is cut off from the MQTT broker no booth event reaches it: a
call button or a person going still goes unseen. A short drop is ordinary (the
broker restarts, the link comes back with backoff, and the broker hands over
what it queued meanwhile). An outage that lasts ``page_after`` is not: the
people on duty are told, through channels that do not need the broker, that
monitoring is down and the booths must be checked in person; when the link is
back they are told that monitoring is restored.

"Up" means connected *and* subscribed (events reach us), as ``/readyz`` says.

States and transitions (``observe(up, now)``, ``on_timer(now)``)::

    UP          --down-->                 DOWN(since)
    DOWN        --up-->                   UP            (a blip: nothing sent)
    DOWN        --timer since+page_after-> PAGED        -> MonitoringDown
    PAGED       --up-->                   SETTLING(back)
    SETTLING    --down-->                 PAGED         (same outage: nothing sent)
    SETTLING    --timer back+settle-->    UP            -> MonitoringRestored

Safety rules: one MonitoringDown per outage, and one MonitoringRestored after
it, to the same people; a link that flaps while settling never pages twice.
The watch starts DOWN at the process start (nothing is connected yet), so a
broker that never comes up is paged about too. After a restart in the middle of
a paged outage, ``resume`` puts the watch back in PAGED so nobody is paged twice
and the restored message still reaches the people who were told.

Who is told (`outage_recipients`): the responders on duty, each over their
channels other than ``mqtt`` (which need the broker that is down) and a console
nobody watches (which reaches nobody), in their fallback order. When none of
them can be reached that way (nobody on duty, or only through MQTT), every
responder who can be is told: at 2 a.m. a nurse working without a shift in the
config must still hear that the booths are unwatched.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from monitor.core.settings import ChannelConfig, ResponderConfig


@dataclass(frozen=True, slots=True)
class Recipient:
    """A responder, and their channels that work without the broker, in fallback order."""

    responder: str
    channels: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.responder or not self.channels:
            raise ValueError(f"a recipient needs a responder and channels, got {self!r}")


@dataclass(frozen=True, slots=True)
class MonitoringDown:
    """Page ``recipients``: no booth event has reached us since ``since``."""

    outage: str
    since: float
    at: float
    recipients: tuple[Recipient, ...]
    everyone: bool  # nobody on duty could be reached: every reachable responder is told


@dataclass(frozen=True, slots=True)
class MonitoringRestored:
    """Tell ``recipients`` (those told it was down) that events flow again since ``back``."""

    outage: str
    since: float
    back: float
    at: float
    recipients: tuple[Recipient, ...]

    @property
    def down_for(self) -> float:
        return self.back - self.since


Notice = MonitoringDown | MonitoringRestored
Pick = Callable[[float], tuple[tuple[Recipient, ...], bool]]


class State(enum.Enum):
    UP = "up"
    DOWN = "down"  # not paged yet
    PAGED = "paged"
    SETTLING = "settling"  # paged, link back, not yet long enough to call it restored


class SelfWatch:
    def __init__(self, page_after: float, settle: float, pick: Pick,
                 new_id: Callable[[], str], now: float) -> None:
        """``pick(now)`` returns the recipients and whether it fell back to everyone."""
        if not page_after > 0 or not settle >= 0:
            raise ValueError(f"page_after must be > 0 and settle >= 0, got {page_after}, {settle}")
        self.page_after = page_after
        self.settle = settle
        self._pick = pick
        self._new_id = new_id
        self.state = State.DOWN
        self.since: float = now  # the outage's start (DOWN, PAGED, SETTLING)
        self.back: float | None = None  # SETTLING: when the link came back
        self.link_down_since: float | None = now  # the link itself, for the metric
        self.outage: str | None = None  # PAGED, SETTLING
        self.recipients: tuple[Recipient, ...] = ()

    def resume(self, outage: str, since: float, recipients: Iterable[Recipient]) -> None:
        """An outage we had paged about before a restart: carry on as PAGED."""
        self.state = State.PAGED
        self.outage = outage
        self.since = since
        self.link_down_since = min(since, self.link_down_since or since)
        self.recipients = tuple(recipients)

    def next_deadline(self) -> float | None:
        match self.state:
            case State.DOWN:
                return self.since + self.page_after
            case State.SETTLING:
                assert self.back is not None
                return self.back + self.settle
            case State.UP | State.PAGED:
                return None

    def observe(self, up: bool, now: float) -> list[Notice]:
        """The link is ``up`` (connected and subscribed) or not, as of ``now``."""
        if up:
            self.link_down_since = None
        elif self.link_down_since is None:
            self.link_down_since = now
        match self.state, up:
            case State.UP, False:
                self.state, self.since = State.DOWN, now
            case State.DOWN, True:
                self.state = State.UP
            case State.PAGED, True:
                self.state, self.back = State.SETTLING, now
            case State.SETTLING, False:
                self.state, self.back = State.PAGED, None
            case _:
                pass  # no change (a repeated observation)
        return self.on_timer(now)

    def on_timer(self, now: float) -> list[Notice]:
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return []
        if self.state is State.DOWN:
            recipients, everyone = self._pick(now)
            self.state, self.outage, self.recipients = State.PAGED, self._new_id(), recipients
            return [MonitoringDown(self.outage, self.since, now, recipients, everyone)]
        assert self.state is State.SETTLING and self.back is not None and self.outage
        done = MonitoringRestored(self.outage, self.since, self.back, now, self.recipients)
        self.state, self.back, self.outage, self.recipients = State.UP, None, None, ()
        return [done]

    def down_seconds(self, now: float) -> float:
        """How long the link itself has been down (0 while up)."""
        return 0.0 if self.link_down_since is None else max(0.0, now - self.link_down_since)


def outage_recipients(
    responders: Iterable[ResponderConfig],
    channels: Mapping[str, ChannelConfig],
    on_duty: Callable[[str], bool],
) -> tuple[tuple[Recipient, ...], bool]:
    """Who hears that monitoring is down, and whether that is everyone (see the header)."""
    reachable = []
    for r in responders:
        usable = tuple(c for c in r.channels if c in channels and channels[c].type != "mqtt"
                       and channels[c].reaches_a_person)
        if usable:
            reachable.append(Recipient(r.id, usable))
    on = tuple(r for r in reachable if on_duty(r.responder))
    if on:
        return on, False
    return tuple(reachable), True
