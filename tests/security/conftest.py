"""Fixtures for security tests: a Farebox whose every secret is recognisable, so a scan can find any leak."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Stack, make_stack
from tests.harness import FareboxConfig, Proc
from tests.reliability.results import record_figures, report  # noqa: F401  (fixture)


@dataclass(frozen=True)
class Secrets:
    """Every secret the service holds; none may ever leave it except a new key, once, to the admin."""

    admin_token: str
    upstream_key: str
    pepper: str

    def all(self) -> list[str]:
        return [self.admin_token, self.upstream_key, self.pepper]


@pytest.fixture(scope="module")
def service_secrets() -> Secrets:
    return Secrets(
        admin_token="adm_" + secrets.token_hex(20),
        upstream_key="sk-fbtest-upstream-" + secrets.token_hex(16),
        pepper="pepper-" + secrets.token_hex(16),
    )


def secure_config(simulator: Proc, pg_url: str, redis_url: str, service_secrets: Secrets, **extra_env: str) -> FareboxConfig:
    env = {
        "FAREBOX_OPENAI_API_KEY": service_secrets.upstream_key,  # the simulator accepts any sk-... key
        "FAREBOX_KEY_PEPPER": service_secrets.pepper,
        "FAREBOX_AUTH_FAIL_LIMIT": "1000",  # every test here calls from 127.0.0.1; the throttle has its own test
        "FAREBOX_LOG_LEVEL": "DEBUG",  # the more it logs, the more a leak scan can catch
        **{k.upper(): v for k, v in extra_env.items()},
    }
    return FareboxConfig(pg_url, simulator.base_url, redis_url, f"fbt{uuid.uuid4().hex[:10]}",
                         admin_token=service_secrets.admin_token, extra_env=env)


@pytest.fixture(scope="module")
def secure_stack(simulator: Proc, log_dir: Path, pg_url: str, redis_url: str, service_secrets: Secrets) -> Iterator[Stack]:
    stack = make_stack("postgres", secure_config(simulator, pg_url, redis_url, service_secrets), log_dir)
    yield stack
    stack.farebox.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    report(config, terminalreporter)
