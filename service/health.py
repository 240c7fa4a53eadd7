"""Liveness, readiness and the Prometheus endpoint."""

from __future__ import annotations

import asyncio
import functools

from fastapi import APIRouter
from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service import metrics
from service.runtime import Runtime

router = APIRouter(include_in_schema=False)


@functools.cache
def _schema_head() -> str | None:
    from service.db.migrate import head

    return head()


@router.get("/healthz")
async def healthz() -> Response:
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """Ready when the database and (if configured) Redis answer, and the process is not draining.

    With Redis, a replica that has seen its schema once stays ready while the database is away:
    requests are served from Redis and the cached keys and budget rules, and their charges wait
    in the Redis outbox (docs/faults.md). Taking every replica out then would turn a database
    outage into a full one. It answers `"degraded": true` meanwhile.
    """
    rt: Runtime = request.app.state.runtime
    checks: dict[str, str] = {}
    degraded = False
    try:
        async with asyncio.timeout(2.0):
            async with rt.engine.connect() as conn:
                version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        # Answering is not enough: a replica is ready once the schema is the one it was built for.
        checks["database"] = "ok" if version == _schema_head() else f"schema at {version}, needs {_schema_head()}"
        if checks["database"] == "ok":
            request.app.state.schema_seen = True
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
        degraded = rt.redis is not None and getattr(request.app.state, "schema_seen", False)
    if rt.redis is not None:
        try:
            async with asyncio.timeout(2.0):
                await rt.store.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
    if rt.draining:
        checks["draining"] = "yes"
    ready = all(v == "ok" for k, v in checks.items() if k not in ("draining", "database")) and not rt.draining
    ready = ready and (checks["database"] == "ok" or degraded)
    body: dict[str, object] = {"ready": ready, "checks": checks}
    if degraded:
        body["degraded"] = True
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics")
async def prometheus_metrics(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    await rt.refresh_gauges()
    body, content_type = metrics.render_metrics()
    return Response(body, media_type=content_type)
