"""Random sequences of reserve, settle, reap and outbox reads keep the budget invariants.

A plain model (sums of holds and of settled costs) predicts every answer of the store;
the memory store runs many sequences, the real Redis fewer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from typing import Any

import pytest
import redis.asyncio as redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from service.budgets.memory_store import MemoryBudgetStore
from service.budgets.redis_store import RedisBudgetStore
from service.budgets.store import BudgetCounter, Reservation
from tests.service.budgets.builders import TEAM, charge, counter, delete_namespace

SUBSETS = [(), (0,), (1,), (0, 1), (1, 0)]


class BudgetMachine(RuleBasedStateMachine):
    """Drives one store; subclasses say which."""

    redis_url: str | None = None

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.namespace = f"fbt{uuid.uuid4().hex[:10]}"
        if self.redis_url is None:
            self.store: Any = MemoryBudgetStore()
        else:
            self.store = RedisBudgetStore(redis.Redis.from_url(self.redis_url), self.namespace)
        self.budgets: list[BudgetCounter] = []
        self.spent: dict[str, int] = {}
        self.live: dict[str, Reservation] = {}  # holding money now
        self.open: dict[str, Reservation] = {}  # held at some point, not settled yet
        self.settled: dict[str, Reservation] = {}
        self.unread: set[str] = set()
        self.next_id = 0

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def reserved(self, budget: BudgetCounter) -> int:
        return sum(r.amount_nano for r in self.live.values() if budget in r.budgets)

    def held(self, budget: BudgetCounter) -> int:
        """Spent plus reserved, per the model."""
        return self.spent[budget.budget_id] + self.reserved(budget)

    @initialize(limits=st.tuples(st.integers(0, 2_000), st.integers(0, 2_000)))
    def make_budgets(self, limits: tuple[int, int]) -> None:
        self.budgets = [counter(f"b{i}", limit) for i, limit in enumerate(limits)]
        self.spent = {b.budget_id: 0 for b in self.budgets}

    @rule(amount=st.integers(0, 900), subset=st.sampled_from(SUBSETS), expired=st.booleans())
    def reserve(self, amount: int, subset: tuple[int, ...], expired: bool) -> None:
        request_id = f"r{self.next_id}"
        self.next_id += 1
        budgets = tuple(self.budgets[i] for i in subset)
        res = Reservation(request_id, TEAM, amount, budgets, 0 if expired else 3_600)
        misfit = next(
            (b for b in budgets if self.held(b) + amount > b.limit_nano),
            None,
        )

        outcome = self.run(self.store.reserve(res))

        if misfit is None:
            assert outcome is None
            self.live[request_id] = self.open[request_id] = res
            for state in self.run(self.store.standing(budgets)):
                assert state.spent_nano + state.reserved_nano <= state.budget.limit_nano
        else:
            assert outcome is not None and outcome.state.budget == misfit
            assert outcome.state.spent_nano == self.spent[misfit.budget_id]
            assert outcome.state.reserved_nano == self.reserved(misfit)

    @precondition(lambda self: bool(self.open))
    @rule(data=st.data(), cost=st.integers(0, 1_200))
    def settle(self, data: st.DataObject, cost: int) -> None:
        request_id = data.draw(st.sampled_from(sorted(self.open)))
        res = self.open.pop(request_id)
        before = [(self.spent[b.budget_id], self.reserved(b)) for b in res.budgets]

        result = self.run(self.store.settle(res, charge(res, cost)))

        self.live.pop(request_id, None)
        for budget in res.budgets:
            self.spent[budget.budget_id] += cost
        self.settled[request_id] = res
        self.unread.add(request_id)
        after = [(self.spent[b.budget_id], self.reserved(b)) for b in res.budgets]
        assert result.settled
        assert [(s.spent_nano, s.reserved_nano) for s in result.before] == before
        assert [(s.spent_nano, s.reserved_nano) for s in result.after] == after

    @precondition(lambda self: bool(self.settled))
    @rule(data=st.data())
    def settle_again(self, data: st.DataObject) -> None:
        res = self.settled[data.draw(st.sampled_from(sorted(self.settled)))]
        result = self.run(self.store.settle(res, charge(res, 999)))
        assert not result.settled
        assert result.before == result.after

    @rule()
    def reap(self) -> None:
        expired = [rid for rid, res in self.live.items() if res.ttl_s == 0]
        assert self.run(self.store.reap_expired([TEAM])) == len(expired)
        for request_id in expired:
            del self.live[request_id]

    @rule()
    def drain_outbox(self) -> None:
        entries = self.run(self.store.read_outbox([TEAM], 10_000))
        assert sorted(e.event.request_id for e in entries) == sorted(self.unread)
        self.run(self.store.ack_outbox(entries))
        self.unread.clear()

    @invariant()
    def counters_match_the_model(self) -> None:
        if not self.budgets:
            return
        for state in self.run(self.store.standing(self.budgets)):
            settled_costs = self.spent[state.budget.budget_id]
            assert (state.spent_nano, state.reserved_nano) == (
                settled_costs,
                self.reserved(state.budget),
            )
            assert state.reserved_nano >= 0

    def teardown(self) -> None:
        try:
            for res in list(self.open.values()):
                self.run(self.store.settle(res, charge(res, 1)))
            if self.budgets and not self.open:
                states = self.run(self.store.standing(self.budgets))
                assert all(s.reserved_nano == 0 for s in states)
        finally:
            if isinstance(self.store, RedisBudgetStore):
                self.run(delete_namespace(self.store.client, self.namespace))
                self.run(self.store.client.aclose())
            self.loop.close()


def test_memory_store_keeps_the_invariants() -> None:
    run_state_machine_as_test(
        BudgetMachine,
        settings=settings(
            max_examples=150, stateful_step_count=40, deadline=None, database=None
        ),
    )


@pytest.mark.redis
def test_redis_store_keeps_the_invariants(redis_url: str) -> None:
    machine = type("RedisBudgetMachine", (BudgetMachine,), {"redis_url": redis_url})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=20,
            stateful_step_count=30,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
