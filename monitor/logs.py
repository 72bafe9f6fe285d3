"""structlog configuration: JSON lines on stderr, or a console format for people.

Nothing personal or secret leaves in a log line (issue 6). Logs name booths,
incidents, devices, channels and responder ids (pseudonymous by design); every
line also passes `PRIVACY`, which

- replaces whatever the site config and environment say is secret or personal
  (responder names and addresses, channel tokens and secrets, credentials in
  URLs, the API token, the ack-link and MQTT secrets) with ``<redacted>``,
  wherever it appears: an error echoed by a service, an exception's text;
- replaces the token of every ack link (``/ack/<token>``): a link acknowledges;
- logs a ``by`` or ``responder`` only when it is a responder id of the config
  (or the booth, or maintenance expiry): the API and pager gateways may send
  anything there, a login or a name, and the audit trail keeps it, not the logs.

Libraries that log through the standard `logging` module (Apprise, aiohttp,
asyncio) go through the same processors, so their lines are JSON and cleaned too.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, Literal, TextIO
from urllib.parse import quote, urlsplit

import structlog

from monitor.core.settings import Config

LogFormat = Literal["json", "console"]

REDACTED = "<redacted>"
NOT_A_RESPONDER = "<not a responder id>"
ACK_TOKEN = "/ack/<token>"
# the environment variables holding secrets that are not in the config itself
SECRET_ENV = ("BOOTHWATCH_SECRET", "BOOTHWATCH_API_TOKEN", "BOOTHWATCH_MQTT_PASSWORD",
              "BOOTHWATCH_BOARD_PASSWORD", "BOOTHWATCH_DB_PASSWORD")
PERSON_KEYS = frozenset({"by", "responder"})
SYSTEM_ACTORS = frozenset({"booth", "expiry"})  # who acts when no person does
MIN_SECRET = 4  # shorter values would blank out ordinary words; none of ours is that short
_ACK_LINK = re.compile(r"/ack/[^\s/?#\"'<>&,;)\]}]+")


class Privacy:
    """A structlog processor that keeps secrets and personal data out of log lines."""

    def __init__(self) -> None:
        self._secrets: re.Pattern[str] | None = None
        self._responders: frozenset[str] | None = None  # None: no config given yet

    def protect(self, secrets: Iterable[str], names: Iterable[str],
                responders: Iterable[str]) -> None:
        """Redact `secrets` anywhere, `names` as whole words; allow only `responders` as ids."""
        words = {s for s in secrets if len(s) >= MIN_SECRET}
        # also as they appear inside URLs (a phone number's + as %2B)
        words |= {quote(s, safe="") for s in words}
        parts = [re.escape(w) for w in sorted(words, key=len, reverse=True)]
        parts += [rf"(?<!\w){re.escape(n)}(?!\w)"
                  for n in sorted({n for n in names if n.strip()}, key=len, reverse=True)]
        self._secrets = re.compile("|".join(parts)) if parts else None
        self._responders = frozenset(responders)

    def reset(self) -> None:
        """Forget the site: as before the first `protect` (tests run several sites)."""
        self._secrets = None
        self._responders = None

    def scrub(self, text: str) -> str:
        text = _ACK_LINK.sub(ACK_TOKEN, text)
        return self._secrets.sub(REDACTED, text) if self._secrets is not None else text

    def clean(self, key: str, value: Any) -> Any:
        if key in PERSON_KEYS and isinstance(value, str) and self._responders is not None:
            if value not in self._responders and value not in SYSTEM_ACTORS:
                return NOT_A_RESPONDER
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, Mapping):
            return {k: self.clean(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.clean(key, v) for v in value]
        if isinstance(value, BaseException):
            return self.scrub(f"{type(value).__name__}: {value}")
        return value

    def __call__(self, logger: Any, method: str,
                 event: MutableMapping[str, Any]) -> dict[str, Any]:
        return {key: self.clean(key, value) for key, value in event.items()}


PRIVACY = Privacy()


def protect(config: Config, env: Mapping[str, str]) -> None:
    """Tell `PRIVACY` what is secret or personal in this site's config and environment."""
    secrets = [env[name] for name in SECRET_ENV if env.get(name)]
    if config.mqtt.password:
        secrets.append(config.mqtt.password)
    for channel in config.channels.values():
        secrets += [v for v in (channel.token, channel.secret) if v]
        if channel.url and channel.type in ("webhook", "apprise"):
            # the whole URL may be a credential (a webhook path, an Apprise URL with keys)
            url = urlsplit(channel.url)
            secrets += [v for v in (channel.url, url.netloc + url.path, url.username,
                                    url.password, url.query) if v]
    for responder in config.responders:
        secrets += responder.address.values()
    PRIVACY.protect(secrets, (r.name for r in config.responders),
                    (r.id for r in config.responders))


def configure(fmt: LogFormat = "json", level: int = logging.INFO,
              stream: TextIO | None = None) -> None:
    """Log lines, the libraries' too, to `stream` (default stderr)."""
    out = sys.stderr if stream is None else stream
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            PRIVACY,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            PRIVACY,
            renderer,
        ],
    ))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(level, logging.WARNING))  # libraries: only what goes wrong


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
