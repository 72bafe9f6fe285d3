"""The dispatcher admits attempts by priority: a call's page never waits behind a burst.

Fake in-process channels whose attempts the test ends by hand (no sleeping), so the
order in which attempts start is what the dispatcher decided, nothing else.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from alerts.delivery import Attempt, Delivery, DeliveryError, Dispatcher, Slots
from monitor.paging import _ranking


@dataclass
class Held:
    """A channel whose every attempt waits until the test ends it (`finish`)."""

    name: str = "held"
    type: str = "fake"
    reaches_a_person: bool = True
    started: list[str] = field(default_factory=list)  # page ids, in the order attempts began
    pending: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    fail_first: bool = False  # each page's first attempt fails
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, delivery: Delivery, address: str | None) -> str | None:
        first = delivery.page_id not in self.started
        self.started.append(delivery.page_id)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending[delivery.page_id] = fut
        self.changed.set()
        try:
            await fut
        finally:
            del self.pending[delivery.page_id]
        if first and self.fail_first:
            raise DeliveryError("HTTP 503")
        return None

    def finish(self, page_id: str) -> None:
        self.pending[page_id].set_result(None)

    async def until(self, count: int) -> None:
        """Until `count` attempts have started."""
        async with asyncio.timeout(10):
            while len(self.started) < count:
                self.changed.clear()
                await self.changed.wait()


@dataclass
class Record:
    attempts: list[tuple[str, Attempt]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def on_attempt(self, delivery: Delivery, attempt: Attempt) -> None:
        self.attempts.append((delivery.page_id, attempt))

    def on_failed(self, delivery: Delivery, reason: str) -> None:
        self.failed.append(delivery.page_id)


def page(page_id: str, priority: str = "high", urgent: bool = False,
         incident: str | None = None) -> Delivery:
    payload: dict[str, Any] = {"priority": priority, "urgent": urgent}
    return Delivery(page_id, incident or f"inc-{page_id}", "ana", 1, ("held",), payload,
                    priority=priority, urgent=urgent)


def dispatcher(channel: Held, rec: Record, limit: int, hold: float | None = None,
               delays: tuple[float, ...] = (0.0,)) -> Dispatcher:
    return Dispatcher({channel.name: channel}, rec.on_attempt, rec.on_failed,
                      retry_delays=delays, jitter=0.0, max_in_flight=limit, slot_hold=hold)


async def turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_higher_ranks_go_first_then_first_come_first_served() -> None:
    """With one slot, attempts of a lower rank never hold up a higher one (it starts at
    once), and freed places go urgent, high, medium, low, in submission order within one."""
    channel, rec = Held(), Record()
    d = dispatcher(channel, rec, limit=1)
    d.submit(page("low-1", "low"))
    await channel.until(1)
    d.submit(page("high-1", "high"))  # the low attempt does not count against it
    await channel.until(2)
    for pid, priority in (("low-2", "low"), ("medium-1", "medium"), ("low-3", "low"),
                          ("high-2", "high"), ("medium-2", "medium")):
        d.submit(page(pid, priority))
    await turns()
    assert channel.started == ["low-1", "high-1"]  # the high attempt fills the slot: wait
    d.submit(page("urgent-1", "low", urgent=True))
    await channel.until(3)
    assert channel.started[2] == "urgent-1"
    assert d.slots.waiting == 5

    expected = ["high-2", "medium-1", "medium-2", "low-2", "low-3"]
    for pid in ["urgent-1", "low-1", "high-1", *expected[:-1]]:
        channel.finish(pid)
        await turns()
    await channel.until(8)
    assert channel.started[3:] == expected
    channel.finish(expected[-1])
    await d.drain(10)
    assert d.pending == 0 and d.slots.busy == 0 and d.slots.waiting == 0
    assert sorted(pid for pid, a in rec.attempts if a.ok) == sorted(channel.started)
    assert rec.failed == []


async def test_a_burst_of_low_pages_is_all_delivered_and_retried() -> None:
    """500 low pages through 4 slots, each failing once: every one is retried and
    delivered, each attempt recorded, none failed; the high page submitted last starts
    at once. No more than 4 low attempts are ever under way."""
    channel, rec = Held(fail_first=True), Record()
    d = dispatcher(channel, rec, limit=4)
    lows = [f"low-{n}" for n in range(500)]
    for pid in lows:
        d.submit(page(pid, "low"))
    await channel.until(4)
    d.submit(page("call", "high"))
    await channel.until(5)
    assert channel.started[4] == "call"
    channel.finish("call")  # its first attempt fails; the retry takes the high slot again
    await channel.until(6)
    assert channel.started[5] == "call"
    channel.finish("call")
    while d.pending:
        under_way = [pid for pid, fut in channel.pending.items() if not fut.done()]
        assert len(under_way) <= 4
        for pid in under_way:
            channel.finish(pid)
        await turns()
    assert sorted(set(channel.started)) == sorted([*lows, "call"])
    assert len(channel.started) == 2 * 501  # one failed and one delivered attempt each
    assert sorted(pid for pid, a in rec.attempts if a.ok) == sorted([*lows, "call"])
    assert len(rec.attempts) == 2 * 501
    assert rec.failed == []
    assert d.slots.busy == 0


async def test_cancel_while_waiting_for_a_slot_stops_the_page_only() -> None:
    """A page of an incident acknowledged while it waits for a slot is never attempted
    (no on_failed); the pages behind it still go, and the slots add up after."""
    channel, rec = Held(), Record()
    d = dispatcher(channel, rec, limit=1)
    d.submit(page("a", "low"))
    await channel.until(1)
    d.submit(page("b", "low", incident="acked"))
    d.submit(page("c", "low"))
    await turns()
    d.cancel("acked")
    channel.finish("a")
    await channel.until(2)
    assert channel.started == ["a", "c"]
    channel.finish("c")
    await d.drain(10)
    assert [pid for pid, _a in rec.attempts] == ["a", "c"]
    assert rec.failed == [] and d.slots.busy == 0 and d.slots.waiting == 0


async def test_close_ends_pages_waiting_for_a_slot() -> None:
    channel, rec = Held(), Record()
    d = dispatcher(channel, rec, limit=1)
    for pid in ("a", "b", "c"):
        d.submit(page(pid, "low"))
    await channel.until(1)
    await d.close()
    assert d.pending == 0 and d.slots.busy == 0 and channel.started == ["a"]


async def test_an_attempt_hanging_past_the_hold_stops_counting() -> None:
    """A hanging service holds its slot for `slot_hold` at most: the next page starts
    while the first is still waiting."""
    channel, rec = Held(), Record()
    d = dispatcher(channel, rec, limit=1, hold=0.05)
    d.submit(page("hangs", "low"))
    d.submit(page("next", "low"))
    await channel.until(2)
    assert set(channel.pending) == {"hangs", "next"}
    channel.finish("hangs")
    channel.finish("next")
    await d.drain(10)
    assert d.slots.busy == 0
    assert sorted(pid for pid, a in rec.attempts if a.ok) == ["hangs", "next"]


async def test_slots_release_is_idempotent_and_a_granted_cancel_gives_back() -> None:
    slots = Slots(1, None)
    first = await slots.acquire(0)
    waiter = asyncio.ensure_future(slots.acquire(0))
    await turns()
    first.release()
    first.release()  # twice (the attempt ended after its hold ran out): counted once
    waiter.cancel()  # granted on release, cancelled before it ran: the slot comes back
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert slots.busy == 0
    again = await slots.acquire(0)
    assert slots.busy == 1
    again.release()


async def test_medium_and_low_attempts_share_the_lower_limit() -> None:
    """With `lower` 2 of 4: at most two medium or low attempts under way, none while two
    of any rank are, and high ones still get all four at once."""
    slots = Slots(4, None, lower=2)
    lower = [await slots.acquire(0), await slots.acquire(1)]
    low = asyncio.ensure_future(slots.acquire(0))
    highs = [await slots.acquire(2) for _ in range(4)]  # the lower ones hold up none
    await turns()
    assert not low.done() and slots.busy == 6 and slots.waiting == 1
    for slot in lower:
        slot.release()
    await turns()
    assert not low.done()  # four high attempts under way: no room below high
    for slot in highs[:3]:
        slot.release()
    await turns()
    assert low.done() and slots.busy == 2
    (await low).release()
    highs[3].release()
    assert slots.busy == 0 and slots.waiting == 0


def test_delivery_priority_and_rank() -> None:
    assert [page("x", p).rank for p in ("low", "medium", "high")] == [0, 1, 2]
    assert page("x", "low", urgent=True).rank == 3
    with pytest.raises(ValueError, match="priority"):
        page("x", "critical")
    with pytest.raises(ValueError, match="limit"):
        Slots(0, None)
    with pytest.raises(ValueError, match="lower"):
        Slots(4, None, lower=5)


def test_paging_ranks_a_delivery_by_its_payload() -> None:
    assert _ranking({"priority": "low"}) == {"priority": "low", "urgent": False}
    assert _ranking({"priority": "high", "urgent": True}) == {"priority": "high",
                                                              "urgent": True}
    # a self-test page (no priority) and a row from another version rank high
    assert _ranking({})["priority"] == "high"
    assert _ranking({"priority": "critical"})["priority"] == "high"
