"""Calls to the upstream's files and fine-tuning endpoints, relayed to the client unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from service.errors import UpstreamError, UpstreamTimeout
from service.proxy.upstream import key_refused, response_headers
from service.runtime import Runtime

# The watcher's own calls give up sooner than a client's: it simply polls again.
WATCH_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)


class Answer:
    """The upstream's status, headers and body, read whole (these answers are small JSON)."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError("The upstream answered with a body that is not an OpenAI response.") from exc

    def response(self, request_id: str) -> Response:
        if self.status == 401:
            raise key_refused()
        headers = dict(self.headers)
        headers["x-farebox-request-id"] = request_id
        return Response(self.body, status_code=self.status, headers=headers)


async def call(
    rt: Runtime,
    method: str,
    path: str,
    *,
    query: str = "",
    client_headers: dict[str, str] | None = None,
    body: Any = None,
    content_type: str | None = None,
    timeout: aiohttp.ClientTimeout | None = None,
) -> Answer:
    """One call to the upstream (`path` is what follows /v1), read whole; errors become 502/504."""
    headers = rt.upstream.request_headers(client_headers or {}, content_type)
    if content_type is None:
        # The client's own multipart boundary must not reach the upstream; aiohttp sets its own.
        headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    options: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
    try:
        async with rt.upstream.session.request(
            method, rt.upstream.url(path, query), data=body, headers=headers, **options
        ) as upstream:
            data = await upstream.read()
            return Answer(upstream.status, response_headers(upstream.headers), data)
    except asyncio.TimeoutError as exc:
        raise UpstreamTimeout("The upstream did not answer in time.") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"The upstream could not be reached: {type(exc).__name__}.") from exc


async def relay(request: Request, rt: Runtime, method: str, path: str, *, body: bytes | None = None) -> Answer:
    """Forward the client's call (its query, headers and JSON body) to `path` upstream."""
    return await call(
        rt, method, path, query=request.url.query, client_headers=dict(request.headers), body=body,
        content_type="application/json" if body is not None else None,
    )


async def relay_stream(request: Request, rt: Runtime, path: str) -> Response:
    """Stream a download (file content) from the upstream to the client chunk by chunk."""
    headers = rt.upstream.request_headers(dict(request.headers))
    try:
        upstream = await rt.upstream.session.get(rt.upstream.url(path, request.url.query), headers=headers)
    except asyncio.TimeoutError as exc:
        raise UpstreamTimeout("The upstream did not answer in time.") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"The upstream could not be reached: {type(exc).__name__}.") from exc
    out_headers = response_headers(upstream.headers)
    out_headers["x-farebox-request-id"] = request.state.request_id
    if upstream.status != 200:
        try:
            data = await upstream.read()
        finally:
            upstream.release()
        if upstream.status == 401:
            raise key_refused()
        return Response(data, status_code=upstream.status, headers=out_headers)

    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.content.iter_chunked(64 * 1024):
                yield chunk
        finally:
            upstream.release()

    return StreamingResponse(chunks(), status_code=200, headers=out_headers)
