"""Relays an upstream SSE stream event by event, watching for the usage chunk on the way.

Events are forwarded as soon as they are complete; the usage-only chunk Farebox asked for
is removed when the client did not ask for it. Whatever happens (end, break, disconnect),
`finish` receives what was seen so the charge can be settled.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
_DONE = b"data: [DONE]"


@dataclass(slots=True)
class StreamOutcome:
    """What one relayed stream delivered."""

    status: str = "ok"  # ok | stream_broken | client_disconnected
    usage: dict[str, Any] | None = None
    model: str | None = None
    saw_done: bool = False
    events: list[bytes] = field(default_factory=list)  # every data event received, for recounting


def _split_event(buf: bytes) -> int:
    """Index just past the first complete SSE event in buf, or -1."""
    lf = buf.find(b"\n\n")
    crlf = buf.find(b"\r\n\r\n")
    if lf < 0 and crlf < 0:
        return -1
    if crlf < 0 or (0 <= lf < crlf):
        return lf + 2
    return crlf + 4


async def relay_stream(
    response: aiohttp.ClientResponse,
    *,
    strip_usage_chunk: bool,
    finish: Callable[[StreamOutcome], Awaitable[None]],
    spawn: Callable[[Awaitable[None]], object],
) -> AsyncIterator[bytes]:
    outcome = StreamOutcome()
    buf = b""
    try:
        async for data in response.content.iter_any():
            buf += data
            out: list[bytes] = []
            while True:
                end = _split_event(buf)
                if end < 0:
                    break
                event, buf = buf[:end], buf[end:]
                if _keep(event, outcome, strip_usage_chunk):
                    out.append(event)
            if out:
                yield b"".join(out) if len(out) > 1 else out[0]
        if buf:
            if _keep(buf, outcome, strip_usage_chunk):
                yield buf
        if not outcome.saw_done and outcome.usage is None:
            outcome.status = "stream_broken"
    except (asyncio.CancelledError, GeneratorExit):
        outcome.status = "client_disconnected"
        raise
    except (aiohttp.ClientError, ConnectionError, asyncio.TimeoutError):
        # The upstream broke off: the client keeps the partial stream it already has.
        outcome.status = "stream_broken"
    finally:
        response.close()
        spawn(finish(outcome))


def _keep(event: bytes, outcome: StreamOutcome, strip_usage_chunk: bool) -> bool:
    """Record what metering needs from one event; False when it must not reach the client."""
    if event.startswith(_DONE):
        outcome.saw_done = True
        return True
    outcome.events.append(event)
    if outcome.model is None and event.startswith(b"data: {"):
        try:
            outcome.model = orjson.loads(event[6:]).get("model")
        except orjson.JSONDecodeError:
            pass
    if _USAGE_OBJECT.search(event) is None:
        return True
    try:
        chunk = orjson.loads(event[event.index(b"{"):])
    except (orjson.JSONDecodeError, ValueError):
        return True
    if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
        outcome.usage = chunk["usage"]
        if strip_usage_chunk and not chunk.get("choices"):
            outcome.events.pop()
            return False
    return True
