"""The station board's feed: every booth, incident and duty change, to each open board.

The driver's publish port (`monitor.runtime.Publisher`) hands each booth and incident
change here already encoded, as the same JSON it publishes on MQTT and the API serves
(`monitor.codec`), so a board never sees a model of its own. With no board connected a
change costs one call and one test.

Sending never awaits: a change is put on each board's bounded queue and the caller
goes on. A board that falls `limit` messages behind (a laptop asleep, a dead link, a
stalled tab) is dropped and counted: its connection is cut, and it reconnects to a
fresh snapshot, which holds the whole state anyway. So no board can slow the core or a page,
and no board holds more memory than its queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from monitor.store import dumps

log = structlog.get_logger(__name__)

#: messages a board may fall behind before it is dropped (minutes of a busy site's changes)
QUEUE_LIMIT = 1000
DUTY_CHECK = 1.0  # seconds between looks at the shifts while a board is connected
#: what a dropped board's stream finds on its queue: stop
DROPPED = b""


def message(event: bytes, data: bytes) -> bytes:
    """One Server-Sent Event; ``data`` is compact JSON, so it holds no newline."""
    return b"event: " + event + b"\ndata: " + data + b"\n\n"


class Board:
    """One open stream: what it has yet to send, and how to cut it when it falls behind."""

    __slots__ = ("_cut", "queue")

    def __init__(self, limit: int, cut: Callable[[], None]) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(limit)
        self._cut = cut

    def drop(self) -> None:
        while not self.queue.empty():  # free what it will never send
            self.queue.get_nowait()
        self.queue.put_nowait(DROPPED)
        self._cut()  # a write blocked on the dead peer fails at once


class BoardFeed:
    def __init__(self, responders: Callable[[], list[dict[str, Any]]],
                 limit: int = QUEUE_LIMIT) -> None:
        self._responders = responders  # duty now, as GET /api/responders
        self._limit = limit
        self._boards: list[Board] = []
        self._duty: bytes | None = None  # the responders last sent, to notice shift changes
        self.dropped = 0  # boards dropped for falling behind, since start

    @property
    def connected(self) -> int:
        return len(self._boards)

    def send(self, event: bytes, data: bytes) -> None:
        """A booth (``b"booth"``) or incident (``b"incident"``) change, as its JSON."""
        if self._boards:
            self._broadcast(message(event, data))

    def duty(self) -> None:
        """Someone checked in or out: every board gets the responders now."""
        if self._boards:
            self._send_duty(dumps(self._responders()).encode())

    async def watch_duty(self) -> None:
        """Send the responders whenever a shift begins or ends (no event says so)."""
        while True:
            await asyncio.sleep(DUTY_CHECK)
            if self._boards:
                duty = dumps(self._responders()).encode()
                if duty != self._duty:
                    self._send_duty(duty)

    def _send_duty(self, duty: bytes) -> None:
        self._duty = duty
        self._broadcast(message(b"responders", duty))

    def subscribe(self, snapshot: bytes, cut: Callable[[], None]) -> Board:
        """A new board: the snapshot first, then every change after it.

        Call it on the same turn of the event loop that built ``snapshot``, so no change
        falls between the two.
        """
        board = Board(self._limit, cut)
        board.queue.put_nowait(message(b"snapshot", snapshot))
        if self._duty is None:  # the duty the snapshot holds: the shift watch starts from it
            self._duty = dumps(self._responders()).encode()
        self._boards.append(board)
        return board

    def close(self) -> None:
        """The service stops: every stream ends now; each board reconnects by itself."""
        for board in list(self._boards):
            self.unsubscribe(board)
            board.drop()

    def unsubscribe(self, board: Board) -> None:
        if board in self._boards:
            self._boards.remove(board)
        if not self._boards:
            self._duty = None

    def _broadcast(self, data: bytes) -> None:
        behind: list[Board] = []
        for board in self._boards:
            try:
                board.queue.put_nowait(data)
            except asyncio.QueueFull:
                behind.append(board)
        for board in behind:
            self.unsubscribe(board)
            self.dropped += 1
            board.drop()
            log.warning("board_dropped", reason="fell behind", queued=self._limit,
                        boards=self.connected)
