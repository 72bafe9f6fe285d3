"""Signed, single-use ack links (interface section 7): one token per page.

A token is an itsdangerous URL-safe timed signature (HMAC-SHA256, salt
``boothwatch-ack``) over ``[incident, responder, nonce]``. The random nonce
gives every page its own link, so a second page to the same responder about
the same incident is a fresh link even when the first one was used.
`AckTokens.check` says why a token is refused, so the HTTP layer can answer
403 and count the reason:

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

Single use: `AckLink.digest` names a link by what was signed, not by how its
text is spelled. Base64 lets a few characters differ and still decode to the
same bytes (the spare low bits of the last character), so a digest of the raw
text would let a replay through by changing one letter. `UsedLinks` remembers
the links that acted (the HTTP layer stores them too, so a restart forgets
none) until they could no longer be accepted anyway: ``ttl`` after their use.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from itsdangerous import BadPayload, BadSignature, URLSafeTimedSerializer, base64_encode

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


@dataclass(frozen=True, slots=True)
class AckLink:
    """A genuine, unexpired ack token: what it was made for, and its digest."""

    incident: str
    responder: str
    signed_at: float  # epoch seconds (whole seconds: what itsdangerous keeps)
    digest: str  # hex SHA-256 of what was signed: the same for every spelling of the token


class AckTokens:
    """Makes and checks ack tokens bound to one incident, one responder and one page."""

    def __init__(self, secret: str | bytes, ttl: float) -> None:
        if not secret:
            raise ValueError("the ack token secret must not be empty")
        if not ttl > 0:
            raise ValueError(f"ttl must be positive, got {ttl!r}")
        self.ttl = float(ttl)
        self._serializer = URLSafeTimedSerializer(
            secret, salt=SALT, signer_kwargs={"digest_method": hashlib.sha256}
        )
        # A token is made on the way to every page (its ack link): the signer once, not per
        # token (`dumps` builds one each time), and no zlib attempt, which never shortens a
        # payload this short. `check` reads both forms, so the tokens are the serializer's.
        self._signer = self._serializer.make_signer()

    def make(self, incident: str, responder: str) -> str:
        """Return a URL-safe token for `responder` to acknowledge `incident`."""
        for value, what in ((incident, "incident"), (responder, "responder")):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{what} must be a non-empty string, got {value!r}")
        payload = json.dumps([incident, responder, secrets.token_urlsafe(12)],
                             separators=(",", ":"))
        return self._signer.sign(base64_encode(payload)).decode("ascii")

    def check(self, token: str, now: float | None = None) -> AckLink:
        """Return the link `token` is, or raise `InvalidToken` saying why not.

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
        # two parts: a link made before links had a nonce, still good until it expires
        if (
            not isinstance(payload, list)
            or len(payload) not in (2, 3)
            or not all(isinstance(part, str) and part for part in payload)
        ):
            raise InvalidToken("malformed")
        at = signed_at.timestamp()
        if (time.time() if now is None else now) - at > self.ttl:
            raise InvalidToken("expired")
        signed = json.dumps([*payload, int(at)], separators=(",", ":"))
        return AckLink(payload[0], payload[1], at, hashlib.sha256(signed.encode()).hexdigest())


@dataclass(frozen=True, slots=True)
class Use:
    """An ack link that acted: for whom, when (epoch seconds) and how (``link``, ``ntfy``)."""

    incident: str
    responder: str
    at: float
    via: str
    signed_at: float  # with `at`, says when the link could no longer be accepted anyway


class UsedLinks:
    """The ack links that already acted, by digest; each forgotten `ttl` after its use.

    `claim` is check-and-set in one step with no await in between, so two requests
    racing with the same link cannot both act.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._used: dict[str, Use] = {}

    def __len__(self) -> int:
        return len(self._used)

    def get(self, digest: str) -> Use | None:
        return self._used.get(digest)

    def claim(self, link: AckLink, via: str, now: float) -> Use | None:
        """Mark `link` used and return the use, or None when it was used already."""
        if link.digest in self._used:
            return None
        self.forget_before(now - self.ttl)
        use = Use(link.incident, link.responder, now, via, link.signed_at)
        self._used[link.digest] = use
        return use

    def load(self, uses: Iterable[tuple[str, Use]]) -> None:
        """The uses recorded before a restart."""
        self._used.update(uses)

    def forget_before(self, cutoff: float) -> None:
        """Drop the uses of links signed and used before `cutoff` (now - ttl): expired.

        The later of the two counts, since a link signed "in the future" (the clock was
        stepped back) is accepted until ttl after its signing time.
        """
        for digest in [d for d, use in self._used.items() if max(use.at, use.signed_at) < cutoff]:
            del self._used[digest]
