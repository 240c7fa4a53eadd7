"""Run a simulator (or any ASGI app) on a free local port in a background thread."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from service.simulator.app import create_app
from service.simulator.config import SimulatorConfig


def _answers(host: str, port: int, path: str) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=1.0)
    try:
        conn.request("GET", path)
        conn.getresponse().read()
        return True
    except OSError:
        return False
    finally:
        conn.close()


@contextlib.contextmanager
def serve_in_thread(
    app: ASGIApp, *, probe_path: str = "/", timeout_s: float = 20.0
) -> Iterator[str]:
    """Serve app under uvicorn on a free port; yields "http://127.0.0.1:<port>" once it answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"uvicorn-{port}"
    )
    thread.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not (server.started and _answers("127.0.0.1", port, probe_path)):
            if not thread.is_alive():
                raise RuntimeError("the server thread died while starting")
            if time.monotonic() > deadline:
                raise TimeoutError(f"server on port {port} did not answer within {timeout_s}s")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextlib.contextmanager
def run_in_thread(config: SimulatorConfig | None = None) -> Iterator[str]:
    """Start a simulator on a free port; yields its OpenAI base URL, "http://127.0.0.1:<port>/v1"."""
    app = create_app(config or SimulatorConfig())
    with serve_in_thread(app, probe_path="/v1/_sim/stats") as root:
        yield root + "/v1"
