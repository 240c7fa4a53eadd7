"""A pure ASGI middleware that gives every request an id, returns it, and binds it to logs."""

from __future__ import annotations

import secrets

import structlog
from service import metrics
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-farebox-request-id"


def new_request_id() -> str:
    return "fbr_" + secrets.token_hex(12)


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        raw_id = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                if not any(k == HEADER for k, _ in headers):
                    headers.append((HEADER, raw_id))
            await send(message)

        proxied = scope["path"].startswith("/v1/")
        if proxied:
            metrics.request_started()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if proxied:
                metrics.request_finished()
            structlog.contextvars.unbind_contextvars("request_id")
