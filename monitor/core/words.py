"""The words people read: pages on a lock screen, notices, monitoring down. Pure.

Every sentence the service sends a nurse is chosen here, so they can be read and
reviewed in one place. A sentence is `Words`: its message id, the English source
text of the message catalogs (``%(name)s`` placeholders, gettext's python-format),
and the values of its placeholders. The core never says them in a language: an
adapter (`monitor.i18n`) looks the id up in the site's catalog and formats the
values, durations in that language's words ("2m 40s", "2 min e 40 s"). `english`
renders the source text for the record (the timeline's notices).

``say("...")`` is the keyword ``make messages`` extracts (``pybabel extract -k say``):
every message id is a literal in a call to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import assert_never

from monitor.core.durations import format_duration
from monitor.core.events import ProtocolStep
from monitor.core.incident import State, Transition, Trigger
from monitor.core.settings import BoothConfig, Risk


@dataclass(frozen=True, slots=True)
class Duration:
    """A length of time in a sentence; said in whole seconds, in the reader's words."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Words:
    """A sentence to be said in the site's language: its catalog message id (the English
    source) and the values of its placeholders. A tuple of sentences is a list ("; ")."""

    msgid: str
    values: tuple[tuple[str, Value], ...] = ()


Value = str | int | Duration | Words | tuple[Words, ...]


def say(msgid: str, **values: Value) -> Words:
    return Words(msgid, tuple(values.items()))


def N_(msgid: str) -> str:  # gettext's name for it, which pybabel extracts
    """Marks a message id where it is written (a label in a table); it is translated
    where it is shown."""
    return msgid


def render(words: Words, translate: Callable[[str], str],
           duration: Callable[[float], str]) -> str:
    """`words` with its msgid through `translate` and each value said: sentences in
    turn, durations by `duration`. Only a sentence with values is %-formatted, so a
    lone "%" in a plain message is just a character."""
    text = translate(words.msgid)
    if not words.values:
        return text
    values: dict[str, str | int] = {}
    for name, value in words.values:
        match value:
            case Words():
                values[name] = render(value, translate, duration)
            case tuple():
                values[name] = "; ".join(render(part, translate, duration) for part in value)
            case Duration():
                values[name] = duration(value.seconds)
            case str() | int():
                values[name] = value
            case _:
                assert_never(value)
    return text % values


def english(words: Words) -> str:
    """The catalog's source text, for the record; durations as the config writes them."""
    return render(words, lambda msgid: msgid, format_duration)


def page_message(
    booth: BoothConfig, triggers: Iterable[Trigger], urgent: bool = False,
    maintenance: bool = False, risk: Risk = "standard", after_hours: bool = False,
    reopened: tuple[str, float] | None = None,
) -> Words:
    """The one line a nurse reads on a lock screen, in the order the triggers came.

    ``reopened`` is (who, seconds ago) of the acknowledgement an ack timeout let lapse:
    the page then says nobody is there yet, the reasons in brackets.
    """
    what = reasons(booth, triggers, urgent, risk)
    text = say("%(booth)s: %(what)s", booth=booth.name, what=what)
    if reopened is not None:
        who, ago = reopened
        # TRANSLATORS: an acknowledged incident opened again because nobody reached the
        # booth; %(duration)s after %(who)s acknowledged; %(what)s are the reasons
        text = say("re-opened: nobody at %(booth)s yet, %(duration)s after %(who)s "
                   "acknowledged (%(what)s)", booth=booth.name, duration=Duration(round(ago)),
                   who=who, what=what)
    if urgent:
        # TRANSLATORS: a repeated call; %(message)s is the whole page ("Booth 1: ...")
        text = say("URGENT: %(message)s", message=text)
    if risk == "high":
        # TRANSLATORS: staff marked the session high risk: it is watched more closely
        text = say("%(message)s (high-risk session)", message=text)
    if maintenance:
        text = say("%(message)s (booth in maintenance)", message=text)
    if after_hours:
        # TRANSLATORS: the room is closed ([site] hours): the technician is paged
        text = say("%(message)s (outside opening hours)", message=text)
    return text


def reasons(booth: BoothConfig, triggers: Iterable[Trigger], urgent: bool = False,
            risk: Risk = "standard") -> tuple[Words, ...]:
    """What is wrong at the booth, one part per trigger (the page, the ack page); the
    thresholds are those of the session's risk."""
    parts = []
    for trigger in triggers:
        match trigger:
            case Trigger.CALL:
                parts.append(say("call button pressed again") if urgent
                             else say("call button pressed"))
            case Trigger.UNRESPONSIVE:
                stillness = booth.thresholds(risk).stillness
                parts.append(say("no movement for %(duration)s",
                                 duration=Duration(round(stillness))))
            case Trigger.LONG_SESSION:
                long_session = booth.thresholds(risk).long_session
                parts.append(say("session over %(duration)s",
                                 duration=Duration(round(long_session))))
            case Trigger.DEVICE_OFFLINE:
                parts.append(say("a device is offline"))
            case Trigger.LOW_BATTERY:
                parts.append(say("a device's battery is low"))
            case _:
                assert_never(trigger)
    return tuple(parts)


def all_engaged_message(booth_name: str, busy: Iterable[tuple[str, str]]) -> Words:
    """What a coordinator hears when everyone a step targets is busy at another booth;
    ``busy`` is (name, booth name) of each responder paged all the same."""
    # TRANSLATORS: one of the busy staff, and the booth they are at
    who = tuple(say("%(name)s at %(booth)s", name=name, booth=at) for name, at in busy)
    # TRANSLATORS: %(who)s lists the busy staff paged anyway ("Ana at Booth 1; Bea at ...")
    return say("All staff engaged: %(booth)s needs someone, paged all the same: %(who)s",
               booth=booth_name, who=who)


#: who a notice names when the booth's own presence button was pressed
STAFF_AT_THE_BOOTH = say("Staff at the booth")


def notice_message(change: Transition, who: str | Words, booth_name: str) -> Words | None:
    """What everyone paged before hears when the incident changed so (None: nothing)."""
    if change.to is State.ACKNOWLEDGED:
        # TRANSLATORS: %(who)s acknowledged the page and is on the way to %(booth)s
        return say("%(who)s is attending %(booth)s", who=who, booth=booth_name)
    if change.to is State.ATTENDED and change.step == ProtocolStep.ANSWERED.value:
        # TRANSLATORS: the person in the booth answered %(who)s through the door or the
        # intercom: they are fine, paging stops
        return say("The person in %(booth)s answered %(who)s: nobody else need come",
                   who=who, booth=booth_name)
    if change.to is State.ATTENDED and change.was is State.OPEN:
        return say("%(who)s is at %(booth)s", who=who, booth=booth_name)
    if change.to is State.RESOLVED:
        return say("%(booth)s: all clear", booth=booth_name)
    return None


def monitoring_down(site_name: str, down_for: float) -> tuple[Words, Words]:
    """The title and text of the page that says no booth is being watched."""
    return (say("MONITORING DOWN · %(site)s", site=site_name),
            say("%(site)s: boothwatch has received nothing from the booths for %(duration)s "
                "(MQTT broker unreachable). Calls and stillness are NOT being detected: check "
                "the booths in person.", site=site_name, duration=Duration(down_for)))


def monitoring_restored(site_name: str, down_for: float) -> tuple[Words, Words]:
    """The title and text of the message that says the booths are watched again."""
    return (say("Monitoring restored · %(site)s", site=site_name),
            say("%(site)s: monitoring restored after %(duration)s down. Booth events the "
                "broker kept meanwhile are being processed now.",
                site=site_name, duration=Duration(down_for)))


def test_page_message(site_name: str, responder_name: str, channel: str, when: str,
                      answer: bool) -> Words:
    """A test page's text: `boothwatch test-page` (no action) or a self-test (tap to answer)."""
    values: dict[str, Value] = {"site": site_name, "name": responder_name, "channel": channel,
                                "time": when}
    if answer:
        return say("TEST PAGE from boothwatch (%(site)s) to %(name)s via %(channel)s at "
                   "%(time)s. Tap the link to confirm it reached you.", **values)
    return say("TEST PAGE from boothwatch (%(site)s) to %(name)s via %(channel)s at %(time)s. "
               "No action needed.", **values)


def self_test_unanswered(site_name: str, when: str,
                         missing: Iterable[tuple[str, str, str | None]]) -> tuple[Words, Words]:
    """The title and text telling coordinators and technicians which channels nobody
    confirmed: (responder name, channel, why its delivery failed or None)."""
    items = tuple(
        say("%(name)s on %(channel)s (not delivered: %(reason)s)", name=name, channel=channel,
            reason=failed) if failed else say("%(name)s on %(channel)s", name=name,
                                              channel=channel)
        for name, channel, failed in missing)
    return (say("Self-test unanswered · %(site)s", site=site_name),
            say("%(site)s: the self-test of %(time)s was not confirmed by %(missing)s. A page "
                "on these channels may not reach anyone: check them now.", site=site_name,
                time=when, missing=items))


def booth_test_message(booth: BoothConfig, trigger: Trigger) -> Words:
    """What the person testing a booth hears when a trigger fired (nobody else does)."""
    return say("TEST · %(message)s (a device test: nobody else is paged)",
               message=page_message(booth, [trigger]))
