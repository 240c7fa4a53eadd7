"""Which alert thresholds a budget's spend has reached or just crossed: integer arithmetic only."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from service.budgets.store import BudgetCounter, CounterState

# The alerts table needs a period start for every row; a "total" budget has one period, from here.
TOTAL_PERIOD_START = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class Crossing:
    """A budget's spend reached `threshold` % of its limit in the period starting at period_start."""

    budget_id: str
    team_id: str
    period_start: datetime
    threshold: int
    spent_nano: int
    limit_nano: int

    @property
    def key(self) -> tuple[str, datetime, int]:
        """The alerts table's unique key: one alert per budget, period and threshold."""
        return (self.budget_id, self.period_start, self.threshold)


def period_start_of(budget: BudgetCounter) -> datetime:
    return budget.period_start if budget.period_start is not None else TOTAL_PERIOD_START


def reached(spent_nano: int, limit_nano: int, threshold: int) -> bool:
    """spent >= threshold % of limit, exactly; a zero limit has no thresholds to reach."""
    return limit_nano > 0 and spent_nano * 100 >= threshold * limit_nano


def reached_thresholds(state: CounterState, thresholds: Iterable[int]) -> list[Crossing]:
    """Every threshold the counter's spend has reached (the periodic sweep's view)."""
    b = state.budget
    return [
        Crossing(b.budget_id, b.team_id, period_start_of(b), t, state.spent_nano, b.limit_nano)
        for t in sorted(set(thresholds))
        if reached(state.spent_nano, b.limit_nano, t)
    ]


def crossed_thresholds(before: CounterState, after: CounterState, thresholds: Iterable[int]) -> list[Crossing]:
    """The thresholds one settle moved the spend across (reached after, not before)."""
    b = after.budget
    return [
        Crossing(b.budget_id, b.team_id, period_start_of(b), t, after.spent_nano, b.limit_nano)
        for t in sorted(set(thresholds))
        if reached(after.spent_nano, b.limit_nano, t) and not reached(before.spent_nano, b.limit_nano, t)
    ]
