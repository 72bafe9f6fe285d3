"""Signed ack links: round trip, binding to incident and responder, expiry, garbage, and
the digest that makes them single use."""

from __future__ import annotations

import hashlib
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from itsdangerous import URLSafeTimedSerializer

from alerts.tokens import AckLink, AckTokens, InvalidToken, UsedLinks
from tests.harness.tokens import respell

SECRET = "correct horse battery staple"
TTL = 3600.0


def reason_of(tokens: AckTokens, token: str, now: float | None = None) -> str:
    with pytest.raises(InvalidToken) as info:
        tokens.check(token, now=now)
    return info.value.reason


def test_round_trip() -> None:
    """A fresh token names the incident and responder it was made for."""
    tokens = AckTokens(SECRET, TTL)
    token = tokens.make("01JDINCIDENT", "ana")
    link = tokens.check(token)
    assert (link.incident, link.responder) == ("01JDINCIDENT", "ana")


def test_token_is_url_safe() -> None:
    """Tokens go into a URL path unquoted."""
    token = AckTokens(SECRET, TTL).make("01JD/../x?", "zoë")
    assert all(c.isascii() and (c.isalnum() or c in "-_.") for c in token)


def test_token_for_one_incident_cannot_ack_another() -> None:
    """Swapping the payload of a token for A into one for B breaks the signature."""
    tokens = AckTokens(SECRET, TTL)
    token_a = tokens.make("A", "ana")
    token_b = tokens.make("B", "ana")
    payload_b = token_b.split(".", 1)[0]
    altered = payload_b + "." + token_a.split(".", 1)[1]
    assert reason_of(tokens, altered) == "forged"


def test_token_for_one_responder_cannot_ack_as_another() -> None:
    """The responder is signed too."""
    tokens = AckTokens(SECRET, TTL)
    token_ana = tokens.make("A", "ana")
    token_rui = tokens.make("A", "rui")
    altered = token_rui.split(".", 1)[0] + "." + token_ana.split(".", 1)[1]
    assert reason_of(tokens, altered) == "forged"


def test_wrong_secret_is_forged() -> None:
    """A token made with another secret is refused as forged."""
    token = AckTokens("another secret", TTL).make("A", "ana")
    assert reason_of(AckTokens(SECRET, TTL), token) == "forged"


def test_expired_with_time_passed_in() -> None:
    """A token is good until ttl seconds after signing, then expired."""
    tokens = AckTokens(SECRET, TTL)
    made = time.time()
    token = tokens.make("A", "ana")
    # Signing time is stored in whole seconds, rounded down: allow one second.
    assert tokens.check(token, now=made + TTL - 1.5).responder == "ana"
    assert reason_of(tokens, token, now=made + TTL + 0.5) == "expired"


def test_expired_with_real_clock() -> None:
    """With a tiny ttl, the real clock expires the token within about a second."""
    tokens = AckTokens(SECRET, 0.05)
    token = tokens.make("A", "ana")
    deadline = time.monotonic() + 1.1
    while time.monotonic() < deadline:
        try:
            tokens.check(token)
        except InvalidToken as exc:
            assert exc.reason == "expired"
            return
        time.sleep(0.02)
    pytest.fail("token did not expire")


def test_clock_stepped_back_still_accepts() -> None:
    """A genuine token signed 'in the future' (clock stepped back) is still accepted."""
    tokens = AckTokens(SECRET, TTL)
    token = tokens.make("A", "ana")
    assert tokens.check(token, now=time.time() - 600).incident == "A"


@pytest.mark.parametrize("garbage", ["", ".", "..", "a.b", "abc", "a b.c.d", "é.b.c", "x" * 5000])
def test_obvious_garbage_is_malformed(garbage: str) -> None:
    """Things not shaped like a token are malformed."""
    assert reason_of(AckTokens(SECRET, TTL), garbage) == "malformed"


def test_well_shaped_nonsense_is_forged() -> None:
    """Something shaped like a token with a bad signature is forged."""
    assert reason_of(AckTokens(SECRET, TTL), "abc.def.ghi") == "forged"


@pytest.mark.parametrize(("secret", "ttl"), [("", TTL), (b"", TTL), (SECRET, 0), (SECRET, -1)])
def test_refuses_empty_secret_and_non_positive_ttl(secret: str | bytes, ttl: float) -> None:
    """An empty secret would make every token forgeable."""
    with pytest.raises(ValueError):
        AckTokens(secret, ttl)


@pytest.mark.parametrize(("incident", "responder"), [("", "ana"), ("A", "")])
def test_make_refuses_empty_ids(incident: str, responder: str) -> None:
    """A token must name an incident and a responder."""
    with pytest.raises(ValueError):
        AckTokens(SECRET, TTL).make(incident, responder)


_TOKENS = AckTokens(SECRET, TTL)
_GOOD = _TOKENS.make("01JDINCIDENT", "ana")


@given(st.text())
def test_random_text_is_refused_cleanly(text: str) -> None:
    """Any random text is malformed or forged, never another exception."""
    with pytest.raises(InvalidToken) as info:
        _TOKENS.check(text)
    assert info.value.reason in ("malformed", "forged")


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."))
def test_random_token_alphabet_text_is_refused_cleanly(text: str) -> None:
    """Random text in the token alphabet reaches itsdangerous and is still refused cleanly."""
    with pytest.raises(InvalidToken) as info:
        _TOKENS.check(text)
    assert info.value.reason in ("malformed", "forged")


_GOOD_LINK = _TOKENS.check(_GOOD)


@given(st.integers(min_value=0, max_value=len(_GOOD) - 1), st.characters())
def test_mutated_token_never_crashes(index: int, char: str) -> None:
    """Replacing one character of a genuine token yields the same link (same digest, so
    it counts as used too) or a clean refusal."""
    mutated = _GOOD[:index] + char + _GOOD[index + 1 :]
    try:
        assert _TOKENS.check(mutated) == _GOOD_LINK
    except InvalidToken as exc:
        assert exc.reason in ("malformed", "forged")


def test_a_respelled_token_is_the_same_link() -> None:
    """Another spelling of a genuine token verifies, and has the same digest: a replay
    cannot get past the single-use check by changing a letter."""
    tokens = AckTokens(SECRET, TTL)
    token = tokens.make("A", "ana")
    other = respell(token)
    assert other != token
    assert tokens.check(other).digest == tokens.check(token).digest


def test_every_page_gets_its_own_link() -> None:
    """Two tokens for the same incident and responder in the same second differ in digest,
    so using one leaves the other (a later page) usable."""
    tokens = AckTokens(SECRET, TTL)
    first, second = tokens.make("A", "ana"), tokens.make("A", "ana")
    assert first != second
    assert tokens.check(first).digest != tokens.check(second).digest


def test_a_link_made_before_nonces_is_still_accepted() -> None:
    """A two-part token (made by the previous version, still within its ttl) is accepted,
    so an upgrade does not break the links on the nurses' phones."""
    tokens = AckTokens(SECRET, TTL)
    old = tokens._serializer.dumps(["A", "ana"])
    assert isinstance(old, str)
    link = tokens.check(old)
    assert (link.incident, link.responder) == ("A", "ana")


def test_used_links_claim_once_and_forget_after_ttl() -> None:
    """A link claimed once cannot be claimed again; ttl after its use (and signing) it
    is forgotten, and can then be claimed again."""
    used = UsedLinks(ttl=100.0)
    link = AckLink("A", "ana", signed_at=1000.0, digest="d1")
    use = used.claim(link, "link", now=1010.0)
    assert use is not None and (use.responder, use.at, use.via) == ("ana", 1010.0, "link")
    assert used.claim(link, "ntfy", now=1020.0) is None
    assert used.get("d1") == use
    used.forget_before(1109.0 - 100.0)  # now - ttl: still within ttl of its use
    assert used.get("d1") == use
    used.forget_before(1111.0 - 100.0)
    assert used.get("d1") is None and len(used) == 0
    assert used.claim(link, "link", now=1200.0) is not None


def test_a_link_signed_in_the_future_is_kept_until_ttl_after_signing() -> None:
    """The clock was stepped back: the link stays acceptable ttl after its signing time,
    so its use is remembered that long."""
    used = UsedLinks(ttl=100.0)
    used.claim(AckLink("A", "ana", signed_at=2000.0, digest="d2"), "link", now=1000.0)
    used.forget_before(1500.0 - 100.0)
    assert used.get("d2") is not None
    used.forget_before(2101.0 - 100.0)
    assert used.get("d2") is None


def test_a_token_is_signed_without_a_new_signer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every page carries a token, so it is signed by the signer made once (the
    serializer's `dumps` made one per token, and tried zlib on it); it is the
    serializer's own format all the same, read back by `check` and by itsdangerous."""
    tokens = AckTokens(SECRET, TTL)
    made = 0
    original = URLSafeTimedSerializer.make_signer

    def make_signer(self: URLSafeTimedSerializer, salt: str | bytes | None = None) -> object:
        nonlocal made
        made += 1
        return original(self, salt)

    monkeypatch.setattr(URLSafeTimedSerializer, "make_signer", make_signer)
    token = tokens.make("01JDINCIDENT", "ana")
    assert made == 0
    assert tokens.check(token).incident == "01JDINCIDENT"
    serializer = URLSafeTimedSerializer(SECRET, salt="boothwatch-ack",
                                        signer_kwargs={"digest_method": hashlib.sha256})
    assert serializer.loads(token)[:2] == ["01JDINCIDENT", "ana"]
