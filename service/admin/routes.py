"""The admin HTTP API under /admin, guarded by the admin token."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service.admin.schemas import (
    BudgetIn, BudgetOut, BudgetPatch, ClaimIn, KeyIn, KeyOut, NewKeyOut, ShareIn, StandingOut,
    TeamIn, TeamOut, TeamPatch,
)
from service.admin.service import AdminService, nano_to_usd
from service.db.models import ApiKey, Budget, Team
from service.errors import AuthenticationFailed, PermissionDenied
from service.runtime import Runtime


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def require_admin(request: Request) -> None:
    """Only the admin token passes; team keys are refused here whatever they are."""
    rt = _runtime(request)
    expected = rt.settings.admin_token
    if expected is None:
        raise PermissionDenied("The admin API is disabled: set FAREBOX_ADMIN_TOKEN to enable it.")
    client = request.client.host if request.client else "unknown"
    rt.auth.check_throttle(client)  # guessing the admin token is slowed like guessing keys
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.get_secret_value().encode()):
        rt.auth.record_failure(client)
        raise AuthenticationFailed("The admin API needs 'Authorization: Bearer <admin token>'.", code="invalid_admin_token")


router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


def admin(request: Request) -> AdminService:
    return _runtime(request).admin


def team_out(t: Team) -> TeamOut:
    return TeamOut(id=t.id, name=t.name, webhook_url=t.webhook_url, validate_training_files=t.validate_training_files, created_at=t.created_at)


def key_out(k: ApiKey) -> KeyOut:
    return KeyOut(id=k.id, team_id=k.team_id, name=k.name, prefix=k.prefix, created_at=k.created_at, expires_at=k.expires_at, revoked_at=k.revoked_at)


def budget_out(b: Budget, default_thresholds: list[int]) -> BudgetOut:
    return BudgetOut(
        id=b.id, team_id=b.team_id, key_id=b.key_id, name=b.name, limit_usd=nano_to_usd(b.limit_nano),
        limit_nano=b.limit_nano, period=b.period, timezone=b.timezone, models=b.models, kind=b.kind,
        thresholds=b.thresholds or default_thresholds, source=b.source,
    )


@router.post("/teams", status_code=201, response_model=TeamOut)
async def create_team(body: TeamIn, svc: AdminService = Depends(admin)) -> TeamOut:
    webhook = str(body.webhook_url) if body.webhook_url else None
    return team_out(await svc.create_team(body.name, webhook_url=webhook, validate_training_files=body.validate_training_files))


@router.get("/teams", response_model=list[TeamOut])
async def list_teams(svc: AdminService = Depends(admin)) -> list[TeamOut]:
    return [team_out(t) for t in await svc.list_teams()]


@router.get("/teams/{team_id}", response_model=TeamOut)
async def get_team(team_id: str, svc: AdminService = Depends(admin)) -> TeamOut:
    return team_out(await svc.get_team(team_id))


@router.patch("/teams/{team_id}", response_model=TeamOut)
async def patch_team(team_id: str, body: TeamPatch, svc: AdminService = Depends(admin)) -> TeamOut:
    fields = body.model_dump(exclude_unset=True)
    webhook = fields.get("webhook_url")
    team = await svc.update_team(
        team_id,
        webhook_url=str(webhook) if webhook else None,
        validate_training_files=fields.get("validate_training_files"),
        clear_webhook="webhook_url" in fields and webhook is None,
    )
    return team_out(team)


@router.post("/teams/{team_id}/keys", status_code=201, response_model=NewKeyOut)
async def create_key(team_id: str, body: KeyIn, svc: AdminService = Depends(admin)) -> NewKeyOut:
    key, secret = await svc.create_key(team_id, name=body.name, expires_at=body.expires_at)
    return NewKeyOut(**key_out(key).model_dump(), key=secret)


@router.get("/teams/{team_id}/keys", response_model=list[KeyOut])
async def list_keys(team_id: str, svc: AdminService = Depends(admin)) -> list[KeyOut]:
    return [key_out(k) for k in await svc.list_keys(team_id)]


@router.post("/keys/{key_id}/revoke", response_model=KeyOut)
async def revoke_key(key_id: str, svc: AdminService = Depends(admin)) -> KeyOut:
    return key_out(await svc.revoke_key(key_id))


@router.post("/teams/{team_id}/budgets", status_code=201, response_model=BudgetOut)
async def create_budget(team_id: str, body: BudgetIn, request: Request, svc: AdminService = Depends(admin)) -> BudgetOut:
    return budget_out(await svc.create_budget(team_id, body), _runtime(request).settings.alert_thresholds)


@router.get("/teams/{team_id}/budgets", response_model=list[BudgetOut])
async def list_budgets(team_id: str, request: Request, svc: AdminService = Depends(admin)) -> list[BudgetOut]:
    await svc.get_team(team_id)
    defaults = _runtime(request).settings.alert_thresholds
    return [budget_out(b, defaults) for b in await svc.list_budgets(team_id)]


@router.patch("/budgets/{budget_id}", response_model=BudgetOut)
async def patch_budget(budget_id: str, body: BudgetPatch, request: Request, svc: AdminService = Depends(admin)) -> BudgetOut:
    return budget_out(await svc.update_budget(budget_id, body), _runtime(request).settings.alert_thresholds)


@router.delete("/budgets/{budget_id}", status_code=204)
async def delete_budget(budget_id: str, svc: AdminService = Depends(admin)) -> Response:
    await svc.delete_budget(budget_id)
    return Response(status_code=204)


@router.get("/teams/{team_id}/standing", response_model=list[StandingOut])
async def team_standing(team_id: str, request: Request, svc: AdminService = Depends(admin)) -> list[StandingOut]:
    team = await svc.get_team(team_id)
    return await _runtime(request).budgets.standing_out(team.id)


@router.post("/models/{model:path}/share", status_code=204)
async def share_model(model: str, body: ShareIn, svc: AdminService = Depends(admin)) -> Response:
    await svc.share_model(model, body.team_id)
    return Response(status_code=204)


@router.post("/models/{model:path}/unshare", status_code=204)
async def unshare_model(model: str, body: ShareIn, svc: AdminService = Depends(admin)) -> Response:
    await svc.unshare_model(model, body.team_id)
    return Response(status_code=204)


@router.post("/models/{model:path}/claim", status_code=204)
async def claim_model(model: str, body: ClaimIn, svc: AdminService = Depends(admin)) -> Response:
    await svc.claim_model(model, body.team_id)
    return Response(status_code=204)


@router.post("/counters/rebuild")
async def rebuild_counters(request: Request) -> dict[str, object]:
    """Recompute every budget counter of the current periods from the ledger.

    skipped_teams lists the teams whose counters were left as they were (the ledger could not
    be read exactly for them); the service tries them again by itself.
    """
    result = await _runtime(request).budgets.rebuild_from_ledger()
    return {"counters": result.counters, "teams": result.teams, "skipped_teams": list(result.skipped)}
