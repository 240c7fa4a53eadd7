"""Shared fixtures: the real PostgreSQL and Redis of this machine (or CI), fresh per session.

Tests that need Postgres or Redis skip on a laptop without them, but fail when CI=true.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _need(service: str, host: str, port: int) -> None:
    if _answers(host, port):
        return
    message = f"{service} is not answering on {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message}; CI=true, so this is a failure, not a skip", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    _need("PostgreSQL", PG_HOST, PG_PORT)
    return f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"


@pytest.fixture(scope="session")
def new_pg_database(pg_admin_dsn: str) -> Iterator[Callable[[str], str]]:
    """A factory of fresh, empty Postgres databases (SQLAlchemy asyncpg URLs), dropped at the end."""
    import psycopg

    created: list[str] = []

    def make(prefix: str = "fbt") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{name}"

    yield make
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url(new_pg_database: Callable[[str], str]) -> str:
    """A fresh, empty Postgres database for this test session."""
    return new_pg_database("fbt")


@pytest.fixture(scope="session")
def redis_url() -> str:
    _need("Redis", REDIS_HOST, REDIS_PORT)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture
def redis_namespace() -> str:
    """A key prefix no other test (or developer) shares, so tests never collide in one Redis."""
    return f"fbt{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis_client(redis_url: str, redis_namespace: str) -> AsyncIterator[object]:
    """A redis-py asyncio client; every key under this test's namespace is deleted afterwards."""
    import redis.asyncio as redis

    client = redis.Redis.from_url(redis_url)
    yield client
    async for key in client.scan_iter(match=f"{redis_namespace}*", count=1000):
        await client.delete(key)
    await client.aclose()


# Running services for end-to-end tests: the simulated upstream and Farebox processes.

from dataclasses import dataclass as _dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

from tests.harness import Admin, FareboxConfig, Ledger, Proc, start_farebox, start_simulator  # noqa: E402


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def simulator(log_dir: Path) -> Iterator[Proc]:
    proc = start_simulator(log_dir)
    yield proc
    proc.stop()


@_dataclass
class Stack:
    """One running Farebox with what a test needs to drive and inspect it."""

    backend: str
    farebox: Proc
    config: FareboxConfig
    admin: Admin
    ledger: Ledger

    @property
    def v1(self) -> str:
        return f"{self.farebox.base_url}/v1"


def make_stack(backend: str, config: FareboxConfig, log_dir: Path) -> Stack:
    proc = start_farebox(config, log_dir)
    return Stack(backend, proc, config, Admin(proc.base_url, config.admin_token), Ledger(config.database_url))


@pytest.fixture(scope="session")
def sqlite_stack(simulator: Proc, log_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    db = tmp_path_factory.mktemp("sqlite") / "farebox.db"
    stack = make_stack("sqlite", FareboxConfig(f"sqlite+aiosqlite:///{db}", simulator.base_url), log_dir)
    yield stack
    stack.farebox.stop()


@pytest.fixture(scope="session")
def pg_stack(simulator: Proc, log_dir: Path, pg_url: str, redis_url: str) -> Iterator[Stack]:
    namespace = f"fbt{uuid.uuid4().hex[:10]}"
    stack = make_stack("postgres", FareboxConfig(pg_url, simulator.base_url, redis_url, namespace), log_dir)
    yield stack
    stack.farebox.stop()


@pytest.fixture(params=["sqlite", "pg"])
def stack(request: pytest.FixtureRequest) -> Stack:
    """Every end-to-end test runs against the embedded default and against Postgres + Redis."""
    return request.getfixturevalue(f"{request.param}_stack")
