"""The BudgetStore contract, run on the memory store and on the real Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from service.budgets.store import Denial, OutboxPosition
from tests.service.budgets.builders import TEAM, charge, counter, reservation


async def poll(predicate: Any, timeout_s: float = 5.0, every_s: float = 0.05) -> Any:
    """Await predicate() until it returns something truthy, or fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s")
        await asyncio.sleep(every_s)


async def standing(store: Any, *budgets: Any) -> list[tuple[int, int]]:
    return [(s.spent_nano, s.reserved_nano) for s in await store.standing(list(budgets))]


async def test_reserve_then_settle_releases_the_rest(store: Any) -> None:
    budget = counter(limit_nano=1_000)
    res = reservation("r1", 300, budget)
    assert await store.reserve(res) is None
    assert await standing(store, budget) == [(0, 300)]

    result = await store.settle(res, charge(res, 120))

    assert result.settled
    assert [(s.spent_nano, s.reserved_nano) for s in result.before] == [(0, 300)]
    assert [(s.spent_nano, s.reserved_nano) for s in result.after] == [(120, 0)]
    assert result.after[0].remaining_nano == 880
    assert await standing(store, budget) == [(120, 0)]


async def test_a_reservation_that_does_not_fit_is_denied_and_holds_nothing(store: Any) -> None:
    budget = counter(limit_nano=1_000)
    assert await store.reserve(reservation("r1", 700, budget)) is None

    denial = await store.reserve(reservation("r2", 301, budget))

    assert isinstance(denial, Denial)
    assert denial.requested_nano == 301
    assert denial.state.budget == budget
    assert (denial.state.spent_nano, denial.state.reserved_nano) == (0, 700)
    assert denial.state.remaining_nano == 300
    assert await standing(store, budget) == [(0, 700)]
    assert await store.reserve(reservation("r3", 300, budget)) is None  # exactly fits


async def test_the_tightest_budget_decides_and_a_denial_holds_nothing_elsewhere(
    store: Any,
) -> None:
    team = counter("team-budget", limit_nano=10_000)
    key = counter("key-budget", limit_nano=500)
    model = counter("model-budget", limit_nano=2_000)
    assert await store.reserve(reservation("r1", 400, team, key, model)) is None

    denial = await store.reserve(reservation("r2", 200, team, key, model))

    assert denial is not None and denial.state.budget == key
    assert (denial.state.spent_nano, denial.state.reserved_nano) == (0, 400)
    assert await standing(store, team, key, model) == [(0, 400)] * 3
    # Without the tight key budget the same request fits the other two.
    assert await store.reserve(reservation("r3", 200, team, model)) is None
    assert await standing(store, team, key, model) == [(0, 600), (0, 400), (0, 600)]


async def test_the_first_budget_that_does_not_fit_is_named(store: Any) -> None:
    small, smaller = counter("small", limit_nano=100), counter("smaller", limit_nano=50)
    denial = await store.reserve(reservation("r1", 120, small, smaller))
    assert denial is not None and denial.state.budget == small


async def test_reserving_the_same_request_twice_holds_once(store: Any) -> None:
    budget = counter(limit_nano=1_000)
    res = reservation("r1", 400, budget)
    assert await store.reserve(res) is None
    assert await store.reserve(res) is None
    assert await standing(store, budget) == [(0, 400)]
    await store.settle(res, charge(res, 400))
    assert await standing(store, budget) == [(400, 0)]


async def test_reserving_a_settled_request_again_holds_nothing(store: Any) -> None:
    budget = counter(limit_nano=1_000)
    res = reservation("r1", 400, budget)
    await store.reserve(res)
    await store.settle(res, charge(res, 100))
    assert await store.reserve(res) is None
    assert await standing(store, budget) == [(100, 0)]


async def test_settle_is_idempotent(store: Any) -> None:
    budget = counter(limit_nano=1_000)
    res = reservation("r1", 300, budget)
    await store.reserve(res)
    first = await store.settle(res, charge(res, 250))
    second = await store.settle(res, charge(res, 250))

    assert first.settled and not second.settled
    assert [s.spent_nano for s in second.before] == [250] == [s.spent_nano for s in second.after]
    assert await standing(store, budget) == [(250, 0)]
    entries = await store.read_outbox([TEAM], 100)
    assert [e.event.request_id for e in entries] == ["r1"]


async def test_settle_above_the_reservation_charges_the_full_cost(store: Any) -> None:
    budget = counter(limit_nano=200)
    res = reservation("r1", 100, budget)
    await store.reserve(res)
    result = await store.settle(res, charge(res, 250))

    assert (result.after[0].spent_nano, result.after[0].reserved_nano) == (250, 0)
    assert result.after[0].remaining_nano == 0
    denial = await store.reserve(reservation("r2", 1, budget))
    assert denial is not None and denial.state.spent_nano == 250


async def test_a_reservation_without_budgets_still_settles_to_the_outbox(store: Any) -> None:
    res = reservation("r1", 5_000)
    assert await store.reserve(res) is None
    result = await store.settle(res, charge(res, 4_000))
    assert result.settled and result.before == () and result.after == ()
    assert [e.event.cost_nano for e in await store.read_outbox([TEAM], 10)] == [4_000]


async def test_settle_without_a_reservation_still_charges(store: Any) -> None:
    budget = counter(limit_nano=1_000)
    res = reservation("r1", 300, budget)
    result = await store.settle(res, charge(res, 70))
    assert result.settled
    assert await standing(store, budget) == [(70, 0)]


async def test_concurrent_reservations_never_overspend(store: Any) -> None:
    cost, fits = 1_000, 5
    budget = counter(limit_nano=cost * fits)
    reservations = [reservation(f"r{i}", cost, budget) for i in range(20 * fits)]

    outcomes = await asyncio.gather(*(store.reserve(r) for r in reservations))

    held = [r for r, outcome in zip(reservations, outcomes, strict=True) if outcome is None]
    assert len(held) == fits
    assert all(isinstance(o, Denial) for o in outcomes if o is not None)
    await asyncio.gather(*(store.settle(r, charge(r, cost)) for r in held))
    assert await standing(store, budget) == [(fits * cost, 0)]


async def test_the_reaper_releases_expired_reservations(store: Any) -> None:
    budget = counter(limit_nano=1_000)
    await store.reserve(reservation("short", 300, budget, ttl_s=1))
    await store.reserve(reservation("long", 200, budget, ttl_s=600))
    assert await store.reap_expired([TEAM]) == 0

    async def reaped() -> int:
        return await store.reap_expired([TEAM])

    assert await poll(reaped) == 1
    assert await standing(store, budget) == [(0, 200)]
    assert await store.reap_expired([TEAM, "another-team"]) == 0


async def test_a_late_settle_after_the_reaper_does_not_release_twice(store: Any) -> None:
    budget = counter(limit_nano=1_000)
    late = reservation("late", 300, budget, ttl_s=0)
    live = reservation("live", 200, budget)
    await store.reserve(late)
    await store.reserve(live)
    assert await store.reap_expired([TEAM]) == 1
    assert await standing(store, budget) == [(0, 200)]

    result = await store.settle(late, charge(late, 280))

    assert result.settled
    assert await standing(store, budget) == [(280, 200)]
    assert [e.event.request_id for e in await store.read_outbox([TEAM], 10)] == ["late"]


async def test_extend_keeps_a_reservation_from_the_reaper(store: Any) -> None:
    budget = counter(limit_nano=1_000)
    res = reservation("job", 500, budget, ttl_s=0)
    await store.reserve(res)
    assert await store.extend(res, 3_600)
    assert await store.reap_expired([TEAM]) == 0
    assert await standing(store, budget) == [(0, 500)]
    assert not await store.extend(reservation("unknown", 1, budget), 60)
    await store.settle(res, charge(res, 450))
    assert not await store.extend(res, 60)
    assert await standing(store, budget) == [(450, 0)]


async def test_set_spent_overwrites_the_counter(store: Any) -> None:
    budget = counter(limit_nano=1_000)
    await store.reserve(reservation("r1", 100, budget))
    await store.set_spent(budget, 850)
    assert await standing(store, budget) == [(850, 100)]
    assert await store.reserve(reservation("r2", 51, budget)) is not None
    assert await store.reserve(reservation("r3", 50, budget)) is None


async def test_a_snapshot_splits_charges_at_its_outbox_position(store: Any) -> None:
    budget, other = counter(limit_nano=10_000), counter("b2", limit_nano=10_000)
    first = reservation("r1", 100, budget, other)
    await store.reserve(first)
    settled_first = await store.settle(first, charge(first, 70))
    snap = await store.snapshot(TEAM, [budget, other])
    later = reservation("r2", 100, budget)
    await store.reserve(later)
    settled_later = await store.settle(later, charge(later, 30))

    assert snap.spent == (70, 70)
    assert settled_first.position is not None and settled_later.position is not None
    assert settled_first.position <= snap.through < settled_later.position
    # The outbox's ids are the positions settle reported.
    entries = await store.read_outbox([TEAM], 10)
    assert sorted(OutboxPosition.parse(e.entry_id) for e in entries) == [settled_first.position, settled_later.position]
    first_raw = next(e.raw for e in entries if OutboxPosition.parse(e.entry_id) == settled_first.position)
    assert await store.outbox_until(TEAM, snap.through, 10) == [(settled_first.position, first_raw)]
    assert await store.outbox_until(TEAM, settled_later.position, 1) is None  # more than the limit
    await store.ack_outbox([e for e in entries if OutboxPosition.parse(e.entry_id) == settled_first.position])
    assert await store.outbox_until(TEAM, snap.through, 10) == []  # only the later charge is left

    assert await store.adjust_spent(snap, [5, -70]) == 2
    assert await standing(store, budget, other) == [(105, 0), (0, 0)]
    assert await store.adjust_spent(snap, [5, 5]) == 0  # a snapshot adjusts once
    assert await standing(store, budget, other) == [(105, 0), (0, 0)]
    again = await store.settle(first, charge(first, 70))
    assert not again.settled and again.position == settled_first.position  # kept by the done marker


async def test_only_the_latest_snapshot_of_a_counter_may_adjust_it(store: Any) -> None:
    budget = counter(limit_nano=10_000)
    earlier = await store.snapshot(TEAM, [budget])
    latest = await store.snapshot(TEAM, [budget])
    # Two rebuilds computed the same correction: applying both would count it twice.
    assert await store.adjust_spent(earlier, [400]) == 0
    assert await store.adjust_spent(latest, [400]) == 1
    assert await standing(store, budget) == [(400, 0)]
    with pytest.raises(ValueError):
        await store.adjust_spent(latest, [1, 2])
    with pytest.raises(ValueError):
        await store.snapshot(TEAM, [counter(team_id="team-b")])


async def test_a_snapshot_of_an_empty_outbox_comes_after_everything_written_before_it(store: Any) -> None:
    """An outbox Redis lost in a restart leaves ledger rows with older ids: they must count."""
    before_ms = int(time.time() * 1000) - 1
    snap = await store.snapshot(TEAM, [counter()])
    assert snap.through >= OutboxPosition(before_ms - 1, OutboxPosition.MAX_SEQ)
    assert snap.spent == (0,)
    res = reservation("r1", 10, counter())
    await store.reserve(res)
    settled = await store.settle(res, charge(res, 10))
    assert settled.position is not None and settled.position > snap.through


async def test_standing_of_unknown_counters_is_zero(store: Any) -> None:
    assert await store.standing([]) == []
    other = counter("other", team_id="team-b")
    states = await store.standing([counter(), other])
    assert [(s.budget, s.spent_nano, s.reserved_nano) for s in states] == [
        (counter(), 0, 0),
        (other, 0, 0),
    ]


async def test_outbox_delivers_once_and_redelivers_what_was_not_acked(store: Any) -> None:
    budget = counter(limit_nano=10_000)
    sent = []
    for i in range(3):
        res = reservation(f"r{i}", 100, budget)
        await store.reserve(res)
        event = charge(res, 90 + i, prompt_tokens=i, key_id="key-1")
        sent.append(event)
        await store.settle(res, event)
    other = reservation("rb", 10, team_id="team-b")
    await store.settle(other, charge(other, 10))

    assert await store.outbox_backlog([TEAM, "team-b"]) == 4
    first = await store.read_outbox([TEAM, "team-b"], 100)

    assert await store.outbox_backlog([TEAM, "team-b"]) == 4  # read is not written: still owed
    assert [e.event for e in first if e.team_id == TEAM] == sent
    assert [e.event.request_id for e in first if e.team_id == "team-b"] == ["rb"]
    assert await store.read_outbox([TEAM, "team-b"], 100) == []  # delivered, not yet idle
    await store.ack_outbox([e for e in first if e.event.request_id in ("r0", "rb")])
    assert await store.outbox_backlog([TEAM, "team-b"]) == 2 and await store.outbox_backlog([TEAM]) == 2

    async def redelivered() -> list[Any]:
        return await store.read_outbox([TEAM, "team-b"], 100)

    again = await poll(redelivered)
    assert sorted(e.event.request_id for e in again) == ["r1", "r2"]
    await store.ack_outbox(again)
    assert await store.outbox_backlog([TEAM, "team-b"]) == 0
    await asyncio.sleep(0.3)  # past the claim idle time: nothing acked may come back
    assert await store.read_outbox([TEAM, "team-b"], 100) == []


async def test_outbox_read_is_bounded_per_team(store: Any) -> None:
    for i in range(5):
        res = reservation(f"r{i}", 0)
        await store.settle(res, charge(res, i))
    batch = await store.read_outbox([TEAM], 2)
    assert [e.event.request_id for e in batch] == ["r0", "r1"]
    rest = await store.read_outbox([TEAM], 10)
    assert [e.event.request_id for e in rest] == ["r2", "r3", "r4"]

    async def redelivered() -> list[Any]:
        return await store.read_outbox([TEAM], 2)

    # Abandoned entries come back oldest first, and the bound holds for them too.
    assert [e.event.request_id for e in await poll(redelivered)] == ["r0", "r1"]
    late = reservation("r5", 0)
    await store.settle(late, charge(late, 5))
    seen: list[str] = []

    async def the_rest() -> bool:
        seen.extend(e.event.request_id for e in await store.read_outbox([TEAM], 10))
        return len(seen) >= 4

    await poll(the_rest)
    assert sorted(seen) == ["r2", "r3", "r4", "r5"]


async def test_invalid_reservations_are_rejected(store: Any) -> None:
    with pytest.raises(ValueError, match="belongs to team"):
        await store.reserve(reservation("r1", 1, counter(team_id="team-b")))
    with pytest.raises(ValueError, match="negative"):
        await store.reserve(reservation("r2", -1, counter()))
    with pytest.raises(ValueError, match="twice"):
        await store.reserve(reservation("r3", 1, counter(), counter()))
    res = reservation("r4", 1, counter())
    with pytest.raises(ValueError, match="negative"):
        await store.settle(res, charge(res, -5))
    with pytest.raises(ValueError, match="does not belong"):
        await store.settle(res, charge(reservation("r5", 1), 5))
    assert await standing(store, counter()) == [(0, 0)]
