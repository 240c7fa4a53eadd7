"""The inference routes' short way in: the same handlers, ids and limits as the full stack."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from service.app import create_app
from service.errors import FareboxError, InvalidRequest
from service.hot_path import HotPath
from service.settings import Settings


class Boom(Exception):
    pass


async def _farebox(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FareboxError)
    return Response(exc.body_bytes(), status_code=exc.status, media_type="application/json")


async def _internal(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": {"message": f"internal: {type(exc).__name__}"}}, status_code=500)


async def _teapot(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": {"message": "by status"}}, status_code=418)


HANDLERS: dict[Any, Any] = {FareboxError: _farebox, Exception: _internal, 418: _teapot}


def _client(endpoint: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=HotPath(endpoint, HANDLERS), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://farebox")


async def test_a_handled_error_becomes_its_handlers_answer() -> None:
    async def endpoint(request: Request) -> Response:
        raise InvalidRequest("no model", param="model")

    async with _client(endpoint) as client:
        response = await client.post("/v1/chat/completions", content=b"{}")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"


async def test_an_http_exception_goes_to_the_handler_for_its_status() -> None:
    async def endpoint(request: Request) -> Response:
        raise HTTPException(status_code=418)

    async with _client(endpoint) as client:
        response = await client.post("/v1/completions")
    assert (response.status_code, response.json()["error"]["message"]) == (418, "by status")


async def test_an_unexpected_error_answers_500_and_is_raised_again_for_the_server_to_log() -> None:
    async def endpoint(request: Request) -> Response:
        raise Boom()

    hot = HotPath(endpoint, HANDLERS)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/embeddings", "headers": [], "query_string": b""}
    with pytest.raises(Boom):
        await hot(scope, receive, send)
    assert sent[0]["status"] == 500
    assert b"internal: Boom" in sent[1]["body"]


async def test_an_error_after_the_answer_started_is_raised_and_nothing_else_is_sent() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        raise InvalidRequest("too late to answer this")

    async def endpoint(request: Request) -> Response:
        return StreamingResponse(chunks(), media_type="text/event-stream")

    hot = HotPath(endpoint, HANDLERS)
    sent: list[dict[str, Any]] = []
    requests = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if requests:
            return requests.pop()
        await asyncio.Event().wait()  # the client stays: no disconnect while the stream runs
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [], "query_string": b""}
    with pytest.raises(InvalidRequest):
        await hot(scope, receive, send)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [200]  # no second head for the handled error


async def test_the_app_takes_inference_posts_the_short_way_and_everything_else_the_long_way() -> None:
    app = create_app(Settings(database_url="sqlite+aiosqlite:///:memory:", redis_url=None))
    calls: list[str] = []

    async def endpoint(request: Request) -> Response:
        calls.append(request.scope["path"])
        assert request.app is app and request.state.request_id.startswith("fbr_")
        return Response(b"{}", media_type="application/json")

    app.hot_path.app.app.endpoint = endpoint  # type: ignore[union-attr]  # RequestContext > RequestLimits > HotPath
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://farebox") as client:
        posted = await client.post("/v1/chat/completions", content=b"{}")
        got = await client.get("/v1/chat/completions")
        too_big = await client.post(
            "/v1/embeddings", content=b"x", headers={"content-length": str(10**12)}
        )
    assert posted.status_code == 200 and posted.headers["x-farebox-request-id"].startswith("fbr_")
    assert calls == ["/v1/chat/completions"]
    assert got.status_code == 405 and got.json()["error"]["type"] == "invalid_request_error"
    assert too_big.status_code == 413 and too_big.headers["x-farebox-request-id"].startswith("fbr_")
