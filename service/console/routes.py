"""GET /console (the page and its static bundle) and the console's JSON reads under /console/api.

The page signs in with a team key or the admin token that the browser keeps in sessionStorage
and sends as a Bearer header, so the console uses the same APIs the SDKs do; /console/api adds
only what those APIs lack: who the secret belongs to, budget pace, last ledger rows and the
estimate and charge of each fine-tuning job.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from pricing.money import format_usd
from service.admin.schemas import StandingOut
from service.console import queries
from service.console.assets import SECURITY_HEADERS, Asset, page, static_assets
from service.console.burn import burn
from service.console.caller import identify, scoped_team
from service.db.models import FineTuneJob
from service.errors import NotFound
from service.runtime import Runtime

router = APIRouter(prefix="/console", tags=["console"], include_in_schema=False)

MAX_REQUESTS = 500
MAX_JOBS = 200


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def _json(body: Any) -> JSONResponse:
    return JSONResponse(body, headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})


def _serve(request: Request, asset: Asset, cache: str) -> Response:
    headers = {**SECURITY_HEADERS, "ETag": asset.etag, "Cache-Control": cache}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)


# The page


@router.get("")
async def console_page(request: Request) -> Response:
    """The single page; it holds no data, everything is fetched after sign-in."""
    return _serve(request, page("index.html"), "no-cache")


@router.post("")
async def console_without_script() -> Response:
    """The sign-in form posts here only when scripts are off; the body (the secret) is never read."""
    return HTMLResponse(
        page("noscript.html").body,
        status_code=400,
        headers={**SECURITY_HEADERS, "Cache-Control": "no-store"},
    )


@router.get("/static/{name}")
async def console_static(name: str, request: Request) -> Response:
    asset = static_assets().get(name)
    if asset is None:
        raise NotFound(f"No console file {name!r}.")
    return _serve(request, asset, "no-cache")


# JSON for the page


@router.get("/api/whoami")
async def whoami(request: Request) -> JSONResponse:
    """Whom the secret belongs to: the admin, or a team (its id and name)."""
    caller = await identify(request)
    return _json({"role": caller.role, "team_id": caller.team_id, "team_name": caller.team_name})


@router.get("/api/standing")
async def standing(
    request: Request, team: str | None = Query(None, description="Admin only: team id or name.")
) -> JSONResponse:
    """Each budget's standing this period with its burn rate and projected run-out; the admin gets every team's."""
    rt = _runtime(request)
    caller = await identify(request)
    team_id = await scoped_team(request, caller, team)
    async with rt.sessions() as session:
        starts = await queries.budget_starts(session, team_id)
        names = await queries.team_names(session, {tid for tid, _ in starts.values()})
    now = datetime.now(timezone.utc)
    budgets: list[dict[str, Any]] = []
    for tid in sorted(names, key=lambda t: (names[t], t)):  # only teams that have budgets
        for state in await rt.budgets.standing_out(tid):
            created = starts.get(state.budget_id, (tid, None))[1]
            budgets.append(_paced(state, tid, names[tid], created, now))
    return _json({"object": "farebox.console.standing", "at": queries.iso(now), "budgets": budgets})


def _paced(
    state: StandingOut, team_id: str, team_name: str, created: datetime | None, now: datetime
) -> dict[str, Any]:
    pace = burn(
        state.spent_nano, state.remaining_nano, state.period_start or created, state.period_end, now
    )
    out = state.model_dump(mode="json")
    out.update(
        team_id=team_id,
        team_name=team_name,
        burn_nano_per_day=pace.rate_nano_per_day,
        burn_usd_per_day=None
        if pace.rate_nano_per_day is None
        else format_usd(pace.rate_nano_per_day),
        runs_out_at=queries.iso(pace.runs_out_at),
        outlook=pace.outlook,
    )
    return out


@router.get("/api/requests")
async def requests(
    request: Request,
    team: str | None = Query(None, description="Admin only: team id or name."),
    model: str | None = Query(None, description="Only this requested model."),
    limit: int = Query(25, ge=1, le=MAX_REQUESTS),
) -> JSONResponse:
    """The newest ledger rows: what each request cost and the tokens it used."""
    rt = _runtime(request)
    caller = await identify(request)
    team_id = await scoped_team(request, caller, team)
    async with rt.sessions() as session:
        rows = await queries.recent_requests(session, team_id, limit, model)
        names = (
            await queries.team_names(session, {r["team_id"] for r in rows})
            if caller.is_admin
            else {}
        )
    for row in rows:
        row["team_name"] = names.get(row["team_id"]) if caller.is_admin else caller.team_name
    return _json({"object": "list", "data": rows})


@router.get("/api/jobs")
async def jobs(
    request: Request,
    team: str | None = Query(None, description="Admin only: team id or name."),
    limit: int = Query(50, ge=1, le=MAX_JOBS),
) -> JSONResponse:
    """Fine-tuning jobs as Farebox recorded them: the estimate reserved at creation beside the actual charge."""
    rt = _runtime(request)
    caller = await identify(request)
    team_id = await scoped_team(request, caller, team)
    async with rt.sessions() as session:
        rows = await queries.jobs(session, team_id, limit)
        names = await queries.team_names(session, {j.team_id for j in rows})
        spend = await queries.inference_spend(
            session, {(j.team_id, j.fine_tuned_model) for j in rows if j.fine_tuned_model}
        )
    return _json({"object": "list", "data": [_job(j, names.get(j.team_id), spend) for j in rows]})


def _job(
    j: FineTuneJob, team_name: str | None, spend: dict[tuple[str, str], tuple[int, int]]
) -> dict[str, Any]:
    used = spend.get((j.team_id, j.fine_tuned_model)) if j.fine_tuned_model else None
    cost = None if j.cost_nano is None else int(j.cost_nano)
    return {
        "id": j.id,
        "team_id": j.team_id,
        "team_name": team_name,
        "model": j.model,
        "base_model": j.base_model,
        "status": j.status,
        "training_file": j.training_file,
        "n_epochs": j.n_epochs,
        "estimated_tokens": j.estimated_tokens,
        "estimate_nano": int(j.estimate_nano),
        "estimate_usd": format_usd(int(j.estimate_nano)),
        "trained_tokens": j.trained_tokens,
        "cost_nano": cost,
        "cost_usd": None if cost is None else format_usd(cost),
        "fine_tuned_model": j.fine_tuned_model,
        "inference_requests": used[0] if used else 0,
        "inference_nano": used[1] if used else 0,
        "inference_usd": format_usd(used[1] if used else 0),
        "created_at": queries.iso(j.created_at),
        "finished_at": queries.iso(j.finished_at),
        "settled_at": queries.iso(j.settled_at),
    }
