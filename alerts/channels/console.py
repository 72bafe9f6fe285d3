"""Console: one readable line per page, for a terminal or a log file.

A terminal someone watches (the demo's, `watched = true`) reaches a person; a
service's output goes to its journal, which reaches nobody: the dispatcher then
records the page as printed, not delivered, and tries the next channel.
"""

from __future__ import annotations

import sys
from typing import TextIO

from alerts.delivery import Delivery, DeliveryError
from monitor.core.settings import ChannelConfig


class ConsoleChannel:
    """Writes one readable line per page to `stream` (a terminal or a log file): what,
    to whom, how loud; a page's ack link follows on a line of its own."""

    type = "console"

    def __init__(self, config: ChannelConfig, stream: TextIO = sys.stdout) -> None:
        self.name = config.name
        self.reaches_a_person = config.reaches_a_person
        self._stream = stream

    async def send(self, delivery: Delivery, address: str | None) -> str | None:
        payload = delivery.payload
        message = payload.get("message") or f"incident {delivery.incident}"
        line = f"[{delivery.kind.upper()}] {message} -> {delivery.responder}"
        if delivery.kind == "page":
            loud = [str(payload.get("priority", "?")).upper(), f"level {delivery.level}"]
            if payload.get("urgent"):
                loud.append("URGENT")
            line += f" ({', '.join(loud)})"
        text = " ".join(line.splitlines()) + "\n"
        if payload.get("ack_url"):
            # ~150 characters: inside the line it would wrap it over three lines of a terminal
            text += f"  ack: {payload['ack_url']}\n"
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: I/O on a closed file
            raise DeliveryError(f"console write failed: {exc}") from None
        return None
