"""The station's login: who may look at the board and the API, and act from them.

A station (the screen at the staff desk, a tablet) logs in once with the station password
(`BOOTHWATCH_BOARD_PASSWORD`, from the environment, never the config file) and gets a
session cookie. The cookie is signed, not stored: a board keeps its session across a
restart of the service, which is exactly when it must reconnect by itself. It is signed
with a key made of the service's secret and the password, so changing the password ends
every session at once.

Every POST made with the cookie must carry the session's CSRF token in `X-CSRF-Token`:
a page on another site can make a browser send the cookie (SameSite=Strict already
stops that in current browsers) but cannot read the token out of the board's page.

Wrong passwords are limited per client address (`MAX_FAILURES` in `FAILURE_WINDOW`,
then 429 until the oldest failure ages out), and over all addresses together ten times
that for addresses that failed themselves, so a guesser cannot try more than a few hundred
passwords an hour, and a station that typed its password right is never locked out by them.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from aiohttp import web
from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "boothwatch-station"
CSRF_HEADER = "X-CSRF-Token"
PASSWORD_ENV = "BOOTHWATCH_BOARD_PASSWORD"
SESSION_TTL = 30 * 86400.0  # a station board stays up for weeks; a page load renews it
RENEW_AFTER = 86400.0  # a board's page loaded a day or more after its login gets a new cookie
MAX_FAILURES = 5
FAILURE_WINDOW = 60.0
ALL_FAILURES = 10 * MAX_FAILURES  # across every address: a proxy makes them all one
MAX_ADDRESSES = 1000
SALT = "boothwatch-station"


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in station: its cookie, and the CSRF token its POSTs carry."""

    cookie: str
    csrf: str
    issued_at: float


#: the station session of a request that came with one (set by `monitor.http._guard`; the
#: board's page reads its CSRF token)
STATION = web.RequestKey("station", Session)


class Stations:
    """Checks the station password and the sessions it opened."""

    def __init__(self, secret: str, password: str | None) -> None:
        self.password = password or None
        key = hashlib.sha256(f"{secret}\0{password or ''}".encode()).digest()
        self._key = key
        self._serializer = URLSafeTimedSerializer(
            key, salt=SALT, signer_kwargs={"digest_method": hashlib.sha256})
        self._failures: dict[str, collections.deque[float]] = {}
        self._all_failures: collections.deque[float] = collections.deque()

    def login(self, password: str, now: float) -> Session | None:
        """A new session if `password` is the station password, else None."""
        if self.password is None:
            return None
        given = hashlib.sha256(password.encode("utf-8", "surrogateescape")).digest()
        wanted = hashlib.sha256(self.password.encode()).digest()
        if not hmac.compare_digest(given, wanted):
            return None
        cookie = self._serializer.dumps(secrets.token_urlsafe(16))
        assert isinstance(cookie, str)  # URLSafeTimedSerializer.dumps returns str
        return Session(cookie, self._csrf(cookie), now)

    def session(self, cookie: str | None, now: float) -> Session | None:
        """The session `cookie` is, or None when it is missing, forged, or too old."""
        if not cookie or self.password is None:
            return None
        try:
            _nonce, signed_at = self._serializer.loads(
                cookie, max_age=int(SESSION_TTL), return_timestamp=True)
        except BadSignature:  # SignatureExpired is one too
            return None
        return Session(cookie, self._csrf(cookie), signed_at.timestamp())

    def renewed(self, session: Session, now: float) -> Session | None:
        """A new session for one issued `RENEW_AFTER` ago or more (None: keep it), so a
        board reloaded now and then never meets the end of its session."""
        if now - session.issued_at < RENEW_AFTER or self.password is None:
            return None
        cookie = self._serializer.dumps(secrets.token_urlsafe(16))
        assert isinstance(cookie, str)
        return Session(cookie, self._csrf(cookie), now)

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(
            given.encode("utf-8", "surrogateescape"), session.csrf.encode())

    def _csrf(self, cookie: str) -> str:
        return hmac.new(self._key, f"csrf\0{cookie}".encode(), hashlib.sha256).hexdigest()

    # --- wrong passwords ------------------------------------------------------------------

    def retry_after(self, address: str, now: float) -> float:
        """Seconds until `address` may try again (0: now)."""
        waits = [0.0]
        mine = self._failures.get(address)
        # the limit over all addresses holds back only those that guessed wrong themselves:
        # an outsider's guesses must not lock out a station that has not failed
        for failures, most in ((mine, MAX_FAILURES),
                               (self._all_failures if mine else None, ALL_FAILURES)):
            if failures is None:
                continue
            while failures and failures[0] <= now - FAILURE_WINDOW:
                failures.popleft()
            if len(failures) >= most:
                waits.append(failures[0] + FAILURE_WINDOW - now)
        if address in self._failures and not self._failures[address]:
            del self._failures[address]  # the table holds only recent guessers
        return max(waits)

    def failed(self, address: str, now: float) -> None:
        if len(self._failures) > MAX_ADDRESSES:  # many guessers: forget the stale ones
            for stale in [a for a, times in self._failures.items()
                          if times[-1] <= now - FAILURE_WINDOW]:
                del self._failures[stale]
        self._failures.setdefault(address, collections.deque()).append(now)
        self._all_failures.append(now)


def set_cookie(request: web.Request, response: web.StreamResponse, session: Session,
               public_url: str) -> None:
    """The session's cookie on `response`: HttpOnly, SameSite=Strict, Secure behind https."""
    secure = request.secure or public_url.startswith("https:")
    response.set_cookie(COOKIE, session.cookie, max_age=int(SESSION_TTL), path="/",
                        httponly=True, samesite="Strict", secure=secure)
