"""Scheduled self-tests of every responder's channels: when, what, who hears. Pure.

Theory of operation
-------------------
A channel that stopped reaching a phone (an ntfy app logged out, a pager with a
flat battery, a Pushover key revoked) fails silently: the service still accepts
the page. Like a fire-alarm test, ``[self_test]`` sends, on a weekly schedule in
the site's time zone (``schedule = "daily 09:00"``), a clearly marked test page
to every responder on each of their channels that reaches a person, each with
its own link asking for a tap. A tap *answers* the test: the channel is
verified end to end, from boothwatch to a person.

A *round* is the tests of one scheduled moment::

    (waiting) --schedule-->  RoundStarted: one test per (responder, channel)
    (open)    --answered-->  that test is done (a late answer still counts)
    (open)    --deadline-->  RoundClosed: the tests still unanswered, and who hears of
                             them (the ``notify`` targets on duty, else all of them)

The deadline is ``answer_within`` after the start; a round still open when the next
one starts is closed first. A test whose delivery failed is unanswered, with the
reason. Rounds missed while the service was down are not caught up (test pages
at 3 a.m. after a restart help nobody); ``resume`` carries on a round that was
open at a restart.

A test's id carries its channel (``selftest-<channel>-<ULID>``), and its ack
link is signed for its responder, so an answer is understood even after a
restart, when the round that sent it is gone.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from monitor.core.roster import parse_days
from monitor.core.settings import ChannelConfig, ResponderConfig, SelfTestConfig

PREFIX = "selftest-"
_ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
_SCHEDULE_RE = re.compile(r"(?P<days>[a-z,-]+)\s+(?P<hours>\d{2}):(?P<minutes>\d{2})")
_SCHEDULE_HINT = 'expected "<days> HH:MM" such as "daily 09:00" or "mon-fri 09:30"'

Key = tuple[str, str]  # (responder, channel)


def parse_schedule(text: str) -> tuple[frozenset[int], int]:
    """``"daily 09:00"`` -> (weekdays, minutes after midnight); ValueError says why not."""
    match = _SCHEDULE_RE.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(_SCHEDULE_HINT)
    hours, minutes = int(match["hours"]), int(match["minutes"])
    if hours > 23 or minutes > 59:
        raise ValueError(f"{hours:02d}:{minutes:02d} is not a time of day (00:00 to 23:59)")
    return parse_days(match["days"]), hours * 60 + minutes


def next_round(config: SelfTestConfig, after: float, tz: ZoneInfo) -> float:
    """The first scheduled moment strictly after `after` (epoch seconds)."""
    day = dt.datetime.fromtimestamp(after, tz).date()
    for offset in range(8):
        date = day + dt.timedelta(days=offset)
        if date.weekday() not in config.days:
            continue
        at = dt.datetime.combine(date, dt.time(config.at // 60, config.at % 60), tzinfo=tz)
        if at.timestamp() > after:
            return at.timestamp()
    raise AssertionError("a schedule has at least one day")  # parse_days never gives none


def new_test_id(channel: str, ulid: str) -> str:
    return f"{PREFIX}{channel}-{ulid}"


def channel_of(test: str) -> str | None:
    """The channel a test id names, or None when it is no test id."""
    if not test.startswith(PREFIX):
        return None
    channel, _, ulid = test[len(PREFIX):].rpartition("-")
    return channel if channel and _ULID.fullmatch(ulid) else None


@dataclass(frozen=True, slots=True)
class SelfTestPage:
    test: str
    responder: str
    channel: str


@dataclass(frozen=True, slots=True)
class Missing:
    """A test nobody answered; `failed`: why its delivery failed, if it did."""

    responder: str
    channel: str
    failed: str | None = None


@dataclass(frozen=True, slots=True)
class RoundStarted:
    round: str
    at: float
    deadline: float
    tests: tuple[SelfTestPage, ...]


@dataclass(frozen=True, slots=True)
class RoundClosed:
    round: str
    started: float
    at: float
    missing: tuple[Missing, ...]
    recipients: tuple[str, ...]  # responder ids told of `missing` (none when all answered)


@dataclass(slots=True)
class _Round:
    id: str
    started: float
    deadline: float
    open: dict[str, SelfTestPage]  # test id -> test, until answered
    failed: dict[str, str] = field(default_factory=dict)  # test id -> reason


Recipients = Callable[[tuple[str, ...], float], tuple[str, ...]]


class SelfTests:
    def __init__(self, config: SelfTestConfig, responders: Sequence[ResponderConfig],
                 channels: Mapping[str, ChannelConfig], timezone: str,
                 new_id: Callable[[], str], recipients: Recipients, now: float) -> None:
        """``recipients(targets, now)``: who of the ``notify`` targets hears of a round's
        unanswered tests (the adapter asks the roster who is on duty)."""
        self.config = config
        self.tz = ZoneInfo(timezone)
        self._new_id = new_id
        self._recipients = recipients
        self.keys: tuple[Key, ...] = tuple(
            (r.id, c) for r in responders for c in r.channels
            if c in channels and channels[c].reaches_a_person)
        self.watched_since: dict[Key, float] = dict.fromkeys(self.keys, now)
        self.last_answered: dict[Key, float] = {}
        self.round: _Round | None = None
        self.next_at = next_round(config, now, self.tz)

    # --- restoring after a restart ------------------------------------------------------

    def restore(self, answered: Iterable[tuple[str, str, float]]) -> None:
        """The last answer of each (responder, channel), as stored."""
        for responder, channel, at in answered:
            if (responder, channel) in self.watched_since:
                key = (responder, channel)
                self.last_answered[key] = max(at, self.last_answered.get(key, at))

    def resume(self, round_id: str, started: float, deadline: float,
               tests: Iterable[SelfTestPage], answered: Iterable[str]) -> None:
        """A round that was open when the service stopped: carry it on (its deadline may
        have passed: the next `on_timer` closes it)."""
        done = set(answered)
        self.round = _Round(round_id, started, deadline,
                            {t.test: t for t in tests if t.test not in done})

    # --- time -----------------------------------------------------------------------------

    def next_deadline(self) -> float:
        return min(self.next_at, self.round.deadline) if self.round else self.next_at

    def on_timer(self, now: float) -> list[RoundStarted | RoundClosed]:
        out: list[RoundStarted | RoundClosed] = []
        if self.round is not None and (now >= self.round.deadline or now >= self.next_at):
            out.append(self._close(self.round, now))
        if now >= self.next_at:
            self.next_at = next_round(self.config, now, self.tz)
            if self.keys:
                out.append(self._start(now))
        return out

    def _start(self, now: float) -> RoundStarted:
        tests = tuple(SelfTestPage(new_test_id(channel, self._new_id()), responder, channel)
                      for responder, channel in self.keys)
        self.round = _Round(f"round-{self._new_id()}", now, now + self.config.answer_within,
                            {t.test: t for t in tests})
        return RoundStarted(self.round.id, now, self.round.deadline, tests)

    def _close(self, round_: _Round, now: float) -> RoundClosed:
        self.round = None
        missing = tuple(Missing(t.responder, t.channel, round_.failed.get(t.test))
                        for t in round_.open.values())
        recipients = self._recipients(self.config.notify, now) if missing else ()
        return RoundClosed(round_.id, round_.started, now, missing, recipients)

    # --- what became of a test --------------------------------------------------------------

    def failed(self, test: str, reason: str) -> None:
        """Its delivery failed (every retry): still unanswered, now with a reason."""
        if self.round is not None and test in self.round.open:
            self.round.failed[test] = reason

    def answered(self, test: str, responder: str, now: float) -> Key | None:
        """The responder tapped the test's link: its channel is verified, even when the round
        has closed since. None when the test names no channel of this responder's."""
        channel = channel_of(test)
        key = (responder, channel or "")
        if channel is None or key not in self.watched_since:
            return None
        self.last_answered[key] = now
        if self.round is not None:
            self.round.open.pop(test, None)
        return key

    def unverified_for(self, key: Key, now: float) -> float:
        """Seconds since the channel was last answered (or watched, if never)."""
        return max(0.0, now - self.last_answered.get(key, self.watched_since[key]))
