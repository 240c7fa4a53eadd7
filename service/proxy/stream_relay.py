"""Relays an upstream SSE stream event by event, watching for the usage chunk on the way.

Events are forwarded as soon as they are complete, the first one alone before the rest of
what arrived with it is looked at (it sets the time to first byte). The usage-only chunk
Farebox asked for is removed when the client did not ask for it. Whatever happens (end, break, disconnect),
`finish` receives what was seen so the charge can be settled.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from service.proxy.upstream_pool import UpstreamAnswer

_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
_DONE = b"data: [DONE]"
_BROKEN_EVENT = (
    b'data: {"error": {"message": "The upstream stream broke off before it was complete; you '
    b'are billed only for the tokens delivered.", "type": "server_error", "param": null, '
    b'"code": "upstream_stream_broken"}}\n\n'
)


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
    response: UpstreamAnswer,
    *,
    strip_usage_chunk: bool,
    finish: Callable[[StreamOutcome], Awaitable[None]],
    spawn: Callable[[Awaitable[None]], object],
) -> AsyncGenerator[bytes, None]:
    outcome = StreamOutcome()
    settled = False

    def settle_once() -> None:
        nonlocal settled
        if not settled:
            settled = True
            response.close()
            spawn(finish(outcome))

    try:
        buf = b""
        first = True
        try:
            async for data in response.iter_chunks():
                buf += data
                out: list[bytes] = []
                while True:
                    end = _split_event(buf)
                    if end < 0:
                        break
                    event, buf = buf[:end], buf[end:]
                    if _keep(event, outcome, strip_usage_chunk):
                        if first:  # the first event leaves before the rest are looked at
                            first = False
                            yield event
                        else:
                            out.append(event)
                if out:
                    yield b"".join(out) if len(out) > 1 else out[0]
            if buf and _keep(buf, outcome, strip_usage_chunk):
                yield buf
            if not outcome.saw_done and outcome.usage is None:
                outcome.status = "stream_broken"
        except (ConnectionError, asyncio.TimeoutError):
            outcome.status = "stream_broken"
        if outcome.status == "stream_broken":
            # The client keeps what it received and learns the stream is incomplete the way
            # the SDKs understand: an OpenAI error event (they raise APIError on it).
            settle_once()
            yield _BROKEN_EVENT
    except (asyncio.CancelledError, GeneratorExit):
        if outcome.status == "ok":
            outcome.status = "client_disconnected"
        raise
    finally:
        settle_once()


def never_relayed(
    response: UpstreamAnswer,
    *,
    strip_usage_chunk: bool,
    finish: Callable[[StreamOutcome], Awaitable[None]],
    spawn: Callable[[Awaitable[None]], object],
) -> None:
    """For a relay that never started (the client left, or its response could not begin): the
    answer is closed and settled on what had arrived of it, as a relay cut off would be (the
    upstream bills what it generated, the usage chunk included when it came)."""
    outcome = StreamOutcome(status="client_disconnected")
    buf = response.take_arrived()
    while (end := _split_event(buf)) >= 0:
        event, buf = buf[:end], buf[end:]
        _keep(event, outcome, strip_usage_chunk)
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
