"""The server protocol sends a complete answer in one write, and never holds a stream's head back."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any, ClassVar

import pytest
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.http_protocol import HeadHoldingHttpToolsProtocol, HeadHoldingTransport
from service.simulator.server import serve_in_thread

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"


class FakeTransport:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def write(self, data: bytes) -> None:
        self.calls.append(("write", bytes(data)))

    def writelines(self, chunks: Any) -> None:
        self.calls.append(("writelines", [bytes(c) for c in chunks]))

    def close(self) -> None:
        self.calls.append(("close", None))

    def abort(self) -> None:
        self.calls.append(("abort", None))

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def test_a_head_and_its_body_written_in_one_iteration_go_out_as_one_write() -> None:
    fake = FakeTransport()
    t = HeadHoldingTransport(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(HEAD)
    assert fake.calls == []
    t.write(b"hello")
    assert fake.calls == [("write", HEAD + b"hello")]
    await asyncio.sleep(0)  # the scheduled flush finds nothing left to send
    t.write(b"more")
    assert fake.calls == [("write", HEAD + b"hello"), ("write", b"more")]


async def test_a_head_alone_leaves_at_the_end_of_the_loop_iteration() -> None:
    fake = FakeTransport()
    t = HeadHoldingTransport(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(HEAD)
    await asyncio.sleep(0)
    assert fake.calls == [("write", HEAD)]
    t.write(b"hello")
    assert fake.calls == [("write", HEAD), ("write", b"hello")]


async def test_close_sends_a_held_head_first_and_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    fake = FakeTransport()
    t = HeadHoldingTransport(fake, loop)  # type: ignore[arg-type]
    t.write(HEAD)
    t.close()
    assert fake.calls == [("write", HEAD), ("close", None)]

    fake = FakeTransport()
    t = HeadHoldingTransport(fake, loop)  # type: ignore[arg-type]
    t.write(HEAD)
    t.abort()
    await asyncio.sleep(0)
    assert fake.calls == [("abort", None)]


async def test_bodies_pass_straight_through_and_a_large_one_is_not_copied() -> None:
    fake = FakeTransport()
    t = HeadHoldingTransport(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"data: {}\n\n")
    assert fake.calls == [("write", b"data: {}\n\n")]
    big = b"x" * (256 * 1024)
    t.write(HEAD)
    t.write(big)
    assert fake.calls[1] == ("writelines", [HEAD, big])
    assert t.get_extra_info("peername") == "info:peername"


class _Recording:
    """Wraps the real transport under the protocol's own, counting the writes that reach it."""

    writes: ClassVar[list[bytes]] = []

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        _Recording.writes.append(bytes(data))
        self._transport.write(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class RecordingHeadHolding(HeadHoldingHttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_Recording(transport))  # type: ignore[arg-type]


class RecordingPlain(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_Recording(transport))  # type: ignore[arg-type]


release = threading.Event()


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            event = (await receive())["type"].rsplit(".", 1)[1]
            await send({"type": f"lifespan.{event}.complete"})
            if event == "shutdown":
                return
    await receive()
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await asyncio.to_thread(release.wait, 10)  # the client must see the head before this ends
        await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"ok":true}'})


def _get(sock: socket.socket, path: str) -> None:
    sock.sendall(f"GET {path} HTTP/1.1\r\nhost: t\r\n\r\n".encode())


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    got = b""
    while marker not in got:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before {marker!r}; got {got!r}"
        got += chunk
    return got


@pytest.mark.parametrize(("protocol", "writes"), [(RecordingHeadHolding, 1), (RecordingPlain, 2)])
def test_a_complete_answer_reaches_the_socket_in_one_write(protocol: type, writes: int) -> None:
    with serve_in_thread(app, probe_path="/probe", http=protocol) as root:
        port = int(root.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            _Recording.writes.clear()
            _get(sock, "/answer")
            answer = _read_until(sock, b'{"ok":true}')
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert len(_Recording.writes) == writes  # the plain protocol shows what this test can tell apart
    assert b"".join(_Recording.writes) == answer


def test_a_streams_head_is_not_held_while_its_handler_waits() -> None:
    release.clear()
    with serve_in_thread(app, probe_path="/probe", http=RecordingHeadHolding) as root:
        port = int(root.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            try:
                head = _read_until_head(sock)
            finally:
                release.set()
            rest = _read_until(sock, b"0\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"text/event-stream" in head
    assert b"data: one" in rest


def _read_until_head(sock: socket.socket) -> bytes:
    _get(sock, "/stream")
    return _read_until(sock, b"\r\n\r\n")
