"""The console's reads of the database: last ledger rows, fine-tuning jobs and their inference spend, budgets."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from pricing.money import format_usd
from service.db.models import Budget, DailyRollup, FineTuneJob, LedgerEntry, Team
from service.ledger.entries import as_utc


def iso(ts: datetime | None) -> str | None:
    return None if ts is None else as_utc(ts).isoformat().replace("+00:00", "Z")


async def team_names(session: AsyncSession, ids: Iterable[str] | None = None) -> dict[str, str]:
    """Team id -> name, for every team or the given ids."""
    query = select(Team.id, Team.name)
    if ids is not None:
        query = query.where(Team.id.in_(set(ids)))  # type: ignore[attr-defined]
    return {tid: name for tid, name in (await session.execute(query)).all()}


async def budget_starts(
    session: AsyncSession, team_id: str | None
) -> dict[str, tuple[str, datetime]]:
    """Budget id -> (its team, when it was created), of one team or all; a total budget's pace runs from then."""
    query = select(Budget.id, Budget.team_id, Budget.created_at)
    if team_id is not None:
        query = query.where(Budget.team_id == team_id)
    return {
        bid: (tid, as_utc(created)) for bid, tid, created in (await session.execute(query)).all()
    }


async def recent_requests(
    session: AsyncSession, team_id: str | None, limit: int, model: str | None = None
) -> list[dict[str, Any]]:
    """The newest ledger rows, of one team or all, optionally of one requested model."""
    L = LedgerEntry
    query = select(L).order_by(L.started_at.desc(), L.id.desc()).limit(limit)  # type: ignore[attr-defined,union-attr]
    if team_id is not None:
        query = query.where(L.team_id == team_id)
    if model:
        query = query.where(L.model_requested == model)
    rows = list((await session.execute(query)).scalars())
    return [
        {
            "request_id": r.request_id,
            "team_id": r.team_id,
            "key_id": r.key_id,
            "kind": r.kind,
            "endpoint": r.endpoint,
            "model": r.model_requested,
            "model_answered": r.model_answered,
            "status": r.status,
            "prompt_tokens": r.prompt_tokens,
            "cached_tokens": r.cached_tokens,
            "completion_tokens": r.completion_tokens,
            "trained_tokens": int(r.trained_tokens),
            "cost_nano": int(r.cost_nano),
            "cost_usd": format_usd(int(r.cost_nano)),
            "usage_source": r.usage_source,
            "job_id": r.job_id,
            "started_at": iso(r.started_at),
        }
        for r in rows
    ]


async def jobs(session: AsyncSession, team_id: str | None, limit: int) -> list[FineTuneJob]:
    """Fine-tuning jobs as Farebox recorded them, newest first."""
    J = FineTuneJob
    query = select(J).order_by(J.created_at.desc(), J.id.desc()).limit(limit)  # type: ignore[attr-defined]
    if team_id is not None:
        query = query.where(J.team_id == team_id)
    return list((await session.execute(query)).scalars())


async def inference_spend(
    session: AsyncSession, pairs: set[tuple[str, str]]
) -> dict[tuple[str, str], tuple[int, int]]:
    """(team, model) -> (requests, cost_nano) of inference on each model, from the daily rollup."""
    if not pairs:
        return {}
    D = DailyRollup
    teams = {team for team, _ in pairs}
    models = {model for _, model in pairs}
    query = (
        select(D.team_id, D.model, func.sum(D.requests), func.sum(D.cost_nano))
        .where(D.kind == "inference", D.team_id.in_(teams), D.model.in_(models))  # type: ignore[attr-defined]
        .group_by(D.team_id, D.model)
    )
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for team, model, requests, cost in (await session.execute(query)).all():
        if (team, model) in pairs:  # the IN lists cross teams with models; keep each team's own
            out[(team, model)] = (int(requests or 0), int(cost or 0))
    return out
