"""Small adapters: the log rate limit, timestamps, and the shipped example config."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from monitor.codec import iso
from monitor.config import load_config
from monitor.logs import RateLimit

ROOT = Path(__file__).resolve().parent.parent


def test_rate_limit_lets_one_through_per_minute_per_key() -> None:
    """The same topic and reason is logged once a minute; another key is independent."""
    limit = RateLimit(60.0)
    assert limit.allow("t/1", "not_json", now=0.0)
    assert not limit.allow("t/1", "not_json", now=59.9)
    assert limit.allow("t/1", "bad_field", now=1.0)
    assert limit.allow("t/2", "not_json", now=1.0)
    assert limit.allow("t/1", "not_json", now=60.0)


def test_iso_is_utc_with_milliseconds() -> None:
    """Times are ISO 8601 in UTC with milliseconds and a Z, as in a page's raised_at."""
    assert iso(1_795_464_903.12) == "2026-11-23T20:15:03.120Z"  # the page example
    assert iso(None) is None


@given(st.floats(min_value=-62_135_596_800.0, max_value=253_402_300_799.0))
@example(0.9999995)
@example(1.9999996)
@example(-0.0000004)
@example(-1.5)
@example(1_795_464_903.9995)
@example(1_795_464_903.0004999)
@example(math.nextafter(1_795_464_904.0, 0.0))
def test_iso_writes_what_isoformat_writes(at: float) -> None:
    """The kept text of each whole second changes nothing: the milliseconds are cut from
    datetime's rounding to the microsecond, also where that rounds up into the next second,
    on either side of 1970, from year 1 to 9999."""
    assert iso(at) == datetime.fromtimestamp(at, UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def test_shipped_example_config_is_valid() -> None:
    """deploy/boothwatch.toml loads, so a technician starts from a working file."""
    config = load_config(ROOT / "deploy" / "boothwatch.toml", env={})
    assert [b.id for b in config.booths] == ["b1", "b2"]
    assert config.escalation["high"].ack_timeout == 120
