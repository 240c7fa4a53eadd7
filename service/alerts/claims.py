"""Claiming an alert: one INSERT on the alerts table's unique key; across replicas exactly one wins."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from service.alerts.thresholds import Crossing
from service.db.models import AlertSent

ALERTS: Table = AlertSent.__table__  # type: ignore[assignment]
UNIQUE_KEY = ("budget_id", "period_start", "threshold")


async def claim(session: AsyncSession, crossings: Sequence[Crossing], now: datetime | None = None) -> list[int]:
    """Insert a pending alert per crossing unless one exists; returns the ids this call created.

    Runs in the caller's transaction. A replica that loses the race inserts nothing: the
    conflict on (budget_id, period_start, threshold) is the answer, not an error.
    """
    if not crossings:
        return []
    now = now or datetime.now(timezone.utc)
    rows = [
        {
            "budget_id": c.budget_id,
            "team_id": c.team_id,
            "period_start": c.period_start.astimezone(timezone.utc),
            "threshold": c.threshold,
            "spent_nano": c.spent_nano,
            "limit_nano": c.limit_nano,
            "status": "pending",
            "attempts": 0,
            "created_at": now,
            "next_attempt_at": now,
        }
        # Sorted, so concurrent claimers lock index entries in one order and cannot deadlock.
        for c in sorted({c.key: c for c in crossings}.values(), key=lambda c: c.key)
    ]
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert(ALERTS) if dialect == "postgresql" else sqlite.insert(ALERTS)
    statement = insert.on_conflict_do_nothing(index_elements=[ALERTS.c[n] for n in UNIQUE_KEY]).returning(ALERTS.c.id)
    ids: list[int] = []
    for row in rows:  # a handful of rows; each statement says plainly whether it won
        ids.extend((await session.execute(statement, row)).scalars())
    return ids
