"""Signed ack links (interface section 7): one token per incident and responder.

A token is an itsdangerous URL-safe timed signature (HMAC-SHA256, salt
``boothwatch-ack``) over ``[incident, responder]``. `AckTokens.check` says why
a token is refused, so the HTTP layer can answer 403 and count the reason:

- ``malformed``: not even shaped like a token (garbage, truncated, wrong alphabet);
- ``forged``: shaped like a token but the signature does not match (another
  secret, an altered incident or responder, a flipped byte);
- ``expired``: genuine but older than ``ttl`` seconds.

Expiry is checked here rather than by itsdangerous's ``max_age`` so that the
current time can be passed in (``check(token, now=...)``) and ``ttl`` may be a
float. itsdangerous records the signing time in whole seconds (rounded down),
so a link may expire up to one second early, never late. A token whose signing
time lies ahead of ``now`` (the wall clock was stepped back) is accepted: only
the holder of the secret can make one, and refusing it would block an ack.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Literal

from itsdangerous import BadPayload, BadSignature, URLSafeTimedSerializer

SALT = "boothwatch-ack"
MAX_TOKEN_LENGTH = 1024

Reason = Literal["forged", "expired", "malformed"]

# [.]payload.timestamp.signature, each part URL-safe base64 (a leading dot marks
# a compressed payload).
_SHAPE = re.compile(r"\.?[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class InvalidToken(Exception):
    """A refused ack token; `reason` is ``forged``, ``expired`` or ``malformed``."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason)
        self.reason: Reason = reason


class AckTokens:
    """Makes and checks ack tokens bound to one incident and one responder."""

    def __init__(self, secret: str | bytes, ttl: float) -> None:
        if not secret:
            raise ValueError("the ack token secret must not be empty")
        if not ttl > 0:
            raise ValueError(f"ttl must be positive, got {ttl!r}")
        self.ttl = float(ttl)
        self._serializer = URLSafeTimedSerializer(
            secret, salt=SALT, signer_kwargs={"digest_method": hashlib.sha256}
        )

    def make(self, incident: str, responder: str) -> str:
        """Return a URL-safe token for `responder` to acknowledge `incident`."""
        for value, what in ((incident, "incident"), (responder, "responder")):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{what} must be a non-empty string, got {value!r}")
        token = self._serializer.dumps([incident, responder])
        assert isinstance(token, str)  # URLSafeTimedSerializer.dumps returns str
        return token

    def check(self, token: str, now: float | None = None) -> tuple[str, str]:
        """Return ``(incident, responder)`` or raise `InvalidToken` saying why not.

        `now` is the wall-clock time in seconds since the epoch (default: now).
        """
        if (
            not isinstance(token, str)
            or len(token) > MAX_TOKEN_LENGTH
            or not _SHAPE.fullmatch(token)
        ):
            raise InvalidToken("malformed")
        try:
            payload, signed_at = self._serializer.loads(token, return_timestamp=True)
        except BadPayload:
            # The signature matched, so we made it: a payload we cannot read is our bug
            # (or another use of the same secret and salt), never a device's.
            raise InvalidToken("malformed") from None
        except BadSignature:
            raise InvalidToken("forged") from None
        if (
            not isinstance(payload, list)
            or len(payload) != 2
            or not all(isinstance(part, str) and part for part in payload)
        ):
            raise InvalidToken("malformed")
        age = (time.time() if now is None else now) - signed_at.timestamp()
        if age > self.ttl:
            raise InvalidToken("expired")
        return payload[0], payload[1]
