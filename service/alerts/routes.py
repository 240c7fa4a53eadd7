"""GET /admin/alerts: the alerts Farebox claimed and what became of each delivery."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import select

from pricing.money import format_usd
from service.admin.routes import require_admin
from service.db.models import AlertSent
from service.errors import InvalidRequest

router = APIRouter(prefix="/admin", tags=["alerts"], dependencies=[Depends(require_admin)])

STATUSES = ("pending", "delivered", "failed", "no_webhook")


def _iso(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    ts = ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)
    return ts.isoformat().replace("+00:00", "Z")


def alert_out(a: AlertSent) -> dict[str, Any]:
    return {
        "id": a.id,
        "team_id": a.team_id,
        "budget_id": a.budget_id,
        "period_start": _iso(a.period_start),
        "threshold": a.threshold,
        "spent_usd": format_usd(int(a.spent_nano)),
        "limit_usd": format_usd(int(a.limit_nano)),
        "spent_nano": int(a.spent_nano),
        "limit_nano": int(a.limit_nano),
        "status": a.status,
        "attempts": a.attempts,
        "last_error": a.last_error,
        "created_at": _iso(a.created_at),
        "delivered_at": _iso(a.delivered_at),
        "next_attempt_at": _iso(a.next_attempt_at),
    }


@router.get("/alerts")
async def list_alerts(
    request: Request,
    team: str | None = Query(None, description="Team id or name."),
    status: str | None = Query(None, description="pending, delivered, failed or no_webhook."),
    budget: str | None = Query(None, description="Budget id."),
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    """Newest first."""
    rt = request.app.state.runtime
    query = select(AlertSent).order_by(AlertSent.created_at.desc(), AlertSent.id.desc()).limit(limit)  # type: ignore[attr-defined,union-attr]
    if team:
        query = query.where(AlertSent.team_id == (await rt.admin.get_team(team)).id)
    if status:
        if status not in STATUSES:
            raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}.", param="status")
        query = query.where(AlertSent.status == status)
    if budget:
        query = query.where(AlertSent.budget_id == budget)
    async with rt.sessions() as session:
        alerts = list((await session.execute(query)).scalars())
    return {"object": "list", "data": [alert_out(a) for a in alerts]}
