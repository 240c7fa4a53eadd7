"""Budgets enforced by running Farebox processes: never overspent under concurrent load."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import openai
import pytest

from pricing import Usage, count_chat_messages, price, resolve_model
from pricing.money import format_usd
from tests.conftest import Stack, make_stack
from tests.harness import FareboxConfig, wait_until

pytestmark = pytest.mark.timeout(180)

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Count to three."}]
MAX_TOKENS = 40
K = 5


def _exact_cost() -> int:
    """A request whose real cost equals its reservation: the answer runs to max_tokens."""
    rates = resolve_model(MODEL).rates(datetime.now(timezone.utc))
    prompt = count_chat_messages(MESSAGES, MODEL)
    return price(Usage(prompt_tokens=prompt, completion_tokens=MAX_TOKENS), rates).total_nano


async def _burst(urls: list[str], key: str, n: int) -> list[int]:
    """n concurrent chat requests spread over the given Farebox URLs; their HTTP statuses."""
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS}
    headers = {"Authorization": f"Bearer {key}", "x-sim-completion-tokens": str(MAX_TOKENS), "x-sim-latency-ms": "50"}
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=n)) as client:
        responses = await asyncio.gather(
            *(client.post(f"{urls[i % len(urls)]}/v1/chat/completions", json=body, headers=headers) for i in range(n))
        )
    for r in responses:
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "budget_exceeded"
    return [r.status_code for r in responses]


async def test_exactly_k_of_20k_concurrent_requests_fit(stack: Stack) -> None:
    cost = _exact_cost()
    team, key = stack.admin.team_with_key()
    stack.admin.budget(team["id"], format_usd(K * cost), "daily", name="tight")
    statuses = await _burst([stack.farebox.base_url], key, 20 * K)
    assert statuses.count(200) == K and statuses.count(429) == 19 * K
    stack.ledger.wait_rows(team["id"], K)
    assert stack.ledger.total(team["id"]) == K * cost
    [standing] = stack.admin.standing(team["id"])
    assert standing["spent_nano"] == K * cost and standing["reserved_nano"] == 0


async def test_two_processes_sharing_redis_never_overspend(pg_stack: Stack, log_dir: Path) -> None:
    second = make_stack("pg", FareboxConfig(
        pg_stack.config.database_url, pg_stack.config.upstream_url, pg_stack.config.redis_url,
        pg_stack.config.redis_namespace, admin_token=pg_stack.config.admin_token,
    ), log_dir)
    try:
        cost = _exact_cost()
        team, key = pg_stack.admin.team_with_key()
        pg_stack.admin.budget(team["id"], format_usd(K * cost), "daily")
        statuses = await _burst([pg_stack.farebox.base_url, second.farebox.base_url], key, 20 * K)
        assert statuses.count(200) == K
        pg_stack.ledger.wait_rows(team["id"], K)
        assert pg_stack.ledger.total(team["id"]) == K * cost
    finally:
        second.farebox.stop()


def test_refusal_names_the_budget_and_says_when_it_resets(stack: Stack) -> None:
    team, key = stack.admin.team_with_key()
    stack.admin.budget(team["id"], "0.0001", "daily", name="pocket money")
    client = openai.OpenAI(base_url=stack.v1, api_key=key, max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, max_tokens=2000)
    err = caught.value
    assert err.body["type"] == "insufficient_quota" and err.body["code"] == "budget_exceeded"
    assert "pocket money" in err.message and "$0.000100000 per day" in err.message and "remaining" in err.message
    retry_after = int(err.response.headers["retry-after"])
    assert 0 < retry_after <= 86_400
    assert stack.ledger.rows(team["id"]) == []


def test_every_budget_must_fit_and_key_and_kind_scope_apply(stack: Stack) -> None:
    team, key = stack.admin.team_with_key()
    other_key = stack.admin.key(team["id"])
    key_id = other_key["id"]
    # A generous team budget, a tiny budget on one key, and a training-only budget that must not apply.
    stack.admin.budget(team["id"], "100", "monthly")
    stack.admin.budget(team["id"], "0.000001", "daily", key_id=key_id, name="key cap")
    stack.admin.budget(team["id"], "0", "total", kind="training", name="no training")
    ok = openai.OpenAI(base_url=stack.v1, api_key=key, max_retries=0)
    capped = openai.OpenAI(base_url=stack.v1, api_key=other_key["key"], max_retries=0)
    ok.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    with pytest.raises(openai.RateLimitError) as caught:
        capped.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    assert "key cap" in caught.value.message


def test_model_scoped_budget_only_limits_its_models(stack: Stack) -> None:
    team, key = stack.admin.team_with_key()
    stack.admin.budget(team["id"], "0", "daily", models=["gpt-4o"], name="no gpt-4o")
    client = openai.OpenAI(base_url=stack.v1, api_key=key, max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=5)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o-2024-08-06", messages=MESSAGES, max_tokens=5)


def test_stream_cut_after_n_chunks_costs_the_delivered_tokens_and_frees_the_rest(stack: Stack) -> None:
    team, key = stack.admin.team_with_key()
    stack.admin.budget(team["id"], "1", "daily")
    client = openai.OpenAI(base_url=stack.v1, api_key=key, max_retries=0)
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=200, stream=True,
            extra_headers={"x-sim-break-after": "5", "x-sim-completion-tokens": "200"},
        ):
            pass
    [row] = stack.ledger.wait_rows(team["id"], 1)
    assert row["status"] == "stream_broken" and 0 < row["completion_tokens"] < 200
    [standing] = stack.admin.standing(team["id"])
    assert standing["spent_nano"] == row["cost_nano"] and standing["reserved_nano"] == 0


def test_client_disconnect_mid_stream_is_billed_for_what_the_upstream_produced(stack: Stack) -> None:
    team, key = stack.admin.team_with_key()
    stack.admin.budget(team["id"], "1", "daily")
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 400, "stream": True}
    headers = {"Authorization": f"Bearer {key}", "x-sim-completion-tokens": "400"}
    with httpx.Client(timeout=30) as client:
        # The simulator paces chunks (5 ms each); leave after the first few.
        with client.stream("POST", f"{stack.v1}/chat/completions", json=body, headers={**headers, "x-sim-chunk-delay-ms": "5"}) as resp:
            assert resp.status_code == 200
            for i, _ in enumerate(resp.iter_raw()):
                if i >= 3:
                    break
    [row] = stack.ledger.wait_rows(team["id"], 1)
    assert row["status"] == "client_disconnected" and row["usage_source"] == "tiktoken"
    assert 0 < row["completion_tokens"] < 400
    wait_until(lambda: stack.admin.standing(team["id"])[0]["reserved_nano"] == 0, what="reservation released")
    assert stack.admin.standing(team["id"])[0]["spent_nano"] == row["cost_nano"]
