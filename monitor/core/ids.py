"""Incident ids that a crash or a switch to another process makes again, the same. Pure.

Why
---
A page leaves before the batch that records its incident commits (pages first:
`monitor/driver.py`). A process killed in between, or a standby that takes the site
over from the store, raises the incident again when the broker redelivers the event
that was never acknowledged, or when the restored timer fires. With a random id the
nurse's page, its ack link and a gateway's ack named an incident that never existed
("ghost" incidents in `bench/crash.py`). So the id is made of what repeats, and the
incident raised again is the same incident:

    id = ULID(time part, blake2b(site | booth | previous | trigger | cause)[:10])

* ``previous``: the id of the booth's last incident, kept in the booth's stored state
  (`BoothView.last_incident`) and committed with the incident it names. It makes
  every id new, even when a cause repeats on purpose (two presses of a button that
  sends no event id look the same; a device may reuse event ids after a day), and a
  lost incident raised again follows the same previous one.
* ``cause``: what raised it, as it repeats: the device's event id, or the message's
  payload when it has none (a redelivery is byte for byte the same), or the
  deadline of a timer (stillness, long session, device silence), which the booth
  or device state restored from the store gives again to the microsecond.
* time part: the cause's own time when it has one that repeats (a timer's deadline,
  in ms); a message's only time is the service's receive time, which a redelivery
  does not repeat, so its incident takes the time part of the previous id (0 for a
  booth's first): an id's time is never after its ``raised_at``, and a booth's ids
  never go back in time. The ``raised_at`` field says when.

Ids keep the ULID form (26 Crockford base32 characters), so ids stored before stay
valid beside them. A collision needs two incidents of one booth after the same
previous one with the same 80 bits of hash: the first advances ``previous``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

_KEY = b"boothwatch incident id"
_MAX_MS = (1 << 48) - 1
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # 10 bits -> 2 characters
_SHIFTS = range(120, -1, -10)
_DECODE = str.maketrans(_CROCKFORD, "0123456789abcdefghijklmnopqrstuv")  # for int(_, 32)


@dataclass(frozen=True, slots=True)
class Cause:
    """What raised an incident, as it repeats after a crash: ``key`` says what, ``at``
    its own time (ms in the id), or None when it has none that repeats."""

    key: bytes
    at: float | None = None

    @classmethod
    def deadline(cls, at: float) -> Cause:
        """A timer's deadline: restored from the store, it is the same float again."""
        return cls(b"deadline:" + repr(at).encode(), at)

    @classmethod
    def message(cls, cause: str | bytes | None) -> Cause:
        """An MQTT message: its event id (str), its payload (bytes), or nothing known
        (an action through the API, a test stepping the core)."""
        if cause is None:
            return NO_CAUSE
        if isinstance(cause, str):
            return cls(b"event:" + cause.encode())
        return cls(b"message:" + cause)


NO_CAUSE = Cause(b"")


def incident_id(site: str, booth: str, previous: str | None, trigger: str,
                cause: Cause) -> str:
    """The id of the incident ``cause`` raises at ``booth`` after ``previous``."""
    digest = hashlib.blake2b(key=_KEY, digest_size=10)
    for part in (site.encode(), booth.encode(), (previous or "").encode(), trigger.encode()):
        digest.update(part)
        digest.update(b"\0")
    digest.update(cause.key)
    if cause.at is not None:
        ms = int(cause.at * 1000)
    else:
        ms = time_ms(previous)
    ms = min(max(ms, 0), _MAX_MS)
    value = (ms << 80) | int.from_bytes(digest.digest(), "big")
    # 26 characters of 5 bits are 130 bits: the 128 of the value, 2 zero bits in front
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


def time_ms(incident: str | None) -> int:
    """The time part of a ULID in ms (its first 10 characters); 0 for none, or for an id
    that is not a ULID."""
    if incident is None or len(incident) != 26:
        return 0
    head = incident[:10].upper()
    if head.strip(_CROCKFORD):
        return 0  # a character outside the alphabet
    ms = int(head.translate(_DECODE), 32)
    return ms if ms <= _MAX_MS else 0
