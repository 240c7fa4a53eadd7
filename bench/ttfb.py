"""Time to the first body byte of a streamed answer, over one keep-alive connection at concurrency 1.

A raw HTTP/1.1 client on asyncio streams: it timestamps the read that delivers the first byte
of the body (for chunked answers, the first byte of chunk data, not the size line), then reads
the answer to its end so the connection can carry the next request.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from loadgen import percentile

WARMUP = 20  # requests sent before timing starts, each way


@dataclass
class TtfbResult:
    requests: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    total_p50_ms: float  # the whole answer, for scale: TTFB well below it means no buffering

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class _Reader:
    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.buf = bytearray()
        self.first_body_at: float | None = None

    async def fill(self) -> None:
        data = await self.reader.read(65536)
        if not data:
            raise ConnectionError("the server closed the connection mid-answer")
        self.buf += data

    async def line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            await self.fill()
        out = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return out

    async def take(self, n: int) -> None:
        """Consume n body bytes, timestamping the first one's arrival."""
        while n > 0:
            if not self.buf:
                await self.fill()
            if self.first_body_at is None:
                self.first_body_at = time.perf_counter()
            k = min(n, len(self.buf))
            del self.buf[:k]
            n -= k


async def _one(
    reader: _Reader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[float, float]:
    reader.first_body_at = None
    t0 = time.perf_counter()
    writer.write(request)
    status = await reader.line()
    if b" 200 " not in status + b" ":
        raise RuntimeError(f"unexpected answer: {status!r}")
    length, chunked = 0, False
    while header := await reader.line():
        name, _, value = header.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while size := int((await reader.line()).split(b";")[0], 16):
            await reader.take(size)
            await reader.line()
        while await reader.line():  # trailers end with an empty line
            pass
    else:
        await reader.take(length)
    done = time.perf_counter()
    first = reader.first_body_at if reader.first_body_at is not None else done
    return first - t0, done - t0


async def sequence(
    url: str, body: bytes, auth: str, n: int, *, stream: bool = False
) -> tuple[list[float], list[float]]:
    """n requests one after another on one keep-alive connection: ms to the first body byte, and
    to the whole answer, for each (`stream` asks the bench upstream for its SSE answer)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    extra = "X-Bench-Stream: 1\r\nAccept: text/event-stream\r\n" if stream else ""
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: {auth}\r\n"
        f"Content-Type: application/json\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    raw_reader, writer = await asyncio.open_connection(host, port)
    reader = _Reader(raw_reader)
    firsts: list[float] = []
    totals: list[float] = []
    try:
        for _ in range(n):
            first, total = await _one(reader, writer, request)
            firsts.append(first * 1000)
            totals.append(total * 1000)
    finally:
        writer.close()
    return firsts, totals


def measure(url: str, body: bytes, auth: str, requests: int, warmup: int = WARMUP) -> TtfbResult:
    return asyncio.run(_measure(url, body, auth, requests, warmup))


async def _measure(url: str, body: bytes, auth: str, requests: int, warmup: int) -> TtfbResult:
    firsts, totals = await sequence(url, body, auth, warmup + requests, stream=True)
    del firsts[:warmup], totals[:warmup]
    firsts.sort()
    totals.sort()
    return TtfbResult(
        requests=len(firsts),
        p50_ms=percentile(firsts, 50),
        p90_ms=percentile(firsts, 90),
        p99_ms=percentile(firsts, 99),
        mean_ms=sum(firsts) / len(firsts),
        total_p50_ms=percentile(totals, 50),
    )
