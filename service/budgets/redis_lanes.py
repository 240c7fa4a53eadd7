"""The request path's two Redis calls, reserve and settle, on connections kept for them.

Through `Redis.evalsha`, one call costs 87-99 µs of client CPU on the benchmark machine:
a pool checkout that probes the socket for stray data, a retry wrapper, instrumentation
hooks, and argument encoding with a type check per argument. Here a call takes an idle
connection of its own (made from the client's pool settings: the same host, database,
credentials and TLS; the socket timeout bounds the whole call), writes the EVALSHA packed in
one piece and reads its one reply: 46-48 µs (`.venv/bin/python bench/redis_call.py`).
redis-py still connects, authenticates, parses and maps error replies to exceptions.

A connection that failed is closed and never reused; a failure of the connection itself
also closes the idle ones, which are then most likely dead too (a restarted Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = bytes | str | int


def pack(args: Sequence[Arg]) -> bytes:
    """One command in RESP, as redis-py encodes it: str as UTF-8, int in decimal."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            raw = arg
        elif isinstance(arg, str):
            raw = arg.encode()
        elif isinstance(arg, int) and not isinstance(arg, bool):
            raw = b"%d" % arg
        else:
            raise TypeError(f"a Redis argument must be bytes, str or int, not {type(arg).__name__}")
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


class ScriptLanes:
    """Connections for one request-path command at a time each; at most `keep` stay idle.

    As many are open as calls are in flight, up to the client pool's `max_connections`; past
    that a call fails as redis-py's pool fails it ("Too many connections"), a 503 upstream.
    """

    def __init__(self, client: redis.Redis, keep: int = 64) -> None:
        pool = client.connection_pool
        # The client's socket timeout bounds each whole call here instead: redis-py would run
        # every send under asyncio.wait_for, a task of its own on Python 3.11 (10 µs a call).
        self._timeout: float | None = pool.connection_kwargs.get("socket_timeout")
        self._settings = {**pool.connection_kwargs, "socket_timeout": None}
        self._connection_class = pool.connection_class
        self._max = pool.max_connections
        self._keep = keep
        self._idle: list[AbstractConnection] = []
        self._open = 0

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def open(self) -> int:
        return self._open

    async def call(self, packed: bytes) -> Any:
        """Send one packed command and return its reply; error replies raise (ResponseError)."""
        conn = self._take()
        try:
            try:
                async with asyncio.timeout(self._timeout):
                    await conn.send_packed_command(packed, check_health=False)
                    reply = await conn.read_response()
            except TimeoutError as exc:  # asyncio's, an OSError: not to be taken for a dead socket
                raise RedisTimeoutError(f"Redis did not answer within {self._timeout} s") from exc
        except ResponseError:
            await self._give_back(conn)  # an error reply was read whole: the connection is in step
            raise
        except BaseException as exc:
            # Not in step any more (or gone): close it. redis-py has already closed it on a
            # socket error or a cancelled read; closing twice is harmless.
            await self._discard(conn)
            if isinstance(exc, (OSError, RedisConnectionError)):  # the socket failed, not the server
                await self.close()
            raise
        await self._give_back(conn)
        return reply

    def _take(self) -> AbstractConnection:
        if self._idle:
            return self._idle.pop()
        if self._open >= self._max:
            raise RedisConnectionError("Too many connections")
        self._open += 1
        return self._connection_class(**self._settings)

    async def _give_back(self, conn: AbstractConnection) -> None:
        if len(self._idle) < self._keep:
            self._idle.append(conn)
        else:
            await self._discard(conn)

    async def _discard(self, conn: AbstractConnection) -> None:
        self._open -= 1
        with contextlib.suppress(Exception):
            await conn.disconnect(nowait=True)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._discard(conn)
