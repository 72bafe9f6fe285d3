"""The words people read: pages on a lock screen, notices, monitoring down. Pure.

Every sentence the service sends a nurse is made here, so they can be read,
reviewed and translated in one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import assert_never

from monitor.core.durations import format_duration
from monitor.core.events import BoothEvent, Button, Door, Heartbeat, Motion, Occupancy
from monitor.core.incident import State, Transition, Trigger
from monitor.core.settings import BoothConfig


def page_message(
    booth: BoothConfig, triggers: Iterable[Trigger], urgent: bool = False,
    maintenance: bool = False,
) -> str:
    """The one line a nurse reads on a lock screen, in the order the triggers came."""
    parts = []
    for trigger in triggers:
        match trigger:
            case Trigger.CALL:
                parts.append("call button pressed again" if urgent else "call button pressed")
            case Trigger.UNRESPONSIVE:
                parts.append(f"no movement for {format_duration(round(booth.stillness))}")
            case Trigger.LONG_SESSION:
                parts.append(f"session over {format_duration(round(booth.long_session))}")
            case Trigger.DEVICE_OFFLINE:
                parts.append("a device is offline")
            case Trigger.LOW_BATTERY:
                parts.append("a device's battery is low")
            case _:
                assert_never(trigger)
    text = f"{booth.name}: " + "; ".join(parts)
    if urgent:
        text = "URGENT: " + text
    if maintenance:
        text += " (booth in maintenance)"
    return text


def notice_message(change: Transition, who: str, booth_name: str) -> str | None:
    """What everyone paged before hears when the incident changed so (None: nothing)."""
    if change.to is State.ACKNOWLEDGED:
        return f"{who} is attending {booth_name}"
    if change.to is State.ATTENDED and change.was is State.OPEN:
        return f"{who} is at {booth_name}"
    if change.to is State.RESOLVED:
        return f"{booth_name}: all clear"
    return None


def monitoring_down(site_name: str, down_for: float) -> tuple[str, str]:
    """The title and text of the page that says no booth is being watched."""
    return (f"MONITORING DOWN · {site_name}",
            f"{site_name}: boothwatch has received nothing from the booths for "
            f"{format_duration(down_for)} (MQTT broker unreachable). Calls and stillness are "
            "NOT being detected: check the booths in person.")


def monitoring_restored(site_name: str, down_for: float) -> tuple[str, str]:
    """The title and text of the message that says the booths are watched again."""
    return (f"Monitoring restored · {site_name}",
            f"{site_name}: monitoring restored after {format_duration(down_for)} down. Booth "
            "events the broker kept meanwhile are being processed now.")


def test_page_message(site_name: str, responder_name: str, channel: str, when: str,
                      answer: bool) -> str:
    """A test page's text: `boothwatch test-page` (no action) or a self-test (tap to answer)."""
    text = f"TEST PAGE from boothwatch ({site_name}) to {responder_name} via {channel} at {when}."
    return text + (" Tap the link to confirm it reached you." if answer else " No action needed.")


def self_test_unanswered(site_name: str, when: str,
                         missing: Iterable[tuple[str, str, str | None]]) -> tuple[str, str]:
    """The title and text telling coordinators and technicians which channels nobody
    confirmed: (responder name, channel, why its delivery failed or None)."""
    items = "; ".join(f"{name} on {channel}" + (f" (not delivered: {failed})" if failed else "")
                      for name, channel, failed in missing)
    return (f"Self-test unanswered · {site_name}",
            f"{site_name}: the self-test of {when} was not confirmed by {items}. A page on "
            "these channels may not reach anyone: check them now.")


def booth_test_message(booth: BoothConfig, trigger: Trigger) -> str:
    """What the person testing a booth hears when a trigger fired (nobody else does)."""
    return f"TEST · {page_message(booth, [trigger])} (a device test: nobody else is paged)"


def heard(event: BoothEvent) -> str:
    """What a booth event said, as a device self-test lists it."""
    match event:
        case Occupancy(occupied=occupied):
            return "occupied" if occupied else "vacant"
        case Motion(state=state):
            return f"motion {state.value}"
        case Button(press=press):
            return f"{press.value} button"
        case Heartbeat():
            return "heartbeat"
        case Door(closed=closed):
            return "door closed" if closed else "door open"
        case _:
            assert_never(event)
