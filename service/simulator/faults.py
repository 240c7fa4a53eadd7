"""Which fault a request gets: its x-sim-* headers, else queued faults, else the error rate."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from service.simulator.config import SimulatorConfig
from service.simulator.errors import invalid

KINDS_HELP = "an HTTP error status (429, 500, 503...), quota, garbage or timeout"


class SimulatedBreak(Exception):
    """Raised mid-response so the server drops the connection without finishing the body."""


@dataclass(frozen=True, slots=True)
class Fault:
    """error: a status like "429", or "quota", "garbage", "timeout".

    break_after: stream chunks sent before the connection drops (a whole body is cut halfway).
    """

    error: str | None = None
    break_after: int | None = None

    @classmethod
    def parse(cls, error: str | None, break_after: Any) -> Fault:
        if error is not None and not (error.isdigit() or error in ("quota", "garbage", "timeout")):
            raise invalid(f"x-sim-error must be {KINDS_HELP}, not {error!r}", param="x-sim-error")
        if break_after is not None:
            try:
                break_after = int(break_after)
            except (TypeError, ValueError):
                raise invalid(
                    "x-sim-break-after must be an integer", param="x-sim-break-after"
                ) from None
        return cls(error or None, break_after)


class Faults:
    """Per-request fault selection; tests queue faults for the next requests via /v1/_sim/faults."""

    def __init__(self, config: SimulatorConfig) -> None:
        self._rate = config.error_rate
        self._kinds = config.error_kinds
        self._rng = random.Random(config.seed)
        self._queue: deque[Fault] = deque()

    def queue(self, faults: list[Fault]) -> None:
        self._queue.extend(faults)

    def clear(self) -> None:
        self._queue.clear()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def take(self, headers: Headers) -> Fault | None:
        error = headers.get("x-sim-error")
        cut = headers.get("x-sim-break-after")
        if error is not None or cut is not None:
            return Fault.parse(error, cut)
        if self._queue:
            return self._queue.popleft()
        if self._rate and self._rng.random() < self._rate:
            return Fault(self._rng.choice(self._kinds))
        return None


async def cut_stream(chunks: AsyncIterator[bytes], after: int) -> AsyncIterator[bytes]:
    """Pass `after` chunks through, then break the connection before the stream ends."""
    sent = 0
    async for chunk in chunks:
        if sent >= after:
            break
        yield chunk
        sent += 1
    raise SimulatedBreak(f"stream cut after {after} chunks")


async def paced(chunks: AsyncIterator[bytes], delay_s: float) -> AsyncIterator[bytes]:
    """Each chunk after a pause, like tokens arriving from a model."""
    async for chunk in chunks:
        await asyncio.sleep(delay_s)
        yield chunk


class TruncatedBody(Response):
    """Announces the full content-length, sends half the body, then drops the connection."""

    def __init__(self, original: Response) -> None:
        self.status_code = original.status_code
        self.body = original.body
        self.background = None
        self.raw_headers = list(original.raw_headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send(
            {
                "type": "http.response.body",
                "body": self.body[: len(self.body) // 2],
                "more_body": True,
            }
        )
        raise SimulatedBreak("body cut in half")


def _is_simulated(exc: BaseException | None) -> bool:
    if isinstance(exc, SimulatedBreak):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_simulated(e) for e in exc.exceptions)
    return False


class _HideSimulatedBreaks(logging.Filter):
    """Uvicorn logs every exception that ends a response; the deliberate ones are not errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and _is_simulated(record.exc_info[1]))


def quiet_simulated_breaks() -> None:
    """Install the log filter on uvicorn's error logger once per process."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideSimulatedBreaks) for f in logger.filters):
        logger.addFilter(_HideSimulatedBreaks())
