"""`farebox serve` with several workers: each listens on a socket of its own (SO_REUSEPORT), so
connections opened together spread over the workers; a worker that dies is replaced while the
others keep the port. Real serve processes, real Postgres and Redis, sockets read from /proc."""

from __future__ import annotations

import os
import signal
import socket
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import ROOT, FareboxConfig, Proc, start_farebox, wait_until

sys.path.insert(0, str(ROOT / "bench"))
from procstat import ESTABLISHED, LISTEN, socket_inodes, tcp_socket_inodes  # noqa: E402  (bench/procstat.py)

pytestmark = pytest.mark.timeout(180)

def _workers(serve: Proc) -> list[int]:
    """uvicorn's worker processes under serve (the ledger writer, also spawned, serves no HTTP)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if ppid == serve.process.pid and b"spawn_main" in cmdline:
            found.append(int(entry))
    return found


def _owners(serve: Proc, inodes: set[int]) -> dict[int, set[int]]:
    """worker pid -> which of `inodes` it holds."""
    return {pid: held for pid in _workers(serve) if (held := socket_inodes(pid) & inodes)}


def _port(serve: Proc) -> int:
    return int(serve.base_url.rsplit(":", 1)[1])


def _listening_workers(serve: Proc, count: int) -> dict[int, set[int]]:
    """Poll until `count` workers each listen on the port; worker pid -> its listening sockets."""
    return wait_until(
        lambda: (owners := _owners(serve, tcp_socket_inodes(_port(serve), LISTEN))) and len(owners) == count and owners,
        60, what=f"{count} workers listening",
    )


@pytest.fixture
def serve(new_pg_database: Callable[[str], str], redis_url: str, simulator: Proc, log_dir: Path) -> Iterator[Callable[..., Proc]]:
    started: list[Proc] = []

    def start(**env: str) -> Proc:
        config = FareboxConfig(
            new_pg_database("fbt_workers"), simulator.base_url, redis_url, f"fbt{uuid.uuid4().hex[:10]}",
            extra_env={"FAREBOX_WORKERS": "2", **env},
        )
        started.append(start_farebox(config, log_dir))
        return started[-1]

    yield start
    for proc in started:
        proc.stop()


def test_each_worker_listens_alone_and_connections_opened_together_spread(serve: Callable[..., Proc]) -> None:
    farebox = serve()
    listening = _listening_workers(farebox, 2)
    inodes = [inode for held in listening.values() for inode in held]
    assert len(inodes) == len(set(inodes)) == 2  # two sockets, one each, none shared
    assert not socket_inodes(farebox.process.pid) & set(inodes)  # the supervisor listens on none

    # 64 keep-alive connections opened at once, as a pool or a load tool opens them: over one
    # shared socket a single worker often accepts nearly all of them.
    clients = [socket.create_connection(("127.0.0.1", _port(farebox)), timeout=10) for _ in range(64)]
    try:
        request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{_port(farebox)}\r\n\r\n".encode()
        for client in clients:
            client.sendall(request)
        for client in clients:
            assert client.recv(65536).startswith(b"HTTP/1.1 200")
        held = Counter(
            {pid: len(inodes) for pid, inodes in _owners(farebox, tcp_socket_inodes(_port(farebox), ESTABLISHED)).items()}
        )
    finally:
        for client in clients:
            client.close()
    assert sum(held.values()) == 64
    # The kernel hashes each connection to a worker: fewer than 12 of 64 on one happens about
    # once in ten million runs, while a shared socket commonly gives one worker 50 or more.
    assert len(held) == 2 and min(held.values()) >= 12, held


def test_with_reuse_port_off_the_workers_share_one_socket(serve: Callable[..., Proc]) -> None:
    farebox = serve(FAREBOX_REUSE_PORT="false")
    listening = _listening_workers(farebox, 2)
    assert len(set().union(*listening.values())) == 1  # uvicorn's single socket, in both workers
    assert httpx.get(f"{farebox.base_url}/healthz", timeout=10).status_code == 200


def test_a_killed_worker_is_replaced_while_the_other_keeps_the_port(serve: Callable[..., Proc]) -> None:
    farebox = serve()
    listening = _listening_workers(farebox, 2)
    victim, survivor = sorted(listening)
    os.kill(victim, signal.SIGKILL)
    # Its socket closes once its last thread has exited, which can be after the process shows as
    # a zombie; a connection the kernel hands that socket before then is reset (the cost of a
    # socket per worker, service/serve_workers.py).
    wait_until(
        lambda: not listening[victim] & tcp_socket_inodes(_port(farebox), LISTEN), 10,
        what="the killed worker's socket to close",
    )

    # Every new connection reaches a live worker: the dead one's socket left the group with it.
    with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as http:
        statuses = [http.get(f"{farebox.base_url}/healthz").status_code for _ in range(40)]
    assert statuses == [200] * 40

    replaced = _listening_workers(farebox, 2)
    assert survivor in replaced and victim not in replaced
    assert farebox.alive()
