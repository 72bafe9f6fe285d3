"""structlog configuration: JSON lines on stderr, or a console format for people."""

from __future__ import annotations

import logging
import sys
import time
from typing import Literal

import structlog

LogFormat = Literal["json", "console"]


def configure(fmt: LogFormat = "json", level: int = logging.INFO) -> None:
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


class RateLimit:
    """Lets a message through at most once per ``period`` seconds per key."""

    def __init__(self, period: float = 60.0) -> None:
        self.period = period
        self._last: dict[tuple[str, ...], float] = {}

    def allow(self, *key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        last = self._last.get(key)
        if last is not None and now - last < self.period:
            return False
        if len(self._last) > 10_000:  # topics come from outside: keep the table bounded
            self._last.clear()
        self._last[key] = now
        return True
