"""A real HTTP proxy for tests, as an egress proxy behaves: CONNECT tunnels (what clients ask for
an https:// target), and plain http:// requests in absolute form forwarded one per connection.
It checks Basic credentials when given and records every tunnel and forwarded request.

Runs on the caller's event loop (`await proxy.start()`) or in a thread of its own
(`ConnectProxy.in_thread()`) for tests that drive processes synchronously.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading


class ConnectProxy:
    def __init__(self, user: str | None = None, password: str | None = None) -> None:
        self.credentials = f"{user}:{password}" if user is not None else None
        self.tunnels: list[str] = []  # "host:port" of each tunnel opened
        self.forwarded: list[str] = []  # "METHOD http://host:port/path" of each plain request
        self.refused: list[str] = []  # status lines sent instead of a tunnel
        self.port = 0
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.url()

    def url(self, user: str | None = None, password: str | None = None) -> str:
        auth = f"{user}:{password}@" if user is not None else ""
        return f"http://{auth}127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            lines = head.split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
            if self.credentials is not None:
                given = headers.get("proxy-authorization", "")
                expected = "Basic " + base64.b64encode(self.credentials.encode()).decode()
                if given != expected:
                    return await self._refuse(writer, "HTTP/1.1 407 Proxy Authentication Required")
            if method != "CONNECT":
                return await self._forward(method, target, lines, reader, writer)
            host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except (OSError, ValueError, asyncio.IncompleteReadError):
            writer.close()
            return
        self.tunnels.append(target)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _forward(
        self, method: str, target: str, lines: list[str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if not target.startswith("http://"):
            return await self._refuse(writer, "HTTP/1.1 400 Bad Request")
        authority, _, path = target[len("http://"):].partition("/")
        host, port = authority.rsplit(":", 1) if ":" in authority else (authority, "80")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        self.forwarded.append(f"{method} {target}")
        kept = [ln for ln in lines[1:] if ln and not ln.lower().startswith(("proxy-authorization:", "connection:", "proxy-connection:"))]
        head = "\r\n".join([f"{method} /{path} HTTP/1.1", *kept, "Connection: close", "", ""])
        up_writer.write(head.encode("latin-1"))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _refuse(self, writer: asyncio.StreamWriter, status: str) -> None:
        self.refused.append(status)
        writer.write(f"{status}\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    # In a thread, for synchronous tests.

    @classmethod
    def in_thread(cls, user: str | None = None, password: str | None = None) -> ConnectProxy:
        proxy = cls(user, password)
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            proxy._loop = loop
            loop.run_until_complete(proxy.start())
            ready.set()
            loop.run_forever()
            loop.close()

        proxy._thread = threading.Thread(target=run, name="connect-proxy", daemon=True)
        proxy._thread.start()
        ready.wait(10)
        return proxy

    def stop_thread(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
