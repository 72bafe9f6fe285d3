"""The words people read: pages on a lock screen, notices, monitoring down. Pure.

Every sentence the service sends a nurse is made here, so they can be read,
reviewed and translated in one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import assert_never

from monitor.core.durations import format_duration
from monitor.core.events import ProtocolStep
from monitor.core.incident import State, Transition, Trigger
from monitor.core.settings import BoothConfig


def page_message(
    booth: BoothConfig, triggers: Iterable[Trigger], urgent: bool = False,
    maintenance: bool = False, reopened: tuple[str, float] | None = None,
) -> str:
    """The one line a nurse reads on a lock screen, in the order the triggers came.

    ``reopened`` is (who, seconds ago) of the acknowledgement an ack timeout let lapse:
    the page then says nobody is there yet, the reasons in brackets.
    """
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
    if reopened is not None:
        who, ago = reopened
        text = (f"re-opened: nobody at {booth.name} yet, {format_duration(round(ago))} after "
                f"{who} acknowledged ({'; '.join(parts)})")
    if urgent:
        text = "URGENT: " + text
    if maintenance:
        text += " (booth in maintenance)"
    return text


def notice_message(change: Transition, who: str, booth_name: str) -> str | None:
    """What everyone paged before hears when the incident changed so (None: nothing)."""
    if change.to is State.ACKNOWLEDGED:
        return f"{who} is attending {booth_name}"
    if change.to is State.ATTENDED and change.step == ProtocolStep.ANSWERED.value:
        return f"The person in {booth_name} answered {who}: nobody else need come"
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
