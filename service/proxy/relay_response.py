"""A streamed answer sent from the request's own task, with one small task watching the client.

Starlette's StreamingResponse, on uvicorn (ASGI 2.3), runs the stream in a task of an anyio
task group beside a task listening for the client to leave: a task group, two tasks and a
turn of the event loop before the first byte goes out. `RelayResponse` sends the head and
every chunk from the task that handles the request, and starts one plain asyncio task that
waits for `http.disconnect`. If the client leaves first, that task cancels the send loop,
exactly as the task group did: the relay sees the cancellation, records the stream as
`client_disconnected` and settles what was delivered (service/proxy/stream_relay.py).

A relay that never started (the head could not be sent, or the client left first) never ran
its own `finally`: `on_unstarted` is called instead, so the upstream answer is still closed
and the charge settled at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class RelayResponse(Response):
    def __init__(
        self,
        content: AsyncGenerator[bytes, None],
        *,
        status_code: int,
        headers: Mapping[str, str],
        on_unstarted: Callable[[], None] | None = None,
    ) -> None:
        self.body_iterator = content
        self.on_unstarted = on_unstarted
        self.status_code = status_code
        self.media_type = None  # the upstream's content-type is among the headers
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        finished = left = began = False

        async def watch() -> None:
            nonlocal left
            with contextlib.suppress(Exception):  # a server that cannot say: no watching
                while (await receive())["type"] != "http.disconnect":
                    pass
                if not finished:
                    left = True
                    task.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            began = True  # from the first step of the loop below, the relay's own finally runs
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not left:
                raise
            task.uncancel()  # the client left; this request has nothing more to do
        finally:
            finished = True
            watcher.cancel()
            # A relay cancelled while its chunk was being sent is still suspended: close it now,
            # so that it settles at once rather than whenever it is collected.
            await self.body_iterator.aclose()
            if not began and self.on_unstarted is not None:
                self.on_unstarted()
