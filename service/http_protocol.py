"""uvicorn's httptools protocol, sending a response's head together with its first body bytes.

uvicorn writes the head of every response as soon as the app starts it, and the body in a
second write: two send() calls and, for the client, two segments to wake up for. Here the head
waits for the body's first write, or for the end of the event-loop iteration that wrote it,
whichever comes first. A complete answer goes out in one write; a stream's head still leaves as
soon as its handler waits for the upstream, so nothing is held back from a client waiting on it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_LARGE = 64 * 1024  # past this, hand the kernel two buffers rather than copy the body


class HeadHoldingTransport:
    """A connection's transport whose response heads wait briefly for the bytes that follow them."""

    __slots__ = ("_head", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if len(data) > _LARGE:
                self._transport.writelines((head, data))
            else:
                self._transport.write(head + data)
        elif data[:5] == b"HTTP/" and data[-4:] == b"\r\n\r\n":
            # Only the timing depends on recognising a head: whatever is held is written, in
            # order, by the next write, by close(), or at the end of this loop iteration.
            self._head = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._head = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HeadHoldingHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol on a HeadHoldingTransport; the rest of uvicorn's behaviour is unchanged."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(HeadHoldingTransport(transport, self.loop))  # type: ignore[arg-type]
