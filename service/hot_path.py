"""The metered /v1 POSTs, dispatched without FastAPI's middleware stack and router.

Every proxied call used to pass FastAPI's telemetry check, ServerErrorMiddleware,
ExceptionMiddleware, an AsyncExitStack and the router's match over every route before it
reached `handle_inference`. None of that does anything for these three paths: they need the
request id, the size limits and the app's exception handlers, applied the way Starlette
applies them. `HotPath` does exactly that, and only that (bench/README.md, "Levers").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

Handler = Callable[[Request, Exception], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


class HotPath:
    """An ASGI app for one endpoint function, with the app's exception handlers around it.

    As in Starlette: a handled exception (any type with a handler but `Exception`) becomes
    its handler's response; anything else becomes the `Exception` (500) handler's response
    and is raised again, so that the server logs it. Nothing is sent twice: an exception
    after the response started is raised as it is.
    """

    def __init__(self, endpoint: Endpoint, handlers: Mapping[Any, Handler]) -> None:
        self.endpoint = endpoint
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        request = Request(scope, receive, send)
        try:
            response = await self.endpoint(request)
            await response(scope, receive, tracked)
        except Exception as exc:
            handler = self._handler(exc)
            if started:
                raise
            fallback = handler is None
            handler = handler or self.handlers.get(Exception) or self.handlers.get(500)
            if handler is None:
                raise
            answer = await handler(request, exc)
            await answer(scope, receive, send)
            if fallback:
                raise
            exc.__traceback__ = None  # as Starlette: a reused exception keeps no old traceback

    def _handler(self, exc: Exception) -> Handler | None:
        if isinstance(exc, HTTPException) and exc.status_code in self.handlers:
            return self.handlers[exc.status_code]
        for cls in type(exc).__mro__:
            if cls is not Exception and cls in self.handlers:
                return self.handlers[cls]
        return None
