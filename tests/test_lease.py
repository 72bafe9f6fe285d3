"""`Standing`: when an owner may page, from what its lease renewals answered. Pure: the
monotonic time is stepped by hand (the real lease, on PostgreSQL and in real processes, is
tests/test_failover.py)."""

from __future__ import annotations

from monitor.lease import MARGIN, Share, Standing

TTL = 3.0


def test_a_renewal_permits_until_its_own_count_runs_out_before_the_rows() -> None:
    standing = Standing(TTL)
    assert not standing.permit(0.0)  # never held
    standing.renewed(sent=10.0, epoch=4)
    assert standing.epoch == 4
    assert standing.permit(10.0)
    # counted from when the renewal was sent, less the margin: before the row's expiry,
    # which the database counts from when it ran the renewal
    assert standing.permit(10.0 + TTL * (1 - MARGIN) - 0.001)
    assert not standing.permit(10.0 + TTL * (1 - MARGIN))
    standing.renewed(sent=11.0, epoch=4)
    assert standing.permit(12.5)


def test_an_unreachable_store_opens_the_gate_only_when_asked_after_the_count_ran_out() -> None:
    """A frozen owner wakes with its count run out: only a renewal sent *after* that, which
    cannot reach the database at all, lets it page from memory again."""
    standing = Standing(TTL)
    standing.renewed(sent=0.0, epoch=1)
    end = TTL * (1 - MARGIN)
    standing.unreachable(sent=end - 0.5)  # sent while the lease was good, answered late
    assert not standing.permit(end + 1)
    standing.unreachable(sent=end + 1)
    assert standing.permit(end + 1) and standing.permit(end + 100)
    standing.renewed(sent=end + 200, epoch=1)  # the database is back: the count again
    assert standing.permit(end + 200)
    assert not standing.permit(end + 200 + TTL)


def test_a_refusal_ends_it_for_good() -> None:
    standing = Standing(TTL)
    standing.renewed(sent=0.0, epoch=2)
    standing.refused()
    assert standing.lost and not standing.permit(0.1)
    standing.unreachable(sent=100.0)
    assert not standing.permit(100.0)


def test_a_fair_share_of_sites() -> None:
    """12 sites among 3 processes: 4 each; a process at its share takes an expired lease
    only after half a ttl; one above it gives back the site it took last."""
    share = Share(12)
    share.members = {"s01": 3, "s02": 2}
    assert share.fair() == 4
    share.owned = {f"s{i:02}": float(i) for i in range(1, 4)}
    assert share.grace(TTL) == 0.0  # below its share: at once
    share.owned["s04"] = 4.0
    assert share.grace(TTL) == TTL / 2
    assert not share.surplus("s04")
    share.owned["s05"] = 5.0
    assert share.surplus("s05") and not share.surplus("s01")
    share.members = {"s01": 2}  # a process died: 6 each
    assert share.fair() == 6 and not share.surplus("s05")
