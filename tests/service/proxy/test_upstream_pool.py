"""UpstreamPool, the hot path's HTTP/1.1 client, against real sockets that misbehave on purpose.

Each test starts a TCP (or TLS) server in the test's loop that reads requests the way an HTTP
server does and answers with bytes the test scripts: keep-alive, chunked, gzip, closing early,
garbage, silence, a 100 Continue first.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trustme
from hypothesis import HealthCheck, given, settings, strategies as st

from service.proxy import upstream_pool
from service.proxy.upstream import Upstream
from service.proxy.upstream_pool import (
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamPool,
    UpstreamProtocolError,
)

Handler = Callable[["Peer", bytes], Awaitable[bool]]  # returns False to close the connection


class Peer:
    """One accepted connection: its requests, and a way to answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def request(self) -> bytes | None:
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return head + await self.reader.readexactly(length)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.peers: list[Peer] = []

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        peer = Peer(reader, writer)
        self.peers.append(peer)
        try:
            while True:
                request = await peer.request()
                if request is None:
                    break
                self.requests.append(request)
                if not await self.handler(peer, request):
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for peer in self.peers:
            peer.writer.close()


def answer(body: bytes, *, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: application/json\r\nx-request-id: req_1\r\n"
        + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )


def chunked(parts: list[bytes], extra: bytes = b"") -> bytes:
    out = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n" + extra + b"\r\n"
    for part in filter(None, parts):  # an empty chunk would end the body
        out += b"%x\r\n%s\r\n" % (len(part), part)
    return out + b"0\r\n\r\n"


def replies(body: bytes) -> Handler:
    """A server that answers every request 200 with `body`, keeping the connection."""

    async def ok(peer: Peer, request: bytes) -> bool:
        await peer.send(answer(body))
        return True

    return ok


def tls(*names: str) -> tuple[trustme.CA, ssl.SSLContext, ssl.SSLContext]:
    """A private CA, a server context with a certificate for `names`, a client context trusting it."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return ca, server_ctx, client_ctx


async def serving(handler: Handler, **kw: object) -> tuple[Server, UpstreamPool]:
    server = Server(handler)
    url = await server.start()
    return server, UpstreamPool(url, **kw)  # type: ignore[arg-type]


async def post(pool: UpstreamPool, body: bytes = b"{}") -> tuple[int, dict[str, str], bytes]:
    reply = await pool.request(pool.head("POST", "/chat/completions", "", [], len(body)), body)
    try:
        return reply.status, reply.headers, await reply.read()
    finally:
        reply.release()


async def test_connections_are_kept_alive_and_reused() -> None:
    async def sized(peer: Peer, request: bytes) -> bool:
        await peer.send(answer(b'{"n": %d}' % len(request)))
        return True

    server, pool = await serving(sized)
    for _ in range(5):
        status, headers, body = await post(pool, b'{"x": 1}')
        assert status == 200 and body.startswith(b'{"n": ')
        assert headers["content-type"] == "application/json" and headers["x-request-id"] == "req_1"
    assert server.connections == 1
    assert pool.connections == (1, 1)
    head = server.requests[0].split(b"\r\n\r\n")[0]
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nHost: 127.0.0.1:" in head and b"\r\nContent-Length: 8" in head
    await pool.close()
    await server.stop()


async def test_chunked_gzip_and_deflate_bodies_are_decoded() -> None:
    payload = b"data: " + b"x" * 5000 + b"\n\n"
    compressed = gzip.compress(payload)
    deflated = zlib.compress(payload)
    answers = iter([
        chunked([compressed[:100], compressed[100:]], b"Content-Encoding: gzip\r\n"),
        answer(deflated, extra=b"Content-Encoding: deflate\r\n"),
        chunked([b"data: 1\n\n", b"data: 2\n\n"]),
    ])

    async def scripted(peer: Peer, request: bytes) -> bool:
        await peer.send(next(answers))
        return True

    server, pool = await serving(scripted)
    assert (await post(pool))[2] == payload
    assert (await post(pool))[2] == payload
    assert (await post(pool))[2] == b"data: 1\n\ndata: 2\n\n"
    assert server.connections == 1
    await pool.close()
    await server.stop()


async def test_a_body_that_ends_with_the_connection_is_read_whole_and_the_connection_dropped() -> None:
    async def until_close(peer: Peer, request: bytes) -> bool:
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"whole\": true}")
        return False

    server, pool = await serving(until_close)
    assert (await post(pool))[2] == b'{"whole": true}'
    assert (await post(pool))[2] == b'{"whole": true}'
    assert server.connections == 2
    assert pool.connections == (0, 0)
    await pool.close()
    await server.stop()


async def test_connection_close_from_the_upstream_is_respected() -> None:
    async def close_after(peer: Peer, request: bytes) -> bool:
        await peer.send(answer(b"{}", extra=b"Connection: close\r\n"))
        return False

    server, pool = await serving(close_after)
    for _ in range(3):
        assert (await post(pool))[0] == 200
    assert server.connections == 3 and pool.connections == (0, 0)
    await pool.close()
    await server.stop()


async def test_an_idle_connection_the_upstream_closed_is_not_used_again() -> None:
    async def one_each(peer: Peer, request: bytes) -> bool:
        await peer.send(answer(b"{}"))
        return False  # closes the kept-alive connection right after answering

    server, pool = await serving(one_each)
    assert (await post(pool))[0] == 200
    await asyncio.sleep(0.05)  # the close arrives while the connection is idle
    assert pool.connections == (0, 0)
    assert (await post(pool))[0] == 200
    assert server.connections == 2
    await pool.close()
    await server.stop()


async def test_idle_connections_expire_after_keepalive() -> None:
    server, pool = await serving(replies(b"{}"), keepalive_s=0.05)
    await post(pool)
    await asyncio.sleep(0.1)
    await post(pool)
    assert server.connections == 2
    assert pool.connections == (1, 1)
    await pool.close()
    await server.stop()


async def test_a_connection_cut_mid_body_fails_the_read_and_is_not_reused() -> None:
    async def cut(peer: Peer, request: bytes) -> bool:
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 40)
        return False

    server, pool = await serving(cut)
    reply = await pool.request(pool.head("POST", "/x", "", [], 2), b"{}")
    got = b""
    with pytest.raises(UpstreamClosed):
        async for chunk in reply.iter_chunks():
            got += chunk
    reply.release()
    assert got == b"x" * 40
    assert pool.connections == (0, 0)
    await pool.close()
    await server.stop()


async def test_garbage_is_a_protocol_error() -> None:
    async def garbage(peer: Peer, request: bytes) -> bool:
        await peer.send(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
        return True

    server, pool = await serving(garbage)
    with pytest.raises(UpstreamProtocolError):
        await post(pool)
    assert pool.connections == (0, 0)
    await pool.close()
    await server.stop()


async def test_invalid_gzip_is_a_protocol_error() -> None:
    async def bad_gzip(peer: Peer, request: bytes) -> bool:
        await peer.send(answer(b"not gzip at all", extra=b"Content-Encoding: gzip\r\n"))
        return True

    server, pool = await serving(bad_gzip)
    with pytest.raises(UpstreamProtocolError):
        await post(pool)
    await pool.close()
    await server.stop()


async def test_an_interim_100_continue_is_skipped() -> None:
    async def cont(peer: Peer, request: bytes) -> bool:
        await peer.send(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b'{"final": 1}'))
        return True

    server, pool = await serving(cont)
    status, headers, body = await post(pool)
    assert (status, body) == (200, b'{"final": 1}')
    assert (await post(pool))[2] == b'{"final": 1}'
    assert server.connections == 1
    await pool.close()
    await server.stop()


async def test_total_timeout_covers_a_silent_upstream_and_the_connection_is_closed() -> None:
    async def silent(peer: Peer, request: bytes) -> bool:
        await asyncio.sleep(5)
        return False

    server, pool = await serving(silent, total_timeout_s=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(asyncio.TimeoutError):
        await post(pool)
    assert 0.15 < loop.time() - started < 1.0
    assert pool.connections == (0, 0)
    await pool.close()
    await server.stop()


async def test_total_timeout_covers_a_stream_that_stalls() -> None:
    async def stall(peer: Peer, request: bytes) -> bool:
        await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await asyncio.sleep(5)
        return False

    server, pool = await serving(stall, total_timeout_s=0.3)
    reply = await pool.request(pool.head("POST", "/x", "", [], 0), b"")
    chunks = []
    with pytest.raises(asyncio.TimeoutError):
        async for chunk in reply.iter_chunks():
            chunks.append(chunk)
    reply.release()
    assert chunks == [b"hello"]
    await pool.close()
    await server.stop()


async def test_refused_and_tls_failures_are_connect_errors() -> None:
    server = Server(lambda peer, request: asyncio.sleep(0, False))  # type: ignore[arg-type, return-value]
    url = await server.start()
    await server.stop()
    await asyncio.sleep(0.05)
    pool = UpstreamPool(url)
    with pytest.raises(UpstreamConnectError, match="ConnectionRefusedError"):
        await post(pool)
    assert pool.connections == (0, 0)


async def test_a_tls_handshake_that_never_finishes_hits_the_connect_timeout() -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(4096):  # the client's hello, never answered, until it gives up
            pass
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = UpstreamPool(f"https://127.0.0.1:{port}/v1", connect_timeout_s=0.2)
    with pytest.raises(asyncio.TimeoutError):
        await post(pool)
    assert pool.connections == (0, 0)
    server.close()


async def test_tls_checks_the_certificate_and_host_name() -> None:
    _, server_ctx, client_ctx = tls("localhost", "127.0.0.1")

    server = Server(replies(b'{"tls": true}'))
    url = await server.start(server_ctx)
    pool = UpstreamPool(url, ssl_context=client_ctx)
    assert (await post(pool))[2] == b'{"tls": true}'
    assert (await post(pool))[2] == b'{"tls": true}'
    assert server.connections == 1
    await pool.close()

    untrusted = UpstreamPool(url)  # the system's trust store does not know this CA
    with pytest.raises(UpstreamConnectError, match="SSLCertVerificationError"):
        await post(untrusted)
    server2 = Server(replies(b'{"tls": true}'))
    _, ctx2, _ = tls("elsewhere.example")
    wrong_name = UpstreamPool(await server2.start(ctx2), ssl_context=client_ctx)
    with pytest.raises(UpstreamConnectError):
        await post(wrong_name)
    await server.stop()
    await server2.stop()


async def test_the_pool_never_opens_more_than_its_size_and_serves_everyone() -> None:
    active = 0
    most = 0

    async def slow(peer: Peer, request: bytes) -> bool:
        nonlocal active, most
        active += 1
        most = max(most, active)
        await asyncio.sleep(0.02)
        active -= 1
        await peer.send(answer(b"{}"))
        return True

    server, pool = await serving(slow, size=2)
    results = await asyncio.gather(*(post(pool) for _ in range(12)))
    assert [r[0] for r in results] == [200] * 12
    assert server.connections == 2 and most == 2
    assert pool.connections == (2, 2)
    await pool.close()
    await server.stop()


async def test_waiting_for_a_free_connection_counts_against_the_total_timeout() -> None:
    async def slow(peer: Peer, request: bytes) -> bool:
        await asyncio.sleep(0.5)
        await peer.send(answer(b"{}"))
        return True

    server, pool = await serving(slow, size=1, total_timeout_s=0.2)
    first = asyncio.ensure_future(post(pool))
    await asyncio.sleep(0.01)
    with pytest.raises(asyncio.TimeoutError):
        await post(pool)
    with pytest.raises(asyncio.TimeoutError):
        await first
    assert pool.connections == (0, 0)
    await pool.close()
    await server.stop()


async def test_a_request_cancelled_while_waiting_closes_its_connection() -> None:
    async def slow(peer: Peer, request: bytes) -> bool:
        await asyncio.sleep(0.3)
        await peer.send(answer(b"{}"))
        return True

    server, pool = await serving(slow)
    task = asyncio.ensure_future(post(pool))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.connections == (0, 0)
    assert (await post(pool))[0] == 200  # a new connection: the old one's answer is never misread
    await pool.close()
    await server.stop()


async def test_an_answer_released_before_its_end_closes_the_connection() -> None:
    async def halting(peer: Peer, request: bytes) -> bool:
        whole = answer(b"y" * 10_000)
        await peer.send(whole[:5000])
        await asyncio.sleep(0.1)
        await peer.send(whole[5000:])
        return True

    server, pool = await serving(halting)
    reply = await pool.request(pool.head("POST", "/x", "", [], 0), b"")
    reply.release()
    reply.release()  # idempotent
    assert pool.connections == (0, 0)
    assert (await post(pool))[2] == b"y" * 10_000
    assert server.connections == 2
    await pool.close()
    await server.stop()


async def test_a_large_body_pauses_reading_until_the_reader_catches_up(monkeypatch: pytest.MonkeyPatch) -> None:
    pauses = []
    pause = upstream_pool._Connection.pause

    def counted(conn: upstream_pool._Connection) -> None:
        pauses.append(conn.paused)
        pause(conn)

    monkeypatch.setattr(upstream_pool._Connection, "pause", counted)
    size = 8 * upstream_pool.PAUSE_AT
    body = bytes(range(256)) * (size // 256)

    async def big(peer: Peer, request: bytes) -> bool:
        await peer.send(answer(body))
        return True

    server, pool = await serving(big)
    reply = await pool.request(pool.head("POST", "/x", "", [], 0), b"")
    got = bytearray()
    most_held = 0
    async for chunk in reply.iter_chunks():
        got += chunk
        most_held = max(most_held, len(chunk))
        await asyncio.sleep(0.01)  # a slow client
    reply.release()
    assert bytes(got) == body
    assert False in pauses  # reading was paused (from running) at least once
    assert most_held < 2 * upstream_pool.PAUSE_AT  # not the whole 8 MiB held at once
    assert pool.connections == (1, 1)
    await pool.close()
    await server.stop()


async def test_close_refuses_new_requests_and_wakes_waiters() -> None:
    async def slow(peer: Peer, request: bytes) -> bool:
        await asyncio.sleep(0.2)
        await peer.send(answer(b"{}"))
        return True

    server, pool = await serving(slow, size=1)
    first = asyncio.ensure_future(post(pool))
    await asyncio.sleep(0.01)
    waiting = asyncio.ensure_future(post(pool))
    await asyncio.sleep(0.01)
    await pool.close()
    with pytest.raises(UpstreamClosed):
        await waiting
    assert (await first)[0] == 200  # in flight when the pool closed: finished, then closed
    assert pool.connections == (0, 0)
    with pytest.raises(UpstreamClosed):
        await post(pool)
    await server.stop()


async def test_upstream_relays_client_headers_minus_credentials_and_hop_by_hop() -> None:
    server = Server(replies(b"{}"))
    url = await server.start()
    upstream = Upstream(url, "sk-upstream", organization="org-1")
    client = [
        (b"host", b"farebox.local"), (b"authorization", b"Bearer fbk_team"), (b"content-type", b"text/plain"),
        (b"content-length", b"2"), (b"connection", b"keep-alive"), (b"x-farebox-debug", b"1"),
        (b"openai-beta", b"assistants=v2"), (b"cookie", b"a=b"), (b"user-agent", b"OpenAI/Python 1.0"),
    ]
    reply = await upstream.post_json("/chat/completions", "a=1", b"{}", client)
    await reply.read()
    reply.release()
    head = server.requests[0].split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0] == b"POST /v1/chat/completions?a=1 HTTP/1.1"
    lines = [line.lower() for line in head[1:]]
    assert b"authorization: bearer sk-upstream" in lines and b"bearer fbk_team" not in b"".join(lines)
    assert b"content-type: application/json" in lines and b"content-type: text/plain" not in lines
    assert b"openai-organization: org-1" in lines and b"openai-beta: assistants=v2" in lines
    assert b"user-agent: openai/python 1.0" in lines
    assert not any(line.startswith((b"x-farebox", b"cookie", b"connection", b"host: farebox")) for line in lines)
    assert sum(line.startswith(b"content-length") for line in lines) == 1
    await upstream.close()
    await server.stop()


def test_a_key_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError):
        Upstream("http://127.0.0.1:1/v1", "sk-x\r\nX-Injected: 1")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    parts=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=1, max_value=4000), max_size=12),
    gzipped=st.booleans(),
)
def test_any_split_of_a_chunked_answer_reads_back_exactly(parts: list[bytes], cuts: list[int], gzipped: bool) -> None:
    """However the bytes arrive (split anywhere, several answers on one connection), the body
    read is the body sent, and the connection is reused."""
    body = b"".join(parts)
    if gzipped:
        data = gzip.compress(body)
        parts = [data[i:i + 97] for i in range(0, len(data), 97)]
    wire = chunked(parts, b"Content-Encoding: gzip\r\n" if gzipped else b"")

    async def scenario() -> None:
        async def split(peer: Peer, request: bytes) -> bool:
            at = 0
            for cut in sorted(set(c % len(wire) for c in cuts)):
                await peer.send(wire[at:cut])
                at = cut
                await asyncio.sleep(0)
            await peer.send(wire[at:])
            return True

        server, pool = await serving(split)
        for _ in range(2):
            assert (await post(pool))[2] == body
        assert server.connections == 1
        await pool.close()
        await server.stop()

    asyncio.run(scenario())


async def test_bytes_after_a_complete_answer_make_the_connection_unusable() -> None:
    async def twice(peer: Peer, request: bytes) -> bool:
        await peer.send(answer(b'{"a": 1}') + answer(b'{"b": 2}'))  # one request, two answers
        return True

    server, pool = await serving(twice)
    assert (await post(pool))[2] == b'{"a": 1}'
    assert (await post(pool))[2] == b'{"a": 1}'  # never the stray second answer
    assert server.connections == 2
    await pool.close()
    await server.stop()


async def test_raw_deflate_is_decoded_and_truncated_gzip_is_an_error() -> None:
    payload = b'{"choices": []}' * 50
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw_deflate = raw.compress(payload) + raw.flush()
    answers = iter([
        answer(raw_deflate, extra=b"Content-Encoding: deflate\r\n"),
        answer(gzip.compress(payload)[:-12], extra=b"Content-Encoding: gzip\r\n"),
    ])

    async def scripted(peer: Peer, request: bytes) -> bool:
        await peer.send(next(answers))
        return True

    server, pool = await serving(scripted)
    assert (await post(pool))[2] == payload
    with pytest.raises(UpstreamProtocolError, match="ends before its end"):
        await post(pool)
    await pool.close()
    await server.stop()


async def test_a_connection_paused_as_its_answer_ended_reads_again_when_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream_pool, "PAUSE_AT", 1000)  # the whole answer arrives in one read
    monkeypatch.setattr(upstream_pool, "RESUME_AT", 10)

    server, pool = await serving(replies(b"z" * 1500), total_timeout_s=2.0)
    reply = await pool.request(pool.head("POST", "/x", "", [], 0), b"")
    await asyncio.sleep(0.05)
    assert reply._complete and reply._conn.paused  # a slow reader's stream, already complete
    reply.release()  # e.g. the client left: the answer is complete, the connection reusable
    assert (await post(pool))[2] == b"z" * 1500  # read, not left hanging on a paused socket
    assert server.connections == 1
    await pool.close()
    await server.stop()


async def test_cancelling_connects_at_any_moment_never_miscounts() -> None:
    _, server_ctx, client_ctx = tls("127.0.0.1")

    server = Server(replies(b"{}"))
    pool = UpstreamPool(await server.start(server_ctx), ssl_context=client_ctx, size=3)
    for attempt in range(40):
        task = asyncio.ensure_future(post(pool))
        await asyncio.sleep(attempt * 0.0002)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        await asyncio.sleep(0.005)
        open_, idle = pool.connections
        assert open_ == idle  # nothing in flight: every connection counted is in the pool
    assert (await asyncio.gather(*(post(pool) for _ in range(6))))[5][0] == 200
    assert pool.connections[0] <= 3
    await pool.close()
    await server.stop()


async def test_a_connection_that_dies_under_an_unreleased_answer_frees_its_slot() -> None:
    async def stall(peer: Peer, request: bytes) -> bool:
        await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await asyncio.sleep(5)
        return False

    server, pool = await serving(stall, total_timeout_s=0.2, size=1)
    reply = await pool.request(pool.head("POST", "/x", "", [], 0), b"")  # never read nor released
    await asyncio.sleep(0.4)
    assert pool.connections == (0, 0)  # the timeout closed it, and the pool counted it out
    reply.release()
    assert pool.connections == (0, 0)
    await pool.close()
    await server.stop()


async def test_releasing_an_answer_wakes_its_waiting_reader() -> None:
    async def stall(peer: Peer, request: bytes) -> bool:
        await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await asyncio.sleep(5)
        return False

    server, pool = await serving(stall)
    reply = await pool.request(pool.head("POST", "/x", "", [], 0), b"")

    async def read_all() -> bytes:
        return await reply.read()

    reader = asyncio.ensure_future(read_all())
    await asyncio.sleep(0.05)
    reply.release()
    with pytest.raises(UpstreamClosed):
        await asyncio.wait_for(reader, 1.0)
    await pool.close()
    await server.stop()


async def test_through_a_connect_proxy_tls_runs_inside_the_tunnel_and_tunnels_are_reused() -> None:
    from tests.connect_proxy import ConnectProxy

    _, server_ctx, client_ctx = tls("localhost")

    server = Server(replies(b'{"via": "tunnel"}'))
    url = (await server.start(server_ctx)).replace("127.0.0.1", "localhost")
    proxy = ConnectProxy("team", "s3cr:t")
    await proxy.start()
    pool = UpstreamPool(url, ssl_context=client_ctx, proxy=upstream_pool.Proxy.from_url(proxy.url("team", "s3cr%3At")))
    for _ in range(3):
        assert (await post(pool))[2] == b'{"via": "tunnel"}'
    assert proxy.tunnels == [f"localhost:{url.split(':')[2].split('/')[0]}"]  # one tunnel, kept alive
    assert server.connections == 1
    assert "s3cr" not in repr(pool.proxy)
    await pool.close()

    wrong = UpstreamPool(url, ssl_context=client_ctx, proxy=upstream_pool.Proxy.from_url(proxy.url("team", "nope")))
    with pytest.raises(UpstreamConnectError, match="407.*credentials"):
        await post(wrong)
    assert wrong.connections == (0, 0)
    await proxy.stop()
    await server.stop()


def test_a_proxy_url_must_be_plain_http_with_a_port_and_errors_never_repeat_it() -> None:
    for bad in (
        "https://proxy:3128", "http://proxy", "socks5://proxy:1080", "http://u:pa#TOPSECRET@proxy:3128",
        "http://egress:1234/x@proxy:3128", "http://u:p?TOPSECRET@proxy:3128", "http://a%3Ab:TOPSECRET@proxy:3128",
        "http://u:TOP%0D%0ASECRET@proxy:3128",
    ):
        with pytest.raises(ValueError) as refused:
            upstream_pool.Proxy.from_url(bad)
        message = str(refused.value)
        assert "TOPSECRET" not in message and "'pa" not in message and "1234" not in message
    proxy = upstream_pool.Proxy.from_url("http://a%40b:p%3Aw@proxy.internal:3128")
    assert (proxy.user, proxy.password, proxy.url) == ("a@b", "p:w", "http://proxy.internal:3128")


async def test_a_ca_file_is_trusted_by_both_upstream_clients(tmp_path: Path) -> None:
    ca, server_ctx, _ = tls("127.0.0.1")

    server = Server(replies(b'{"data": []}'))
    url = await server.start(server_ctx)
    pem = tmp_path / "private-ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    upstream = Upstream(url, "sk-x", ca_file=pem)
    await upstream.start()
    reply = await upstream.post_json("/chat/completions", "", b"{}", [])
    assert await reply.read() == b'{"data": []}'
    reply.release()
    async with upstream.session.get(upstream.url("/models")) as listed:  # aiohttp: files, jobs, models
        assert await listed.json() == {"data": []}
    await upstream.close()

    plain = Upstream(url, "sk-x")
    await plain.start()
    with pytest.raises(UpstreamConnectError, match="SSLCertVerificationError"):
        await plain.post_json("/chat/completions", "", b"{}", [])
    await plain.close()
    await server.stop()


def test_settings_refuse_a_bad_proxy_url_or_a_missing_ca_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pydantic import ValidationError

    from service.settings import Settings

    for bad in ("https://proxy:3128", "proxy:3128", "http://proxy"):
        monkeypatch.setenv("FAREBOX_UPSTREAM_PROXY_URL", bad)
        with pytest.raises(ValidationError, match="FAREBOX_UPSTREAM_PROXY_URL"):
            Settings()
    secret = tmp_path / "proxy-url"
    secret.write_text("http://egress:p%40ss@proxy.internal:3128\n")
    monkeypatch.delenv("FAREBOX_UPSTREAM_PROXY_URL")
    monkeypatch.setenv("FAREBOX_UPSTREAM_PROXY_URL_FILE", str(secret))  # a secret, like the others
    settings = Settings()
    assert settings.upstream_proxy_url is not None
    assert settings.upstream_proxy_url.get_secret_value() == "http://egress:p%40ss@proxy.internal:3128"
    assert "p%40ss" not in repr(settings)
    monkeypatch.setenv("FAREBOX_UPSTREAM_PROXY_URL", "http://egress:hunter2secret@proxy.internal")
    with pytest.raises(ValidationError) as refused:  # no port: refused without showing the value
        Settings()
    assert "hunter2" not in str(refused.value) and "2secret" not in str(refused.value)
    monkeypatch.delenv("FAREBOX_UPSTREAM_PROXY_URL")
    not_pem = tmp_path / "not.pem"
    not_pem.write_bytes(b"\x30\x82 DER, not PEM")
    for bad in (tmp_path / "absent.pem", not_pem):
        monkeypatch.setenv("FAREBOX_UPSTREAM_CA_FILE", str(bad))
        with pytest.raises(ValidationError, match="FAREBOX_UPSTREAM_CA_FILE .* cannot be loaded"):
            Settings()
