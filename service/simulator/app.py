"""The simulated OpenAI API as a Starlette app: its routes and the step every request takes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.simulator import chat, completions, embeddings, files, finetuning, models, wire
from service.simulator.config import SimulatorConfig
from service.simulator.errors import ApiError, injected, missing_key, wrong_key
from service.simulator.faults import Fault, TruncatedBody, cut_stream, paced, quiet_simulated_breaks
from service.simulator.state import Simulator
from service.simulator.tokens import encoding

log = logging.getLogger(__name__)
Handler = Callable[[Simulator, Request], Awaitable[Response]]

_GARBAGE = b'{"id": "chatcmpl-garbage", "object": "chat.completion", "choices": [{"index": 0, "mess'


def _authenticate(request: Request, api_key: str | None) -> None:
    header = request.headers.get("authorization")
    if not header:
        raise missing_key()
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise missing_key()
    if (api_key is not None and key != api_key) or (api_key is None and not key.startswith("sk-")):
        raise wrong_key(key)


def _header_ms(request: Request, name: str) -> float:
    raw = request.headers.get(name)
    if not raw:
        return 0.0
    try:
        return max(0.0, float(raw)) / 1000
    except ValueError:
        raise ApiError(400, f"{name} must be a number", param=name) from None


async def _hang(request: Request, seconds: float) -> None:
    """Keep the client waiting until it gives up (disconnects) or `seconds` pass."""
    await request.body()

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(disconnected(), seconds)


class OpenAIHeaders:
    """ASGI middleware: every answer, errors and unknown paths too, carries the API's headers."""

    def __init__(self, app: ASGIApp, organization: str) -> None:
        self.app = app
        self.common = wire.common_headers(organization)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                elapsed_ms = int((time.perf_counter() - started) * 1000)
                message["headers"] = [
                    *message.get("headers", ()),
                    *self.common,
                    (b"x-request-id", wire.request_id().encode()),
                    (b"openai-processing-ms", str(elapsed_ms).encode()),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _endpoint(
    sim: Simulator, route: str, handler: Handler
) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler with what every endpoint does: record, authenticate, inject faults."""
    config = sim.config
    latency_s = config.latency_ms / 1000
    chunk_delay_s = config.stream_chunk_delay_ms / 1000

    async def endpoint(request: Request) -> Response:
        raw_body = None
        is_upload = request.headers.get("content-type", "").startswith("multipart/")
        if request.method == "POST" and not is_upload:  # uploads stream to disk, never to memory
            raw_body = await request.body()
        entry = sim.recorder.record(request, raw_body, route)
        fault: Fault | None = None
        pace_s = chunk_delay_s
        try:
            _authenticate(request, config.api_key)
            fault = sim.faults.take(request.headers)
            pace_s += _header_ms(request, "x-sim-chunk-delay-ms")
            delay = latency_s + _header_ms(request, "x-sim-latency-ms")
            if delay > 0:
                await asyncio.sleep(delay)
            if fault is not None and fault.error == "timeout":
                await _hang(request, config.hang_s)
                raise ApiError(504, "Gateway timeout.", type="server_error")
            if fault is not None and fault.error == "garbage":
                response: Response = wire.raw_json(_GARBAGE)
            elif fault is not None and fault.error is not None:
                raise injected(fault.error, config.organization_id, config.retry_after_s)
            else:
                response = await handler(sim, request)
        except ApiError as exc:
            response = wire.error_response(exc)
        except Exception:
            log.exception("simulator handler failed on %s %s", request.method, route)
            response = wire.error_response(
                ApiError(
                    500,
                    "The server had an error while processing your request.",
                    type="server_error",
                )
            )
        if isinstance(response, StreamingResponse):
            if pace_s > 0:
                response.body_iterator = paced(response.body_iterator, pace_s)
            if fault is not None and fault.break_after is not None:
                response.body_iterator = cut_stream(response.body_iterator, fault.break_after)
        elif fault is not None and fault.break_after is not None:
            response = TruncatedBody(response)
        sim.recorder.answered(entry, response.status_code)
        return response

    return endpoint


async def _sim_stats(sim: Simulator, request: Request) -> Response:
    stats = sim.recorder.stats()
    stats["queued_faults"] = sim.faults.queued
    stats["webhooks"] = {"delivered": sim.webhooks.delivered, "failed": sim.webhooks.failed}
    return wire.json_response(stats)


async def _sim_last_request(sim: Simulator, request: Request) -> Response:
    if not sim.recorder.recent:
        return wire.error_response(ApiError(404, "No request has been received yet."))
    return wire.json_response(sim.recorder.recent[-1].to_json())


async def _sim_requests(sim: Simulator, request: Request) -> Response:
    return wire.json_response({"data": [r.to_json() for r in sim.recorder.recent]})


async def _sim_reset(sim: Simulator, request: Request) -> Response:
    sim.recorder.reset()
    sim.faults.clear()
    return wire.json_response({"reset": True})


async def _sim_faults(sim: Simulator, request: Request) -> Response:
    """Queue faults for the next requests: {"faults": [{"error": "500"}, {"break_after": 3}]}."""
    body = await wire.read_json(request)
    try:
        queued = [Fault.parse(f.get("error"), f.get("break_after")) for f in body.get("faults", [])]
    except ApiError as exc:
        return wire.error_response(exc)
    except AttributeError:
        return wire.error_response(ApiError(400, "faults must be a list of objects"))
    sim.faults.queue(queued)
    return wire.json_response({"queued": sim.faults.queued})


def _sim(sim: Simulator, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await handler(sim, request)

    return endpoint


async def _invalid_url(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods answer like the API does, not with Starlette's plain text."""
    error = ApiError(404, f"Invalid URL ({request.method} {request.url.path})")
    return wire.error_response(error)


def create_app(config: SimulatorConfig) -> Starlette:
    """A fresh simulated OpenAI API; its files, jobs and counters live and die with the app."""
    quiet_simulated_breaks()
    sim = Simulator(config)
    api: list[tuple[str, str, Handler]] = [
        ("POST", "/v1/chat/completions", chat.create),
        ("POST", "/v1/completions", completions.create),
        ("POST", "/v1/embeddings", embeddings.create),
        ("GET", "/v1/models", models.list_models),
        ("GET", "/v1/models/{model:path}", models.retrieve),
        ("DELETE", "/v1/models/{model:path}", models.delete),
        ("POST", "/v1/files", files.upload),
        ("GET", "/v1/files", files.list_files),
        ("GET", "/v1/files/{file_id}", files.retrieve),
        ("DELETE", "/v1/files/{file_id}", files.delete),
        ("GET", "/v1/files/{file_id}/content", files.content),
        ("POST", "/v1/fine_tuning/jobs", finetuning.create),
        ("GET", "/v1/fine_tuning/jobs", finetuning.list_jobs),
        ("GET", "/v1/fine_tuning/jobs/{job_id}", finetuning.retrieve),
        ("POST", "/v1/fine_tuning/jobs/{job_id}/cancel", finetuning.cancel),
        ("GET", "/v1/fine_tuning/jobs/{job_id}/events", finetuning.events),
        ("GET", "/v1/fine_tuning/jobs/{job_id}/checkpoints", finetuning.checkpoints),
    ]
    introspection: list[tuple[str, str, Handler]] = [
        ("GET", "/v1/_sim/stats", _sim_stats),
        ("GET", "/v1/_sim/last_request", _sim_last_request),
        ("GET", "/v1/_sim/requests", _sim_requests),
        ("POST", "/v1/_sim/reset", _sim_reset),
        ("POST", "/v1/_sim/faults", _sim_faults),
    ]
    routes = [
        Route(path, _sim(sim, handler), methods=[method]) for method, path, handler in introspection
    ]
    routes += [
        Route(path, _endpoint(sim, path, handler), methods=[method])
        for method, path, handler in api
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        if not config.fast:
            # Load the tokenizers before the first request rather than during it.
            await asyncio.gather(
                *(asyncio.to_thread(encoding, name) for name in ("cl100k_base", "o200k_base"))
            )
        yield {}
        await sim.close()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(OpenAIHeaders, organization=config.organization_name)],
        exception_handlers={404: _invalid_url, 405: _invalid_url},
    )
    app.state.simulator = sim
    return app
