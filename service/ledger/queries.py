"""Reads of the ledger: one request's rows, total spend, and the spend a budget rule counts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.budgets.store import OutboxPosition
from service.db.models import Budget, LedgerEntry
from service.ledger.entries import as_utc

if TYPE_CHECKING:
    from service.budgets.policy import BudgetRule

_L = LedgerEntry.__table__.c  # type: ignore[attr-defined]


async def entries_for_request(session: AsyncSession, request_id: str) -> list[LedgerEntry]:
    """The ledger rows of one request id (at most one: the id is unique)."""
    rows = await session.execute(
        select(LedgerEntry).where(_L.request_id == request_id).order_by(_L.id)
    )
    return list(rows.scalars())


async def total_cost(
    session: AsyncSession,
    team_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """Sum of cost_nano over charges started in [since, until), optionally of one team."""
    query = select(func.coalesce(func.sum(_L.cost_nano), 0))
    if team_id is not None:
        query = query.where(_L.team_id == team_id)
    return await _scalar_int(session, _in_window(query, since, until))


async def spent_by_budget(
    session: AsyncSession,
    rule: Budget | BudgetRule,
    period_start: datetime | None,
    period_end: datetime | None,
    through: OutboxPosition | None = None,
) -> int:
    """The ledger spend a budget counts in [period_start, period_end): its team, key, models and kind.

    Matches service.budgets.policy.BudgetRule.applies_to (a model matches the requested name or its
    base model; an empty model list restricts nothing), so Redis counters rebuild to what settle added.
    None bounds mean open-ended (the "total" period). With `through`, rows from the team's outbox
    count only up to that position; rows written straight to the ledger always count.
    """
    query = select(func.coalesce(func.sum(_L.cost_nano), 0)).where(_L.team_id == rule.team_id)
    if rule.key_id is not None:
        query = query.where(_L.key_id == rule.key_id)
    if rule.kind is not None:
        query = query.where(_L.kind == rule.kind)
    if rule.models:
        models = list(rule.models)
        query = query.where(or_(_L.model_requested.in_(models), _L.base_model.in_(models)))
    if through is not None:
        query = query.where(or_(
            _L.outbox_ms.is_(None),
            _L.outbox_ms < through.ms,
            and_(_L.outbox_ms == through.ms, _L.outbox_seq <= through.seq),
        ))
    return await _scalar_int(session, _in_window(query, period_start, period_end))


def _in_window(query: Any, since: datetime | None, until: datetime | None) -> Any:
    # Bounds in UTC: SQLite compares the stored (UTC, offset-less) text.
    if since is not None:
        query = query.where(_L.started_at >= as_utc(since))
    if until is not None:
        query = query.where(_L.started_at < as_utc(until))
    return query


async def _scalar_int(session: AsyncSession, query: Any) -> int:
    # Postgres sums BIGINT as NUMERIC (Decimal); int() of it is exact.
    return int((await session.execute(query)).scalar_one())


async def requests_in_ledger(session: AsyncSession, team_id: str, request_ids: Sequence[str]) -> set[str]:
    """Which of these request ids of the team have a ledger row (by the unique request_id index)."""
    found: set[str] = set()
    for start in range(0, len(request_ids), 500):
        chunk = list(request_ids[start : start + 500])
        query = select(_L.request_id).where(_L.team_id == team_id, _L.request_id.in_(chunk))
        found.update(await session.scalars(query))
    return found
