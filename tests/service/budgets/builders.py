"""Builders for the budget tests: counters, reservations and charge events."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from service.budgets.store import BudgetCounter, Reservation
from service.ledger.event import ChargeEvent

TEAM = "team-a"


def counter(
    budget_id: str = "b1", limit_nano: int = 1_000, team_id: str = TEAM, period: str = "total"
) -> BudgetCounter:
    """A budget counter; total by default so no test straddles a period boundary."""
    return BudgetCounter(
        budget_id=budget_id,
        team_id=team_id,
        name=budget_id,
        limit_nano=limit_nano,
        period=period,
        period_start=None,
        period_end=None,
    )


def reservation(
    request_id: str,
    amount_nano: int,
    *budgets: BudgetCounter,
    team_id: str = TEAM,
    ttl_s: int = 600,
) -> Reservation:
    return Reservation(request_id, team_id, amount_nano, tuple(budgets), ttl_s)


def charge(res: Reservation, cost_nano: int, **fields: Any) -> ChargeEvent:
    now = datetime.now(timezone.utc)
    return ChargeEvent(
        request_id=res.request_id,
        team_id=res.team_id,
        kind="inference",
        status="ok",
        started_at=now,
        finished_at=now,
        cost_nano=cost_nano,
        model_requested="gpt-4o-mini",
        **fields,
    )


async def delete_namespace(client: Any, namespace: str) -> None:
    async for key in client.scan_iter(match=f"{namespace}*", count=1000):
        await client.delete(key)
