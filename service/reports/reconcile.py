"""Reconciliation: each budget's counter in the store against the ledger's sum for the same rule and period."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from pricing.money import format_usd
from service.budgets.policy import rule_from_budget
from service.budgets.store import BudgetCounter, BudgetStore
from service.db.models import Budget
from service.ledger.queries import spent_by_budget


@dataclass(frozen=True, slots=True)
class ReconLine:
    budget: BudgetCounter
    counter_nano: int  # spent, as the budget store counts it
    reserved_nano: int
    ledger_nano: int  # spent, as the ledger sums it

    @property
    def difference_nano(self) -> int:
        """Counter minus ledger: positive when the store counted more than the ledger holds."""
        return self.counter_nano - self.ledger_nano

    @property
    def matches(self) -> bool:
        return self.difference_nano == 0


@dataclass(frozen=True, slots=True)
class Reconciliation:
    at: datetime
    drained: int  # outbox charges written to the ledger just before comparing
    lines: tuple[ReconLine, ...]

    @property
    def mismatches(self) -> int:
        return sum(1 for line in self.lines if not line.matches)


async def reconcile(
    sessions: async_sessionmaker[AsyncSession],
    store: BudgetStore,
    *,
    default_tz: str = "UTC",
    team_id: str | None = None,
    drain: Callable[[], Awaitable[int]] | None = None,
    at: datetime | None = None,
) -> Reconciliation:
    """Compare every budget's current-period counter with the ledger.

    Counters are read first, then the outbox is drained, then the ledger is summed: a charge
    counted before the read is in the ledger by then. Under live traffic a charge settled in
    between shows as a small difference that disappears on the next run.
    """
    at = at or datetime.now(timezone.utc)
    async with sessions() as session:
        query = select(Budget).order_by(Budget.team_id, Budget.id)  # type: ignore[arg-type]
        if team_id is not None:
            query = query.where(Budget.team_id == team_id)
        budgets = list((await session.execute(query)).scalars())
    counters = [rule_from_budget(b).counter(at, default_tz) for b in budgets]
    by_team: dict[str, list[BudgetCounter]] = defaultdict(list)
    for counter in counters:
        by_team[counter.team_id].append(counter)
    states: dict[str, Any] = {}
    for team_counters in by_team.values():  # one call per team: its keys share a cluster slot
        for state in await store.standing(team_counters):
            states[state.budget.budget_id] = state
    drained = await drain() if drain is not None else 0
    lines = []
    async with sessions() as session:
        for budget, counter in zip(budgets, counters, strict=True):
            ledger = await spent_by_budget(session, budget, counter.period_start, counter.period_end)
            state = states[counter.budget_id]
            lines.append(ReconLine(counter, state.spent_nano, state.reserved_nano, ledger))
    return Reconciliation(at, drained, tuple(lines))


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.isoformat().replace("+00:00", "Z")


def reconciliation_json(rec: Reconciliation) -> dict[str, Any]:
    return {
        "object": "farebox.reconciliation",
        "at": _iso(rec.at),
        "drained": rec.drained,
        "mismatches": rec.mismatches,
        "budgets": [
            {
                "budget_id": ln.budget.budget_id,
                "team_id": ln.budget.team_id,
                "name": ln.budget.name,
                "period": ln.budget.period,
                "period_start": _iso(ln.budget.period_start),
                "period_end": _iso(ln.budget.period_end),
                "limit_usd": format_usd(ln.budget.limit_nano),
                "counter_usd": format_usd(ln.counter_nano),
                "ledger_usd": format_usd(ln.ledger_nano),
                "difference_usd": _signed_usd(ln.difference_nano),
                "reserved_usd": format_usd(ln.reserved_nano),
                "limit_nano": ln.budget.limit_nano,
                "counter_nano": ln.counter_nano,
                "ledger_nano": ln.ledger_nano,
                "difference_nano": ln.difference_nano,
                "reserved_nano": ln.reserved_nano,
                "status": "ok" if ln.matches else "mismatch",
            }
            for ln in rec.lines
        ],
    }


def _signed_usd(nano: int) -> str:
    return ("-" if nano < 0 else "") + format_usd(abs(nano))
