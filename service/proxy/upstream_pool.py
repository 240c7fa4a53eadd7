"""The inference hot path's HTTP/1.1 client: keep-alive connections to the one upstream origin.

aiohttp spends about 150 µs of CPU on each POST and its answer (`bench/inprocess_costs.py`):
a URL object, header multidicts, a timer context, trace hooks, a request and a response object
with a stream reader. Relaying a chat completion needs none of that. This client writes the
request head and body in one send, parses the answer with httptools (llhttp, the parser
uvicorn uses) and hands the body on as it arrives, chunked transfer and gzip decoded. The
files, fine-tuning and models routes keep aiohttp (`service/proxy/upstream.py`).

What it does, as aiohttp did for these calls:
- at most `size` connections, kept alive and reused newest first; an idle one is dropped
  after `keepalive_s`, or at once when the upstream closes it;
- new connections resolved and opened as aiohttp opens them (aiohappyeyeballs: IPv6 and IPv4
  raced, so a host with broken IPv6 still connects at once);
- a connect timeout and a total timeout, which covers waiting for a free connection, the
  answer's head and every read of its body;
- TLS with the system's trust store (or a given context), checking the host name;
- through an HTTP proxy when one is given: a CONNECT tunnel per connection, TLS inside it;
- a POST is never retried: an upstream that may have started the work may bill for it.
  A connection closed under a request fails that request (`UpstreamClosed`);
- reading pauses while more than `PAUSE_AT` bytes of a body wait for the reader.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import zlib
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aiohappyeyeballs
import httptools

PAUSE_AT = 1 << 20  # bytes of an answer's body held for its reader before reading pauses
RESUME_AT = 1 << 16


class UpstreamConnectError(ConnectionError):
    """No connection to the upstream could be opened (refused, unresolved, TLS failed)."""


class UpstreamClosed(ConnectionError):
    """The upstream closed or reset the connection before its answer was complete."""


class UpstreamProtocolError(ConnectionError):
    """The upstream's bytes are not a valid HTTP/1.1 answer (or not valid gzip)."""


@dataclass(frozen=True, slots=True)
class Proxy:
    """An HTTP proxy that opens CONNECT tunnels: http://[user:password@]host:port."""

    host: str
    port: int
    user: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str) -> Proxy:
        """Its message never repeats the URL, which may hold a password."""
        shape = "The proxy URL must be http://[user:password@]host:port"
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ValueError(f"{shape} (its port is not a number; percent-encode / ? # @ : in a password).") from None
        if parts.scheme != "http" or not parts.hostname or not port:
            raise ValueError(f"{shape}.")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"{shape}, with nothing after the port (percent-encode / ? # in a password).")
        user = unquote(parts.username) if parts.username is not None else None
        password = unquote(parts.password or "") if user is not None else None
        if user is not None and ":" in user:
            raise ValueError(f"{shape}: a user name cannot hold ':' (RFC 7617).")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in (user or "") + (password or "")):
            raise ValueError(f"{shape}: its credentials hold a control character.")
        return cls(parts.hostname, port, user, password)

    @property
    def url(self) -> str:
        """Without credentials (aiohttp takes them apart)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def __repr__(self) -> str:  # never the password, in a log line or a traceback
        return f"Proxy({self.url!r}, user={self.user!r})"

    def connect_request(self, authority: str) -> bytes:
        head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
        if self.user is not None:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode("ascii")
            head += f"Proxy-Authorization: Basic {token}\r\n"
        return (head + "\r\n").encode("latin-1")


class UpstreamAnswer:
    """One answer: status and headers once its head has arrived, then its body as it comes.

    `release()` must be called when done with it (it is idempotent): a connection whose answer
    was read to the end goes back to the pool, any other is closed.
    """

    __slots__ = (
        "status", "headers", "_conn", "_pool", "_raw_headers", "_head", "_chunks", "_buffered",
        "_waiter", "_complete", "_error", "_until_eof", "_decoder", "_timer", "_released",
    )

    def __init__(self, pool: UpstreamPool, conn: _Connection, deadline: float) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self._conn = conn
        self._pool = pool
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._head: asyncio.Future[None] = pool.loop.create_future()
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._error: BaseException | None = None
        self._until_eof = False  # the body ends when the connection does (no length, not chunked)
        self._decoder: zlib._Decompress | None = None
        self._timer = pool.loop.call_at(deadline, self._time_out)
        self._released = False

    # What the reader calls.

    async def read(self) -> bytes:
        """The whole body."""
        parts = [chunk async for chunk in self.iter_chunks()]
        return b"".join(parts) if len(parts) != 1 else parts[0]

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes, in the pieces they arrived in (all that is waiting at once)."""
        while True:
            if self._chunks:
                if len(self._chunks) == 1:
                    data = self._chunks.popleft()
                else:
                    data = b"".join(self._chunks)
                    self._chunks.clear()
                self._consumed(len(data))
                yield data
                continue
            if self._error is not None:
                raise self._error
            if self._complete:
                return
            self._waiter = self._pool.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def take_arrived(self) -> bytes:
        """What of the body has arrived and not been read, taken without waiting."""
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._consumed(len(data))
        return data

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._timer.cancel()
        if not self._complete:  # a reader still waiting learns that nothing more will come
            self._fail(UpstreamClosed("The answer was released before its end."))
        conn, self._conn = self._conn, None  # type: ignore[assignment]
        conn.answer = None
        if self._complete and self._error is None and conn.keep_alive:
            conn.resume()  # paused by a slow reader while the end arrived: read again when reused
            self._pool._put_back(conn)
        else:
            self._pool._drop(conn)

    close = release

    # What the connection calls.

    def _headers_complete(self, status: int) -> None:
        self.status = status
        headers = self.headers
        for name, value in self._raw_headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self._raw_headers = []
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = _DEFLATE  # zlib-wrapped or raw: told apart by the first bytes
        if (
            "content-length" not in headers
            and "chunked" not in headers.get("transfer-encoding", "").lower()
            and status not in (204, 304)
            and status >= 200
        ):
            self._until_eof = True
        if not self._head.done():
            self._head.set_result(None)

    def _feed(self, data: bytes) -> None:
        if self._decoder is not None:
            if self._decoder is _DEFLATE:
                self._decoder = zlib.decompressobj(zlib.MAX_WBITS if _zlib_wrapped(data) else -zlib.MAX_WBITS)
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                self._fail(UpstreamProtocolError(f"The upstream's compressed body is invalid: {exc}."))
                return
            if not data:
                return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > PAUSE_AT:
            self._conn.pause()
        self._wake()

    def _finish(self) -> None:
        if self._decoder is not None and self._decoder is not _DEFLATE:
            try:
                rest = self._decoder.flush()
            except zlib.error as exc:
                self._fail(UpstreamProtocolError(f"The upstream's compressed body is invalid: {exc}."))
                return
            if not self._decoder.eof:
                self._fail(UpstreamProtocolError("The upstream's compressed body ends before its end."))
                return
            if rest:
                self._chunks.append(rest)
        self._complete = True
        self._timer.cancel()
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self._complete or self._error is not None:
            return
        self._error = error
        self._timer.cancel()
        if not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved: a request cancelled meanwhile must not log it
        self._wake()

    def _time_out(self) -> None:
        self._fail(asyncio.TimeoutError())
        if self._conn is not None:
            self._conn.abort()

    def _consumed(self, n: int) -> None:
        self._buffered -= n
        if self._buffered < RESUME_AT and self._conn is not None:
            self._conn.resume()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


_DEFLATE = zlib.decompressobj()  # a marker: "deflate, kind not known until the first bytes"


def _zlib_wrapped(data: bytes) -> bool:
    """RFC 1950's two-byte header (what 'deflate' should mean), as against a raw RFC 1951 stream."""
    return len(data) >= 2 and data[0] & 0x0F == 8 and ((data[0] << 8) | data[1]) % 31 == 0


class _Connection(asyncio.Protocol):
    __slots__ = ("pool", "transport", "parser", "answer", "closed", "keep_alive", "idle_since", "paused", "counted_out")

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: UpstreamAnswer | None = None
        self.closed = False
        self.keep_alive = False
        self.idle_since = 0.0
        self.paused = False
        self.counted_out = False  # the pool no longer counts it as open

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.answer is None:  # bytes nobody asked for (a 408 before closing): not reusable
            self.abort()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._broken("The upstream switched protocols, which Farebox does not relay.")
        except httptools.HttpParserError as exc:
            self._broken(f"The upstream's answer is not valid HTTP/1.1: {exc}.")

    def _broken(self, message: str) -> None:
        if self.answer is not None:
            self.answer._fail(UpstreamProtocolError(message))
        self.abort()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost ends or fails the answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        answer = self.answer
        if answer is not None and not answer._complete and answer._error is None:
            if answer._head.done() and answer._until_eof and exc is None:
                answer._finish()
            else:
                detail = f" ({type(exc).__name__})" if exc is not None else ""
                answer._fail(UpstreamClosed(f"The upstream closed the connection before its answer was complete{detail}."))
        self.pool._lost(self)

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.answer is None or self.answer._complete:
            raise UpstreamProtocolError("The upstream sent a second answer to one request.")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.answer._raw_headers.append((name, value))  # type: ignore[union-attr]

    def on_headers_complete(self) -> None:
        answer = self.answer
        status = self.parser.get_status_code()
        if status < 200:  # an interim answer (100 Continue): the real one follows
            answer._raw_headers = []  # type: ignore[union-attr]
            return
        answer._headers_complete(status)  # type: ignore[union-attr]

    def on_body(self, body: bytes) -> None:
        self.answer._feed(body)  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        answer = self.answer
        if answer is None or answer.status == 0:  # after an interim answer
            return
        self.keep_alive = self.parser.should_keep_alive()
        answer._finish()

    # flow control and closing

    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class UpstreamPool:
    """Keep-alive connections to one origin (`base_url`'s scheme, host and port) and its path."""

    def __init__(
        self,
        base_url: str,
        *,
        size: int = 256,
        connect_timeout_s: float = 10.0,
        total_timeout_s: float = 600.0,
        keepalive_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        proxy: Proxy | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"The upstream URL must be http:// or https:// with a host: {base_url!r}.")
        self.host = parts.hostname
        default_port = 443 if parts.scheme == "https" else 80
        self.port = parts.port or default_port
        self.base_path = parts.path.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if self.port == default_port else f"{host}:{self.port}"
        self.ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self.ssl = ssl_context or ssl.create_default_context()
        self.size = size
        self.connect_timeout_s = connect_timeout_s
        self.total_timeout_s = total_timeout_s
        self.keepalive_s = keepalive_s
        self.proxy = proxy
        self._idle: list[_Connection] = []
        self._open = 0  # connections open or being opened
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def head(self, method: str, path: str, query: str, headers: Iterable[tuple[bytes, bytes]], body_length: int) -> bytes:
        """The request line and headers; `path` follows the base URL's path ('/chat/completions').

        For requests whose answers have bodies (POST): a HEAD's answer would be waited for.
        """
        target = f"{self.base_path}{path}?{query}" if query else f"{self.base_path}{path}"
        lines = [f"{method} {target} HTTP/1.1\r\nHost: {self.host_header}\r\n".encode("latin-1")]
        for name, value in headers:
            lines.append(b"%s: %s\r\n" % (name, value))
        lines.append(b"Content-Length: %d\r\n\r\n" % body_length)
        return b"".join(lines)

    async def request(self, head: bytes, body: bytes) -> UpstreamAnswer:
        """Send one request (its `head()` and body); returns once the answer's head arrived."""
        loop = self.loop
        deadline = loop.time() + self.total_timeout_s
        conn = await self._acquire(deadline)
        while conn.closed:  # closed while being handed over: nothing was sent on it
            self._drop(conn)
            conn = await self._acquire(deadline)
        answer = UpstreamAnswer(self, conn, deadline)
        conn.answer = answer
        try:
            assert conn.transport is not None
            if len(body) < 65536:
                conn.transport.write(head + body)
            else:
                conn.transport.writelines((head, body))
            await answer._head
        except BaseException:
            answer.release()  # incomplete: the connection is closed, never reused
            raise
        return answer

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.abort()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(UpstreamClosed("Farebox is shutting down."))

    @property
    def connections(self) -> tuple[int, int]:
        """(open, idle), for tests and diagnostics."""
        return self._open, len(self._idle)

    # the pool

    async def _acquire(self, deadline: float) -> _Connection:
        if self._closed:
            raise UpstreamClosed("Farebox is shutting down.")
        now = self.loop.time()
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue  # already counted out by _lost
            if now - conn.idle_since > self.keepalive_s:
                self._drop(conn)
                continue
            return conn
        if self._open >= self.size:
            waiter: asyncio.Future[_Connection | None] = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    handed = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    handed = waiter.result()  # handed over as the wait ended: pass it on
                    if handed is not None:
                        self._put_back(handed)
                    else:
                        self._open -= 1
                        self._slot_free()
                elif waiter in self._waiters:
                    self._waiters.remove(waiter)
                raise
            if handed is not None:
                return handed
            # a slot was freed for this waiter: it opens the connection (already counted)
        else:
            self._open += 1
        conn = _Connection(self)  # counted from here: whatever happens, _drop counts it out once
        try:
            await self._connect(conn, deadline)
        except BaseException:
            self._drop(conn)
            raise
        return conn

    async def _connect(self, conn: _Connection, deadline: float) -> None:
        loop = self.loop
        timeout = min(self.connect_timeout_s, max(0.0, deadline - loop.time()))
        sock = None
        try:
            async with asyncio.timeout(timeout):
                host, port = (self.proxy.host, self.proxy.port) if self.proxy else (self.host, self.port)
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                sock = await aiohappyeyeballs.start_connection(infos, happy_eyeballs_delay=0.25, interleave=1)
                if self.proxy is not None:
                    await self._tunnel(sock)
                await loop.create_connection(
                    lambda: conn, sock=sock, ssl=self.ssl, server_hostname=self.host if self.ssl else None,
                )
        except OSError as exc:  # refused, unreachable, unresolved, TLS (ssl.SSLError is an OSError)
            if sock is not None and conn.transport is None:
                sock.close()
            if isinstance(exc, UpstreamConnectError):  # the proxy's refusal, already explained
                raise
            if isinstance(exc, TimeoutError) and exc.errno is None:
                raise  # the connect timeout (an ETIMEDOUT from the kernel is a connect error)
            raise UpstreamConnectError(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            if sock is not None and conn.transport is None:
                sock.close()
            raise

    async def _tunnel(self, sock: socket.socket) -> None:
        """Ask the proxy for a tunnel to the upstream on `sock`; raises unless it says 200."""
        assert self.proxy is not None
        loop = self.loop
        host = f"[{self.host}]" if ":" in self.host else self.host
        await loop.sock_sendall(sock, self.proxy.connect_request(f"{host}:{self.port}"))
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = await loop.sock_recv(sock, 4096)
            if not data:
                raise UpstreamConnectError("The proxy closed the connection instead of opening a tunnel.")
            answer += data
            if len(answer) > 65536:
                raise UpstreamConnectError("The proxy's answer to CONNECT has no end.")
        status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
        fields = status_line.split(" ", 2)
        if len(fields) < 2 or not fields[0].startswith("HTTP/1.") or fields[1] != "200":
            hint = " (its credentials were refused or missing)" if fields[1:2] == ["407"] else ""
            raise UpstreamConnectError(f"The proxy refused a tunnel to the upstream: {status_line!r}{hint}.")
        if not answer.endswith(b"\r\n\r\n"):
            raise UpstreamConnectError("The proxy sent bytes after opening the tunnel.")

    def _put_back(self, conn: _Connection) -> None:
        if conn.closed or self._closed:
            self._drop(conn)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle_since = self.loop.time()
        self._idle.append(conn)

    def _drop(self, conn: _Connection) -> None:
        """Close a connection this pool still counts as open and free its slot."""
        if conn.counted_out:
            return
        conn.counted_out = True
        conn.abort()
        self._open -= 1
        self._slot_free()

    def _lost(self, conn: _Connection) -> None:
        """The connection closed (either side): it leaves the pool now, idle or not."""
        if conn.answer is None and conn in self._idle:
            self._idle.remove(conn)
        self._drop(conn)

    def _slot_free(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._open += 1
                waiter.set_result(None)
                return
