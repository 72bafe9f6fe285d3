"""The runtime's memory of event ids: the newest DEDUPE_MEMORY ids, in a memory that stays put.

The soak (bench/soak.py) saw the service grow ~100 bytes per event past the first
200,000 events: the OrderedDict that held the ids doubled its table once full.
These tests count bytes with tracemalloc, never time.
"""

from __future__ import annotations

import tracemalloc

from monitor.ingest import DEDUPE_MEMORY, RecentKeys
from monitor.ingest import event_key as _event_key


def test_remembers_the_newest_keys_and_forgets_the_oldest_first() -> None:
    """Past capacity the oldest key goes; a key added again keeps its place in line."""
    keys = RecentKeys(3)
    for key in (b"a", b"b", b"c"):
        keys.add(key)
    keys.add(b"a")  # already there: no second place, not moved to the back
    assert len(keys) == 3
    keys.add(b"d")
    assert b"a" not in keys
    assert [k in keys for k in (b"b", b"c", b"d")] == [True, True, True]
    keys.add(b"e")
    assert b"b" not in keys and b"e" in keys and len(keys) == 3


def test_full_memory_of_event_ids_stops_growing() -> None:
    """Twice DEDUPE_MEMORY more ids after it is full cost nothing; ~100 bytes per id in all."""
    seen = RecentKeys(DEDUPE_MEMORY)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        i = 0
        for i in range(DEDUPE_MEMORY):
            seen.add(_event_key("b1", f"{i:032x}"))
        full = tracemalloc.get_traced_memory()[0]
        for i in range(DEDUPE_MEMORY, 3 * DEDUPE_MEMORY):
            key = _event_key("b1", f"{i:032x}")
            oldest = _event_key("b1", f"{i - DEDUPE_MEMORY:032x}")
            assert key not in seen and oldest in seen
            seen.add(key)
            assert oldest not in seen  # each new id makes the oldest one go
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(seen) == DEDUPE_MEMORY
    assert _event_key("b1", f"{i:032x}") in seen
    assert _event_key("b1", f"{DEDUPE_MEMORY:032x}") not in seen  # forgotten: the oldest
    per_id = (full - before) / DEDUPE_MEMORY
    assert per_id < 120, f"{per_id:.0f} bytes per remembered id"
    assert after - full < 256 * 1024, f"grew {(after - full) / 2**20:.1f} MiB once full"


def test_extend_keeps_what_adding_one_at_a_time_keeps() -> None:
    """The ids loaded at start go in at once: the same keys, in the same order of
    forgetting, as adding each, also past capacity and with keys repeated."""
    sequence = [b"a", b"b", b"c", b"a", b"d", b"b", b"e", b"a", b"f"]
    one_by_one, at_once = RecentKeys(3), RecentKeys(3)
    for key in sequence:
        one_by_one.add(key)
    at_once.extend(iter(sequence))
    assert len(at_once) == len(one_by_one) == 3
    assert [k in at_once for k in sequence] == [k in one_by_one for k in sequence]
    for key in (b"g", b"h"):  # the oldest goes first in both
        one_by_one.add(key)
        at_once.add(key)
        assert [k in at_once for k in sequence] == [k in one_by_one for k in sequence]
