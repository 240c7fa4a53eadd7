"""Fixtures for fault tests: private Postgres and Redis servers to stop, and Farebox stacks on them.

Never stop the machine's shared servers: other engineers' tests run against them right now.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.harness import Admin, FareboxConfig, Ledger, Proc, start_farebox
from tests.reliability.results import record_figures, report  # noqa: F401  (fixture)
from tests.reliability.services import PostgresTemplate, PrivatePostgres, PrivateRedis, postgres_installed


def _need_binary(name: str, found: bool) -> None:
    """Like the shared servers: skip on a laptop without them, fail in CI."""
    if found:
        return
    if IN_CI:
        pytest.fail(f"{name} is not installed; CI=true, so this is a failure, not a skip", pytrace=False)
    pytest.skip(f"{name} is not installed")


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[PostgresTemplate]:
    _need_binary("PostgreSQL (initdb, postgres)", postgres_installed())
    template = PostgresTemplate()
    yield template
    template.remove()


@pytest.fixture
def private_postgres(postgres_template: PostgresTemplate) -> Iterator[PrivatePostgres]:
    """A running PostgreSQL of this test's own (handle: start/stop/kill/pause/resume, url, dsn)."""
    server = PrivatePostgres(postgres_template)
    server.start()
    yield server
    server.close()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A running Redis of this test's own without persistence (handle: start/stop/kill, url)."""
    _need_binary("redis-server", shutil.which("redis-server") is not None)
    server = PrivateRedis()
    server.start()
    yield server
    server.close()


@pytest.fixture
def private_redis_aof() -> Iterator[PrivateRedis]:
    """A running Redis with an append-only file, as deployed: a restart keeps its data."""
    _need_binary("redis-server", shutil.which("redis-server") is not None)
    server = PrivateRedis(appendonly=True)
    server.start()
    yield server
    server.close()


@dataclass
class FaultStack:
    """One Farebox on private servers, restartable with the same configuration."""

    config: FareboxConfig
    log_dir: Path
    farebox: Proc
    port: int

    @property
    def base_url(self) -> str:
        return self.farebox.base_url

    @property
    def admin(self) -> Admin:
        return Admin(self.base_url, self.config.admin_token)

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.config.database_url)

    def restart(self) -> None:
        """Start again on the same port and configuration (after a kill or a stop)."""
        self.farebox = start_farebox(self.config, self.log_dir, port=self.port)


def fault_stack(
    upstream_url: str, log_dir: Path, database_url: str, redis_url: str | None, **extra_env: str
) -> FaultStack:
    config = FareboxConfig(
        database_url, upstream_url, redis_url, f"fbt{uuid.uuid4().hex[:10]}",
        extra_env={k.upper(): v for k, v in extra_env.items()},
    )
    proc = start_farebox(config, log_dir)
    return FaultStack(config, log_dir, proc, int(proc.base_url.rsplit(":", 1)[1]))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    report(config, terminalreporter)
