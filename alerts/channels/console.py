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
    """Writes one readable line per page to `stream` (a terminal or a log file)."""

    type = "console"

    def __init__(self, config: ChannelConfig, stream: TextIO = sys.stdout) -> None:
        self.name = config.name
        self.reaches_a_person = config.reaches_a_person
        self._stream = stream

    async def send(self, delivery: Delivery, address: str | None) -> str | None:
        payload = delivery.payload
        priority = str(payload.get("priority", "?")).upper()
        message = payload.get("message") or f"incident {delivery.incident}"
        if delivery.kind == "page":
            line = f"[PAGE] level {delivery.level} {priority} {message} -> {delivery.responder}"
        else:
            line = f"[{delivery.kind.upper()}] {message} -> {delivery.responder}"
        if payload.get("ack_url"):
            line += f"  ack: {payload['ack_url']}"
        try:
            self._stream.write(" ".join(line.splitlines()) + "\n")
            self._stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: I/O on a closed file
            raise DeliveryError(f"console write failed: {exc}") from None
        return None
