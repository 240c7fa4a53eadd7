"""Repeated failed authentication from one client is slowed down: 429 with Retry-After, for keys and the admin token."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Stack, make_stack
from tests.harness import Proc, wait_until
from tests.reliability.results import Recorder
from tests.security.conftest import Secrets, secure_config

LIMIT = 5
WINDOW_S = 3


@pytest.fixture(scope="module")
def throttled(simulator: Proc, log_dir: Path, pg_url: str, redis_url: str, service_secrets: Secrets) -> Iterator[Stack]:
    config = secure_config(simulator, pg_url, redis_url, service_secrets,
                           farebox_auth_fail_limit=str(LIMIT), farebox_auth_fail_window_s=str(WINDOW_S))
    stack = make_stack("postgres", config, log_dir)
    yield stack
    stack.farebox.stop()


def _as(client_ip: str, secret: str) -> dict[str, str]:
    # uvicorn trusts X-Forwarded-For from 127.0.0.1 (the load balancer's place), so each IP is a client.
    return {"Authorization": f"Bearer {secret}", "X-Forwarded-For": client_ip}


def test_failed_keys_from_one_client_are_throttled_then_forgiven(throttled: Stack, record_figures: Recorder) -> None:
    _, key = throttled.admin.team_with_key()
    url = f"{throttled.v1}/models"
    statuses = [httpx.get(url, headers=_as("203.0.113.7", f"fbk_guess{i}")).status_code for i in range(LIMIT)]
    assert statuses == [401] * LIMIT
    started = time.monotonic()
    blocked = httpx.get(url, headers=_as("203.0.113.7", "fbk_guess-next"))
    assert blocked.status_code == 429
    error = blocked.json()["error"]
    assert error["code"] == "too_many_failed_authentications" and error["type"] == "requests"
    retry_after = int(blocked.headers["retry-after"])
    assert 1 <= retry_after <= WINDOW_S + 1
    # The right key does not get through either: guessing must not learn which key is right.
    assert httpx.get(url, headers=_as("203.0.113.7", key)).status_code == 429
    # Inference is throttled the same way.
    assert httpx.post(f"{throttled.v1}/chat/completions", headers=_as("203.0.113.7", key),
                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}).status_code == 429
    # Another client is not punished for it.
    assert httpx.get(url, headers=_as("198.51.100.9", key)).status_code == 200
    # Once the window has passed, the client may try again.
    wait_until(lambda: httpx.get(url, headers=_as("203.0.113.7", key)).status_code == 200, WINDOW_S + 5,
               interval_s=0.25, what="the throttle to lift")
    lifted_after = time.monotonic() - started
    record_figures(fault=f"{LIMIT} wrong keys from one client", requests=LIMIT + 3, during=3, ledger_rows=0,
                   status=429, retry_after_s=retry_after, lifted_after_s=round(lifted_after, 1), differences=0)
    assert lifted_after >= retry_after - 1


def test_wrong_admin_tokens_are_throttled_too(throttled: Stack, service_secrets: Secrets) -> None:
    url = f"{throttled.farebox.base_url}/admin/teams"
    statuses = [httpx.get(url, headers=_as("203.0.113.50", f"adm_guess{i}")).status_code for i in range(LIMIT)]
    assert statuses == [401] * LIMIT
    blocked = httpx.get(url, headers=_as("203.0.113.50", "adm_guess-next"))
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
    assert httpx.get(url, headers=_as("203.0.113.50", service_secrets.admin_token)).status_code == 429
    assert httpx.get(url, headers=_as("198.51.100.50", service_secrets.admin_token)).status_code == 200
    # The console's sign-in counts against the same budget of failures.
    console = f"{throttled.farebox.base_url}/console/api/whoami"
    for i in range(LIMIT):
        httpx.get(console, headers=_as("203.0.113.51", f"wrong{i}"))
    assert httpx.get(console, headers=_as("203.0.113.51", service_secrets.admin_token)).status_code == 429
