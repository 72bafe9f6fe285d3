"""The timer task fires due deadlines a batch at a time (`SiteCore.on_timer` limit), so
1,000 incidents due at once never hold the event loop in one go; none is lost or reordered."""

from __future__ import annotations

from monitor.core.events import Command, Occupancy, SendPage
from tests.harness.core import T0, CoreDriver, make_config


def pages(commands: list[Command]) -> list[str]:
    """The booths paged about, in order."""
    return [c.booth for c in commands if isinstance(c, SendPage)]


def occupied(n: int) -> CoreDriver:
    """n booths that filled at the same instant: n long sessions due at T0 + 100."""
    clock = CoreDriver(make_config(booths=n, long_session=100))
    for b in range(1, n + 1):
        clock.send(Occupancy(f"b{b}", True))
    return clock


def test_a_limit_fires_the_same_deadlines_in_batches_in_order() -> None:
    everything = pages(occupied(5).core.on_timer(T0 + 100))
    assert len(everything) == 5
    batched = occupied(5)
    got = [pages(batched.core.on_timer(T0 + 100, limit=2)) for _ in range(4)]
    assert [len(batch) for batch in got] == [2, 2, 1, 0]
    assert [page for batch in got for page in batch] == everything
    after = batched.core.next_deadline()
    assert after is None or after > T0 + 100
