"""The official openai SDK against a running Farebox: every call ledgered at its exact price."""

from __future__ import annotations

from datetime import datetime, timezone

import httpx
import openai
import pytest

from pricing import Usage, count_chat_messages, price, resolve_model
from tests.conftest import Stack

pytestmark = pytest.mark.timeout(120)


def _client(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.v1, api_key=key, max_retries=0)


def _sim(stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=stack.config.upstream_url, timeout=10)


def _expected_cost(model: str, prompt: int, completion: int, cached: int = 0) -> int:
    rates = resolve_model(model).rates(datetime.now(timezone.utc))
    assert rates is not None
    return price(Usage(prompt_tokens=prompt, cached_tokens=cached, completion_tokens=completion), rates).total_nano


def _message_of(tokens: int, model: str) -> list[dict[str, str]]:
    """One user message whose chat prompt counts exactly `tokens` tokens for `model`."""
    words = tokens
    while True:
        messages = [{"role": "user", "content": "hello" + " hello" * (words - 1)}]
        counted = count_chat_messages(messages, model)
        if counted == tokens:
            return messages
        words += tokens - counted


def test_chat_is_ledgered_with_its_exact_cost(stack: Stack) -> None:
    team, key = stack.admin.team_with_key()
    raw = _client(stack, key).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "What does finance need?"}], max_tokens=40
    )
    answer = raw.parse()
    request_id = raw.headers["x-farebox-request-id"]
    [row] = stack.ledger.wait_rows(team["id"], 1)
    assert row["request_id"] == request_id
    assert row["upstream_request_id"] == raw.headers["x-request-id"]
    assert row["kind"] == "inference" and row["status"] == "ok" and row["usage_source"] == "upstream"
    assert row["model_requested"] == "gpt-4o-mini"
    assert row["model_answered"] == answer.model == "gpt-4o-mini-2024-07-18"
    assert row["base_model"] == "gpt-4o-mini" and not row["fine_tuned"] and row["priced"]
    assert (row["prompt_tokens"], row["completion_tokens"]) == (answer.usage.prompt_tokens, answer.usage.completion_tokens)
    assert row["total_tokens"] == answer.usage.total_tokens
    assert row["cost_nano"] == _expected_cost("gpt-4o-mini", answer.usage.prompt_tokens, answer.usage.completion_tokens)
    assert row["catalog_version"] and row["input_rate_nano"] == 150 and row["output_rate_nano"] == 600


def test_fine_tuned_0613_request_costs_exactly_two_cents(stack: Stack) -> None:
    """Issue 2's figure: 1,000 prompt + 500 completion tokens on ft:gpt-3.5-turbo-0613 = $0.020."""
    team, key = stack.admin.team_with_key()
    model = "ft:gpt-3.5-turbo-0613:acme::x"
    answer = _client(stack, key).chat.completions.create(
        model=model, messages=_message_of(1000, model), max_tokens=600,
        extra_headers={"x-sim-completion-tokens": "500"},
    )
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (1000, 500)
    [row] = stack.ledger.wait_rows(team["id"], 1)
    assert row["cost_nano"] == 20_000_000
    assert row["fine_tuned"] and row["base_model"] == "gpt-3.5-turbo"
    assert (row["input_rate_nano"], row["output_rate_nano"]) == (12_000, 16_000)


def test_cached_tokens_are_billed_at_the_cached_rate(stack: Stack) -> None:
    team, key = stack.admin.team_with_key()
    answer = _client(stack, key).chat.completions.create(
        model="gpt-4o-mini", messages=_message_of(300, "gpt-4o-mini"), max_tokens=10,
        extra_headers={"x-sim-cached-tokens": "256"},
    )
    [row] = stack.ledger.wait_rows(team["id"], 1)
    assert row["cached_tokens"] == 256
    assert row["cost_nano"] == _expected_cost("gpt-4o-mini", 300, answer.usage.completion_tokens, cached=256)


def test_stream_without_include_usage_gets_no_usage_chunk_but_is_metered(stack: Stack) -> None:
    team, key = stack.admin.team_with_key()
    chunks = list(_client(stack, key).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "stream please"}], max_tokens=20, stream=True,
        extra_headers={"x-sim-completion-tokens": "20"},
    ))
    assert chunks and all(chunk.choices for chunk in chunks), "the usage-only chunk leaked to the client"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    [row] = stack.ledger.wait_rows(team["id"], 1)
    assert row["usage_source"] == "upstream" and row["status"] == "ok"
    assert row["completion_tokens"] == 20 and text
    # What reached the upstream asked for usage; nothing else changed.
    sent = _sim(stack).get("/_sim/last_request").json()
    assert sent["body"]["stream_options"] == {"include_usage": True}


def test_stream_with_include_usage_relays_the_usage_chunk(stack: Stack) -> None:
    team, key = stack.admin.team_with_key()
    chunks = list(_client(stack, key).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "stream with usage"}], max_tokens=12,
        stream=True, stream_options={"include_usage": True},
    ))
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    [row] = stack.ledger.wait_rows(team["id"], 1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert row["cost_nano"] == _expected_cost("gpt-4o-mini", usage.prompt_tokens, usage.completion_tokens)


async def test_async_client_stream_and_not(stack: Stack) -> None:
    team, key = stack.admin.team_with_key()
    client = openai.AsyncOpenAI(base_url=stack.v1, api_key=key, max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(model="gpt-4.1-nano", messages=[{"role": "user", "content": "hi"}])
    answer = raw.parse()
    stream = await client.chat.completions.create(
        model="gpt-4.1-nano", messages=[{"role": "user", "content": "hi"}], stream=True, max_tokens=8
    )
    received = [chunk async for chunk in stream]
    await client.close()
    assert answer.usage is not None and received
    rows = stack.ledger.wait_rows(team["id"], 2)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    [row] = [r for r in rows if r["request_id"] == raw.headers["x-farebox-request-id"]]
    assert row["cost_nano"] == _expected_cost("gpt-4.1-nano", answer.usage.prompt_tokens, answer.usage.completion_tokens)


def test_completions_embeddings_and_models(stack: Stack) -> None:
    team, key = stack.admin.team_with_key()
    client = _client(stack, key)
    completion = client.completions.create(model="davinci-002", prompt="Once upon a time", max_tokens=7)
    embedding = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta gamma"])
    models = client.models.list()
    assert any(m.id == "gpt-4o-mini" for m in models.data)
    rows = stack.ledger.wait_rows(team["id"], 2)
    by_endpoint = {r["endpoint"]: r for r in rows}
    assert by_endpoint["completions"]["cost_nano"] == _expected_cost(
        "davinci-002", completion.usage.prompt_tokens, completion.usage.completion_tokens
    )
    assert by_endpoint["embeddings"]["prompt_tokens"] == embedding.usage.prompt_tokens
    assert by_endpoint["embeddings"]["cost_nano"] == embedding.usage.prompt_tokens * 20


def test_upstream_error_is_relayed_ledgered_at_zero_and_releases_the_hold(stack: Stack) -> None:
    team, key = stack.admin.team_with_key()
    stack.admin.budget(team["id"], "5", "daily")
    with pytest.raises(openai.InternalServerError) as caught:
        _client(stack, key).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], extra_headers={"x-sim-error": "500"}
        )
    assert caught.value.status_code == 500
    [row] = stack.ledger.wait_rows(team["id"], 1)
    assert (row["status"], row["http_status"], row["cost_nano"]) == ("upstream_error", 500, 0)
    [standing] = stack.admin.standing(team["id"])
    assert standing["reserved_nano"] == 0 and standing["spent_nano"] == 0


def test_garbage_from_upstream_becomes_an_openai_shaped_502(stack: Stack) -> None:
    team, key = stack.admin.team_with_key()
    with pytest.raises(openai.APIStatusError) as caught:
        _client(stack, key).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], extra_headers={"x-sim-error": "garbage"}
        )
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_error"
    [row] = stack.ledger.wait_rows(team["id"], 1)
    assert row["status"] == "upstream_garbage" and row["cost_nano"] == 0


def test_broken_stream_is_billed_for_what_was_delivered(stack: Stack) -> None:
    team, key = stack.admin.team_with_key()
    received: list[str] = []
    with pytest.raises(openai.APIError):
        for chunk in _client(stack, key).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "a long story"}], max_tokens=50, stream=True,
            extra_headers={"x-sim-break-after": "6", "x-sim-completion-tokens": "50"},
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    [row] = stack.ledger.wait_rows(team["id"], 1)
    assert row["status"] == "stream_broken" and row["usage_source"] == "tiktoken"
    assert 0 < row["completion_tokens"] < 50
    from pricing import count_text

    assert row["completion_tokens"] == sum(count_text(t, "o200k_base") for t in received)
    assert row["cost_nano"] == _expected_cost("gpt-4o-mini", row["prompt_tokens"], row["completion_tokens"])


def test_unknown_and_revoked_keys_get_401(stack: Stack) -> None:
    team, key = stack.admin.team_with_key()
    with pytest.raises(openai.AuthenticationError) as caught:
        _client(stack, "fbk_not-a-key").models.list()
    assert caught.value.body["code"] == "invalid_api_key"
    client = _client(stack, key)
    client.models.list()  # cached now
    key_id = stack.admin.http.get(f"/teams/{team['id']}/keys").json()[0]["id"]
    stack.admin.http.post(f"/keys/{key_id}/revoke").raise_for_status()
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"model": "gpt-4o-mini"}', "messages"),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "max_tokens": -5}', "max_tokens"),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10000000000}', "max_tokens"),
        (b'{"messages": []}', "model"),
        (b"\xff\xfe{}", "JSON"),
    ],
)
def test_malformed_bodies_get_a_clear_400_and_cost_nothing(stack: Stack, body: bytes, fragment: str) -> None:
    team, key = stack.admin.team_with_key()
    before = _sim(stack).get("/_sim/stats").json()
    resp = httpx.post(f"{stack.v1}/chat/completions", content=body, headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and fragment in error["message"]
    assert _sim(stack).get("/_sim/stats").json() == before, "a malformed request reached the upstream"
    assert stack.ledger.rows(team["id"]) == []


def test_the_upstream_sees_the_request_unchanged_and_never_the_farebox_key(stack: Stack) -> None:
    _, key = stack.admin.team_with_key()
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "exact"}], "temperature": 0.25, "seed": 7, "user": "u-1"}
    httpx.post(f"{stack.v1}/chat/completions", json=payload, headers={"Authorization": f"Bearer {key}"}).raise_for_status()
    seen = _sim(stack).get("/_sim/last_request").json()
    assert seen["body"] == payload
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert key not in str(seen) and headers["authorization"].startswith("Bearer sk-")


def test_unpriced_model_is_proxied_and_ledgered_as_unpriced(stack: Stack) -> None:
    team, key = stack.admin.team_with_key()
    assert not resolve_model("gpt-5-nano").known or resolve_model("gpt-5-nano").rates(datetime.now(timezone.utc)) is None
    _client(stack, key).chat.completions.create(model="gpt-5-nano", messages=[{"role": "user", "content": "hi"}])
    [row] = stack.ledger.wait_rows(team["id"], 1)
    assert row["priced"] is False or row["priced"] == 0
    assert row["cost_nano"] == 0 and row["prompt_tokens"] > 0
    metrics = httpx.get(f"{stack.farebox.base_url}/metrics").text
    assert 'farebox_unpriced_requests_total{model="gpt-5-nano"}' in metrics
