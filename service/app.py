"""The Farebox ASGI application: /v1 proxy routes, /admin, health and metrics."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from service import metrics
from service.errors import (
    DatabaseUnavailable,
    FareboxError,
    InvalidRequest,
    NotFound,
    UpstreamError,
    UpstreamTimeout,
)
from service.hot_path import HotPath
from service.logging import configure_logging
from service.proxy.inference import ENDPOINTS, handle_inference
from service.proxy.models_route import list_models, retrieve_model
from service.request_context import RequestContext
from service.request_limits import RequestLimits
from service.runtime import Runtime
from service.settings import Settings

log = structlog.get_logger(__name__)


class FareboxApp(FastAPI):
    """FastAPI, except that the metered /v1 POSTs go straight to `hot_path` (service/hot_path.py).

    Everything else, the lifespan included, takes FastAPI's own way.
    """

    hot_path: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.hot_path is not None
            and scope["type"] == "http"
            and scope["path"] in ENDPOINTS
            and scope["method"] == "POST"
        ):
            scope["app"] = self  # as Starlette sets it: the handler finds the runtime through it
            await self.hot_path(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings)  # in each worker: uvicorn's workers are spawned, not forked

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from service.startup import prepare

        runtime = Runtime(settings)
        await prepare(runtime)
        await runtime.start()
        app.state.runtime = runtime
        # Everything built so far lives as long as the worker. Frozen, it is never scanned again:
        # a full collection of it took 70 ms, a stall every request in flight would wait out.
        gc.collect()
        gc.freeze()
        log.info("farebox_started", upstream=settings.upstream_url, redis=bool(settings.redis_url))
        try:
            yield
        finally:
            await runtime.stop()
            metrics.process_exiting()
            log.info("farebox_stopped")

    app = FareboxApp(
        title="Farebox",
        version="0.1.0",
        description="Cost-accounting and budgeting proxy for the OpenAI API.",
        lifespan=lifespan,
        docs_url="/admin/docs",
        openapi_url="/admin/openapi.json",
        redoc_url=None,
    )
    # Plain Starlette routes (POSTs to the inference paths are taken by hot_path before routing;
    # the routes still answer 405 to other methods and list the paths).
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        app.router.routes.append(Route(path, handle_inference, methods=["POST"]))
    app.router.routes.append(Route("/v1/models", list_models, methods=["GET"]))
    app.router.routes.append(Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]))

    from service.admin.routes import router as admin_router
    from service.health import router as health_router

    app.include_router(admin_router)
    app.include_router(health_router)
    _mount_optional(app)

    app.add_exception_handler(FareboxError, _farebox_error)
    # A database outage is a 503 the SDKs retry, answered on a connection that stays open.
    for outage in (DBAPIError, ConnectionError, TimeoutError):  # asyncpg's refused connect is raw
        app.add_exception_handler(outage, _database_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)  # FastAPI's own 400s, e.g. an unparsable body
    app.add_exception_handler(Exception, _internal_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(404, _not_found)
    app.add_exception_handler(405, _method_not_allowed)
    app.add_middleware(RequestLimits, max_body_bytes=settings.max_body_bytes, max_upload_bytes=settings.max_upload_bytes)
    app.add_middleware(RequestContext)  # outermost: even a refused request gets its id
    # The same two middlewares and the same handlers around the inference routes, without the
    # rest of the stack: 7 layers and a route match fewer on every proxied call.
    app.hot_path = RequestContext(
        RequestLimits(
            HotPath(handle_inference, app.exception_handlers),
            max_body_bytes=settings.max_body_bytes,
            max_upload_bytes=settings.max_upload_bytes,
        )
    )
    return app


def _mount_optional(app: FastAPI) -> None:
    """Routers owned by later parts (files, fine-tuning, reports, console) register here."""
    import importlib

    for module in ("service.finetune.routes", "service.reports.routes", "service.console.routes"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        app.include_router(mod.router)


async def _farebox_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FareboxError)
    endpoint = _endpoint_label(request)
    if isinstance(exc, (UpstreamError, UpstreamTimeout)):
        metrics.record_upstream_error(endpoint, 0)
    else:
        metrics.record_refusal(_refusal_reason(exc))
        if request.url.path.startswith("/v1/"):
            principal = getattr(request.state, "principal", None)
            metrics.record_request(principal.team_name if principal else None, endpoint, "refused")
    return Response(exc.body_bytes(), status_code=exc.status, headers=exc.headers, media_type="application/json")


def _endpoint_label(request: Request) -> str:
    """A bounded endpoint label: the metered name, or the route's template (never ids)."""
    path = request.url.path
    if path in ENDPOINTS:
        return ENDPOINTS[path]
    route = request.scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def _refusal_reason(exc: FareboxError) -> str:
    by_code = {
        "budget_exceeded": "budget", "budget_store_unavailable": "budget_store_down",
        "too_many_failed_authentications": "rate_limited",
    }
    by_status = {401: "auth", 403: "forbidden", 404: "not_found", 413: "too_large"}
    return by_code.get(exc.code or "") or by_status.get(exc.status) or "bad_request"


async def _database_error(request: Request, exc: Exception) -> Response:
    if not _is_outage(exc):
        log.error("unhandled_database_error", path=request.url.path, exc_info=exc)
        return await _internal_error(request, exc)
    log.warning("database_unavailable", path=request.url.path, error=type(exc).__name__)
    err = DatabaseUnavailable("Farebox cannot reach its database right now, so nothing was done; retry shortly.")
    return await _farebox_error(request, err)


# SQLSTATE classes of a database that is away: connection exception, insufficient resources
# (too many connections), operator intervention (shutting down, starting up).
_OUTAGE_SQLSTATES = ("08", "53", "57")


def _is_outage(exc: Exception) -> bool:
    if isinstance(exc, (OperationalError, InterfaceError, ConnectionError, TimeoutError)):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None) or ""
    return exc.connection_invalidated or sqlstate[:2] in _OUTAGE_SQLSTATES or isinstance(exc.orig, OSError)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else f"HTTP {exc.status_code}."
    body = {"error": {
        "message": message, "type": "invalid_request_error" if exc.status_code < 500 else "server_error",
        "param": None, "code": None,
    }}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    """Anything unexpected still answers in OpenAI's error shape (the traceback goes to the log)."""
    request_id = getattr(request.state, "request_id", "")
    body = FareboxError(f"Farebox failed to handle the request ({request_id}); it was logged.").body_bytes()
    return Response(body, status_code=500, media_type="application/json")


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    err = InvalidRequest(f"Invalid request: {where}: {first.get('msg', 'invalid value')}", param=where or None)
    return await _farebox_error(request, err)


async def _not_found(request: Request, exc: Exception) -> Response:
    path = request.url.path
    if path.startswith("/v1/"):
        message = (
            f"Farebox does not proxy {request.method} {path}: only metered endpoints are "
            "forwarded, so no spend escapes its budgets."
        )
    else:
        message = f"No route {request.method} {path}."
    detail = getattr(exc, "detail", None)
    if isinstance(detail, str) and detail and detail != "Not Found":
        message = detail
    return await _farebox_error(request, NotFound(message, code="unknown_url"))


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return JSONResponse(
        InvalidRequest(f"Method {request.method} is not allowed on {request.url.path}.").body(),
        status_code=405,
    )
