"""The admin API fuzzed with schemathesis against its own OpenAPI schema: no input makes it answer 5xx.

Path ids point at a real team, key and budget, so generated bodies reach the code behind the
404s (budgets with odd limits, periods, time zones and thresholds are created and read back).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, settings

from tests.conftest import IN_CI, Stack, make_stack

try:
    import schemathesis  # dev dependency: schemathesis==4.32.5
    from schemathesis.checks import not_a_server_error
except ModuleNotFoundError:
    if IN_CI:
        raise
    pytest.skip("schemathesis is not installed (pip install schemathesis==4.32.5)", allow_module_level=True)
from tests.harness import FareboxConfig, Proc

pytestmark = pytest.mark.timeout(300)

EXAMPLES = 25  # per operation: 21 operations, about 500 requests, well under a minute


@pytest.fixture(scope="module")
def fuzz_stack(simulator: Proc, log_dir: Path, pg_url: str, redis_url: str) -> Iterator[Stack]:
    # The fuzzer also sends the admin token to the one team route in the schema: failures it must not be throttled for.
    config = FareboxConfig(pg_url, simulator.base_url, redis_url, f"fbt{uuid.uuid4().hex[:10]}",
                           extra_env={"FAREBOX_AUTH_FAIL_LIMIT": "100000"})
    stack = make_stack("postgres", config, log_dir)
    yield stack
    stack.farebox.stop()


@pytest.fixture(scope="module")
def real_ids(fuzz_stack: Stack) -> dict[str, str]:
    team, _ = fuzz_stack.admin.team_with_key()
    key = fuzz_stack.admin.key(team["id"])
    budget = fuzz_stack.admin.budget(team["id"], "10", "monthly")
    return {"team_id": team["id"], "key_id": key["id"], "budget_id": budget["id"]}


@pytest.fixture
def admin_schema(fuzz_stack: Stack) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{fuzz_stack.farebox.base_url}/admin/openapi.json")
    schema.config.update(base_url=fuzz_stack.farebox.base_url)
    return schema


schema = schemathesis.pytest.from_fixture("admin_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_admin_api_never_answers_5xx(case: schemathesis.Case, fuzz_stack: Stack, real_ids: dict[str, str]) -> None:
    for name, value in real_ids.items():
        if case.path_parameters and name in case.path_parameters:
            case.path_parameters[name] = value
    response = case.call(headers={"Authorization": f"Bearer {fuzz_stack.config.admin_token}"}, timeout=30)
    case.validate_response(response, checks=[not_a_server_error])
    content_type = (response.headers.get("content-type") or [""])[0]
    if response.status_code >= 400 and content_type.startswith("application/json"):
        assert "error" in response.json(), f"not OpenAI-shaped: {response.text[:300]}"


def test_the_fuzzer_reached_the_code_behind_the_ids(fuzz_stack: Stack, real_ids: dict[str, str]) -> None:
    """Runs after the fuzzing above: the real team must still answer, and its standing be readable."""
    resp = fuzz_stack.admin.http.get(f"/teams/{real_ids['team_id']}/standing")
    assert resp.status_code == 200, resp.text
    assert httpx.get(f"{fuzz_stack.farebox.base_url}/readyz").status_code == 200
