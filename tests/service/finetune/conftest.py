"""Fine-tuning stacks: one simulator with short job phases, and two Farebox processes that learn of
a job's end in the two ways production does.

- sqlite: polls only every 30 s; the simulator's signed webhooks (and clients that retrieve a
  finished job) make it look at once. A job settled within seconds proves the webhook path.
- postgres (+ Redis): polls every 0.1 s, no webhook secret. It gets a database of its own: a
  Farebox on the session's shared database would also follow these jobs, through another
  simulator that does not know them.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import Stack
from tests.harness import Admin, FareboxConfig, Ledger, Proc, free_port, start_farebox, start_simulator

JOB_PHASE_S = "0.3"
# Fixed, not random: this module may be imported twice (as a conftest and by the tests).
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"farebox fine-tuning test secret").decode()
SQLITE_UPLOAD_LIMIT = 4 * 1024 * 1024  # small, so the 413 is cheap to provoke
SLOW_POLLS = {"FAREBOX_JOB_POLL_INTERVAL_S": "30", "FAREBOX_JOB_POLL_MAX_INTERVAL_S": "60"}
FAST_POLLS = {"FAREBOX_JOB_POLL_INTERVAL_S": "0.1", "FAREBOX_JOB_POLL_MAX_INTERVAL_S": "0.5"}


@pytest.fixture(scope="session")
def ft_sqlite_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def ft_simulator(log_dir: Path, ft_sqlite_port: int) -> Iterator[Proc]:
    webhook = f"http://127.0.0.1:{ft_sqlite_port}/v1/farebox/webhooks/openai"
    proc = start_simulator(
        log_dir, "--job-phase-s", JOB_PHASE_S, "--webhook-url", webhook, "--webhook-secret", WEBHOOK_SECRET,
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def ft_pg_url(new_pg_database: Callable[[str], str]) -> str:
    return new_pg_database("fbt_ft")


def _stack(backend: str, config: FareboxConfig, log_dir: Path, port: int | None = None) -> Stack:
    proc = start_farebox(config, log_dir, port)
    return Stack(backend, proc, config, Admin(proc.base_url, config.admin_token), Ledger(config.database_url))


@pytest.fixture(scope="session")
def ft_sqlite_stack(
    ft_simulator: Proc, ft_sqlite_port: int, log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    db = tmp_path_factory.mktemp("ft-sqlite") / "farebox.db"
    env = {**SLOW_POLLS, "FAREBOX_WEBHOOK_SECRET": WEBHOOK_SECRET, "FAREBOX_MAX_UPLOAD_BYTES": str(SQLITE_UPLOAD_LIMIT)}
    config = FareboxConfig(f"sqlite+aiosqlite:///{db}", ft_simulator.base_url, extra_env=env)
    stack = _stack("sqlite", config, log_dir, ft_sqlite_port)
    yield stack
    stack.farebox.stop()


@pytest.fixture(scope="session")
def ft_pg_stack(ft_simulator: Proc, log_dir: Path, ft_pg_url: str, redis_url: str) -> Iterator[Stack]:
    namespace = f"fbt{uuid.uuid4().hex[:10]}"
    config = FareboxConfig(ft_pg_url, ft_simulator.base_url, redis_url, namespace, extra_env=dict(FAST_POLLS))
    stack = _stack("postgres", config, log_dir)
    yield stack
    stack.farebox.stop()
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{namespace}*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture(params=["sqlite", "postgres"])
def ft_stack(request: pytest.FixtureRequest) -> Stack:
    """Every fine-tuning end-to-end test runs on the embedded default and on Postgres + Redis."""
    return request.getfixturevalue({"sqlite": "ft_sqlite_stack", "postgres": "ft_pg_stack"}[request.param])
