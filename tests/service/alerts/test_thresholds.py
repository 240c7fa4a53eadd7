"""Threshold arithmetic: exact integers, crossings only on the settle that makes them."""

from __future__ import annotations

from datetime import datetime, timezone

from service.alerts.thresholds import TOTAL_PERIOD_START, crossed_thresholds, reached, reached_thresholds
from service.budgets.store import BudgetCounter, CounterState

START = datetime(2026, 11, 1, tzinfo=timezone.utc)
END = datetime(2026, 12, 1, tzinfo=timezone.utc)


def state(spent: int, limit: int = 1_000, period: str = "monthly") -> CounterState:
    start, end = (None, None) if period == "total" else (START, END)
    return CounterState(BudgetCounter("b1", "t1", "main", limit, period, start, end), spent, 0)


def test_reached_is_exact_at_the_boundary() -> None:
    limit = 3 * 10**18 + 1  # past a double's precision: 50 % of it is not a whole number
    assert not reached(limit // 2, limit, 50)
    assert reached(limit // 2 + 1, limit, 50)
    assert reached(800, 1_000, 80) and not reached(799, 1_000, 80)
    assert reached(1_000, 1_000, 100) and reached(5_000, 1_000, 100)
    assert not reached(10**9, 0, 50)  # a zero limit has nothing to alert about


def test_a_settle_crosses_only_what_it_moves_past() -> None:
    thresholds = (100, 50, 80, 50)  # unsorted, with a duplicate
    assert [c.threshold for c in crossed_thresholds(state(400), state(850), thresholds)] == [50, 80]
    assert crossed_thresholds(state(500), state(700), thresholds) == []  # 50 was reached before
    assert [c.threshold for c in crossed_thresholds(state(999), state(1_000), thresholds)] == [100]
    crossing = crossed_thresholds(state(0), state(1_200), (100,))[0]
    assert crossing.key == ("b1", START, 100)
    assert (crossing.spent_nano, crossing.limit_nano, crossing.team_id) == (1_200, 1_000, "t1")


def test_total_budgets_use_one_fixed_period_start() -> None:
    reached_now = reached_thresholds(state(900, period="total"), (50, 80, 100))
    assert [(c.threshold, c.period_start) for c in reached_now] == [(50, TOTAL_PERIOD_START), (80, TOTAL_PERIOD_START)]
