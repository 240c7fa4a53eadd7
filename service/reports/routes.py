"""Finance reports over HTTP: /admin/reports/* for the admin token, /v1/farebox/spend for a team key."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from service.admin.routes import require_admin
from service.alerts.routes import router as alerts_router
from service.errors import InvalidRequest
from service.reports.params import SpendQuery, parse_month, spend_query
from service.reports.reconcile import reconcile, reconciliation_json
from service.reports.render import spend_csv, spend_json
from service.reports.spend import spend_report
from service.reports.statement import build_statement, statement_csv
from service.reports.statement_html import statement_html
from service.runtime import Runtime

admin_router = APIRouter(prefix="/admin/reports", tags=["reports"], dependencies=[Depends(require_admin)])
team_router = APIRouter(prefix="/v1/farebox", tags=["reports"])


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


class SpendParams:
    """The query string of a spend report (shared by the admin and the team route)."""

    def __init__(
        self,
        group_by: str | None = Query(None, description="Comma-separated: team, key, model, base_model, kind."),
        granularity: str = Query("day", description="hour, day, week, month or none."),
        since: str | None = Query(None, description="Start (included): 2026-11-01, 2026-11 or ISO 8601; UTC."),
        until: str | None = Query(None, description="End (excluded), same forms."),
        key: str | None = Query(None),
        model: str | None = Query(None, description="The model as requested."),
        base_model: str | None = Query(None),
        kind: str | None = Query(None, description="inference or training."),
        status: str | None = Query(None, description="Ledger status (answered from the ledger, not the rollup)."),
        endpoint: str | None = Query(None, description="Endpoint (answered from the ledger, not the rollup)."),
        source: str = Query("auto", description="auto, rollup or ledger."),
        fmt: str = Query("json", alias="format", description="json or csv."),
    ) -> None:
        self.fields = dict(
            group_by=group_by, granularity=granularity, since=since, until=until, key=key, model=model,
            base_model=base_model, kind=kind, status=status, endpoint=endpoint, source=source,
        )
        self.fmt = fmt

    def query(self, team: str | None) -> SpendQuery:
        return spend_query(team=team, **self.fields)


def _check_format(fmt: str, allowed: tuple[str, ...]) -> None:
    if fmt not in allowed:
        raise InvalidRequest(f"format must be one of {', '.join(allowed)}.", param="format")


def _csv(text: str, filename: str) -> Response:
    return Response(
        text, media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def _spend_response(rt: Runtime, query: SpendQuery, fmt: str) -> Response:
    _check_format(fmt, ("json", "csv"))
    async with rt.sessions() as session:
        report = await spend_report(session, query)
    if fmt == "csv":
        return _csv(spend_csv(report), "farebox-spend.csv")
    return JSONResponse(spend_json(report))


@admin_router.get("/spend")
async def admin_spend(
    request: Request,
    team: str | None = Query(None, description="Team id or name."),
    params: SpendParams = Depends(),
) -> Response:
    """Spend and tokens grouped and bucketed, every team or one."""
    rt = _runtime(request)
    team_id = (await rt.admin.get_team(team)).id if team else None
    return await _spend_response(rt, params.query(team_id), params.fmt)


@team_router.get("/spend")
async def team_spend(request: Request, params: SpendParams = Depends()) -> Response:
    """The caller's team's own spend: the team is the key's, whatever the query says."""
    rt = _runtime(request)
    principal = await rt.authenticate(request)
    return await _spend_response(rt, params.query(principal.team_id), params.fmt)


@admin_router.get("/statement")
async def statement(
    request: Request,
    team: str = Query(..., description="Team id or name."),
    month: str = Query(..., description="Calendar month in UTC, e.g. 2026-11."),
    fmt: str = Query("html", alias="format", description="html or csv."),
) -> Response:
    """A team's monthly statement: each model and kind with tokens, rates and cost."""
    _check_format(fmt, ("html", "csv"))
    rt = _runtime(request)
    team_row = await rt.admin.get_team(team)
    start, end = parse_month(month)
    async with rt.sessions() as session:
        st = await build_statement(session, team_row, start, end)
    if fmt == "csv":
        return _csv(statement_csv(st), f"farebox-statement-{st.month}-{team_row.id}.csv")
    return HTMLResponse(statement_html(st))


@admin_router.get("/reconciliation")
async def reconciliation(
    request: Request,
    team: str | None = Query(None, description="Team id or name."),
    drain: bool = Query(True, description="Write the outbox to the ledger before comparing."),
) -> dict[str, Any]:
    """Each budget's store counter against the ledger sum for its current period."""
    rt = _runtime(request)
    team_id = (await rt.admin.get_team(team)).id if team else None
    rec = await reconcile(
        rt.sessions, rt.store, default_tz=rt.settings.budget_timezone, team_id=team_id,
        drain=rt.drain_ledger if drain else None,
    )
    return reconciliation_json(rec)


router = APIRouter()
router.include_router(admin_router)
router.include_router(team_router)
# service/app.py mounts only this module's router; the alerts listing rides along with it.
router.include_router(alerts_router)
