"""Which of a team's budgets apply to one request, as counters of the current period."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from service.budgets.periods import PERIODS, period_bounds
from service.budgets.store import BudgetCounter
from service.db.models import Budget

# Lua compares amounts as doubles, exact only below 2**53 nano-USD (about $9.0M).
MAX_LIMIT_NANO = 2**53 - 1
KINDS: tuple[str, ...] = ("inference", "training")


@dataclass(frozen=True, slots=True)
class BudgetRule:
    """A budget as policy sees it: a plain, hashable mirror of the Budget row."""

    id: str
    team_id: str
    limit_nano: int
    period: str
    name: str = ""
    key_id: str | None = None
    timezone: str = "UTC"
    models: tuple[str, ...] | None = None
    kind: str | None = None
    thresholds: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.period not in PERIODS:
            raise ValueError(f"unknown budget period {self.period!r}; expected one of {PERIODS}")
        if not 0 <= self.limit_nano <= MAX_LIMIT_NANO:
            raise ValueError(f"budget limit must be 0..{MAX_LIMIT_NANO} nano-USD")
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"unknown budget kind {self.kind!r}; expected one of {KINDS}")

    def applies_to(
        self, *, key_id: str | None, model: str, base_model: str | None, kind: str
    ) -> bool:
        """True when this budget covers a request of this key, model and kind."""
        if self.key_id is not None and self.key_id != key_id:
            return False
        if self.kind is not None and self.kind != kind:
            return False
        # An empty model list restricts nothing, like None.
        if self.models and model not in self.models and base_model not in self.models:
            return False
        return True

    def counter(self, at: datetime, default_tz: str = "UTC") -> BudgetCounter:
        """This budget's counter for the period containing `at`."""
        start, end = period_bounds(self.period, self.timezone or default_tz, at)
        return BudgetCounter(
            budget_id=self.id,
            team_id=self.team_id,
            name=self.name,
            limit_nano=self.limit_nano,
            period=self.period,
            period_start=start,
            period_end=end,
        )


def rule_from_budget(budget: Budget) -> BudgetRule:
    """Convert a Budget row into the frozen rule the request path uses."""
    return BudgetRule(
        id=budget.id,
        team_id=budget.team_id,
        limit_nano=int(budget.limit_nano),
        period=budget.period,
        name=budget.name or "",
        key_id=budget.key_id,
        timezone=budget.timezone or "UTC",
        models=tuple(budget.models) if budget.models is not None else None,
        kind=budget.kind,
        thresholds=tuple(budget.thresholds) if budget.thresholds is not None else None,
    )


def applicable_budgets(
    budgets: Iterable[BudgetRule | Budget],
    *,
    key_id: str | None,
    model: str,
    base_model: str | None,
    kind: str,
    at: datetime,
    default_tz: str = "UTC",
) -> tuple[BudgetCounter, ...]:
    """Counters (current period, input order) of every budget that covers this request."""
    counters = []
    for budget in budgets:
        rule = budget if isinstance(budget, BudgetRule) else rule_from_budget(budget)
        if rule.applies_to(key_id=key_id, model=model, base_model=base_model, kind=kind):
            counters.append(rule.counter(at, default_tz))
    return tuple(counters)
