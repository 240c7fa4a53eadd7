"""uvicorn's worker processes, each listening on a socket of its own (SO_REUSEPORT).

uvicorn's supervisor binds one socket and every worker accepts from it. A worker woken for a
burst of connections accepts all of them at once, so a client that opens its keep-alive
connections together (a load balancer's pool, an SDK's, wrk's) often lands on one worker: wrk's
64 were split 63/1 and 59/5 over two workers (bench/README.md, lever 17). With SO_REUSEPORT
each worker has its own listening socket on the same port and the kernel spreads new
connections over them by their address hash.

The supervisor still binds the port (with SO_REUSEPORT, and never listens on it), so the port
stays Farebox's while a worker restarts; a socket that only is bound receives no connections.
What SO_REUSEPORT costs: a connection the kernel has handed to a worker's socket when that
worker dies or stops (a crash, or uvicorn's SIGHUP restart and SIGTTOU scale-down) is reset
instead of taken by another worker, until the socket has closed with the worker's last thread.
Linux 5.14+ migrates such connections with `net.ipv4.tcp_migrate_req=1`.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import multiprocess

log = logging.getLogger("uvicorn.error")


def supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def bind_shared(host: str, port: int) -> socket.socket:
    """The supervisor's socket: it holds the port for the workers and never listens."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def own_listener(inherited: socket.socket) -> socket.socket:
    """A socket of this worker's own on the inherited socket's address (listened on by uvicorn)."""
    sock = socket.socket(inherited.family, inherited.type)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(inherited.getsockname()[:2])
    return sock


class ReusePortServer(uvicorn.Server):
    """uvicorn's server, serving on its own SO_REUSEPORT sockets instead of the inherited ones."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if sockets:
            own = [own_listener(s) for s in sockets]
            for inherited in sockets:
                inherited.close()  # this process's copy; the supervisor keeps the port
            sockets = own
        await super().startup(sockets=sockets)


class ReusePortWorker(multiprocess.Process):
    """uvicorn's worker process, running a ReusePortServer."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = ReusePortServer(config=self.config)
        return self._server


@contextmanager
def _workers_listen_alone() -> Iterator[None]:
    # uvicorn's supervisor names its worker class at each (re)start: every worker it makes while
    # this holds, restarts included, is a ReusePortWorker. Pinned: uvicorn==0.54.0.
    original = multiprocess.Process
    multiprocess.Process = ReusePortWorker  # type: ignore[misc]
    try:
        yield
    finally:
        multiprocess.Process = original  # type: ignore[misc]


def run(config: uvicorn.Config) -> None:
    """Serve `config.workers` processes under uvicorn's supervisor, each on its own socket."""
    try:
        sock = bind_shared(config.host, config.port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", config.host, config.port, exc)
        sys.exit(STARTUP_FAILURE)
    log.info("Farebox listening on http://%s:%d, one socket per worker (SO_REUSEPORT)", config.host,
             sock.getsockname()[1])
    try:
        with _workers_listen_alone():
            multiprocess.Multiprocess(config, sockets=[sock]).run()
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
