"""Tells every replica that something cached changed (a key revoked, a team's budgets edited).

With Redis it is a pub/sub channel; embedded, the message goes straight to this process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import orjson
import structlog

log = structlog.get_logger(__name__)

Handler = Callable[[dict], Awaitable[None] | None]


class ChangeBus:
    def __init__(self, redis_client: object | None = None, channel: str = "fb:changes") -> None:
        self._redis = redis_client
        self._channel = channel
        self._handlers: list[Handler] = []
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, handler: Handler) -> None:
        self._handlers.append(handler)

    async def publish(self, message: dict) -> None:
        """Deliver locally at once (so this replica never serves stale data), then to the others."""
        await self._dispatch(message)
        if self._redis is not None:
            try:
                await self._redis.publish(self._channel, orjson.dumps(message))  # type: ignore[attr-defined]
            except Exception as exc:  # the cache TTL still bounds staleness elsewhere
                log.warning("change_bus_publish_failed", error=str(exc), message_type=message.get("type"))

    async def start(self) -> None:
        if self._redis is not None and self._task is None:
            self._task = asyncio.create_task(self._listen(), name="change-bus")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            try:
                pubsub = self._redis.pubsub()  # type: ignore[attr-defined]
                await pubsub.subscribe(self._channel)
                backoff = 0.1
                async for item in pubsub.listen():
                    if item.get("type") == "message":
                        await self._dispatch(orjson.loads(item["data"]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("change_bus_listen_failed", error=str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _dispatch(self, message: dict) -> None:
        for handler in self._handlers:
            result = handler(message)
            if asyncio.iscoroutine(result):
                await result
