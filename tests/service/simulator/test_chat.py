"""Chat completions through the official SDK: shapes, exact usage, limits, streams, models, auth."""

from __future__ import annotations

import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from service.simulator.config import SimulatorConfig
from service.simulator.server import run_in_thread
from tests.service.simulator.reference import TEST_KEY, reference_chat_tokens, reference_text_tokens

MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "What is the capital of France? Üñíçødé too."},
]


def _sse_payloads(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]


def test_non_streaming_shape_and_exact_usage(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    body = raw.http_response.json()
    strict = ChatCompletion.model_validate(body)  # validates types, unlike the SDK's lenient parse
    completion = raw.parse()

    assert raw.headers["x-request-id"].startswith("req_")
    assert int(raw.headers["openai-processing-ms"]) >= 0
    assert raw.headers["x-ratelimit-remaining-requests"].isdigit()
    assert strict.id.startswith("chatcmpl-") and strict.object == "chat.completion"
    assert completion.model == "gpt-4o-mini-2024-07-18"  # the dated snapshot, like the real API
    assert completion.system_fingerprint.startswith("fp_") and completion.service_tier == "default"
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.refusal is None
    assert body["choices"][0]["message"]["refusal"] is None
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage.prompt_tokens == reference_chat_tokens(MESSAGES, "o200k_base")
    assert (
        usage.completion_tokens == reference_text_tokens(choice.message.content, "o200k_base") == 16
    )
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details.reasoning_tokens == 0


def test_cl100k_model_counts_names_and_answers_snapshot(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "name": "ada", "content": "Count me, 12345 tokens!"}]
    completion = client.chat.completions.create(model="gpt-3.5-turbo", messages=messages)
    assert completion.model == "gpt-3.5-turbo-0125"
    assert completion.usage.prompt_tokens == reference_chat_tokens(messages, "cl100k_base")
    assert completion.usage.completion_tokens == reference_text_tokens(
        completion.choices[0].message.content, "cl100k_base"
    )


@pytest.mark.parametrize("limit_param", ["max_tokens", "max_completion_tokens"])
def test_token_limit_cuts_the_answer(client: openai.OpenAI, limit_param: str) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, **{limit_param: 5}
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 5
    assert reference_text_tokens(completion.choices[0].message.content, "o200k_base") == 5


def test_answers_are_deterministic_per_prompt(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    again = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    other = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "else"}]
    )
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.choices[0].message.content != other.choices[0].message.content
    assert first.id != again.id


def test_cached_tokens_forced_by_header(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-sim-cached-tokens": "7"}
    )
    assert completion.usage.prompt_tokens_details.cached_tokens == 7
    capped = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-sim-cached-tokens": "100000"}
    )
    assert capped.usage.prompt_tokens_details.cached_tokens == capped.usage.prompt_tokens


def test_n_choices_add_up(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, n=3, max_tokens=4
    )
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert (
        completion.usage.completion_tokens
        == sum(reference_text_tokens(c.message.content, "o200k_base") for c in completion.choices)
        == 12
    )


def test_reasoning_models_bill_hidden_tokens(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="o4-mini", messages=MESSAGES)
    visible = reference_text_tokens(completion.choices[0].message.content, "o200k_base")
    reasoning = completion.usage.completion_tokens_details.reasoning_tokens
    assert completion.model == "o4-mini-2025-04-16"
    assert reasoning == 8 and completion.usage.completion_tokens == visible + reasoning
    starved = client.chat.completions.create(
        model="o4-mini", messages=MESSAGES, max_completion_tokens=5
    )
    assert starved.choices[0].message.content == "" and starved.choices[0].finish_reason == "length"
    assert starved.usage.completion_tokens == 5
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="o4-mini", messages=MESSAGES, max_tokens=50)
    assert refused.value.code == "unsupported_parameter"


def test_stream_without_usage_has_no_usage_chunk(sim_url: str, client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    response = httpx.post(
        f"{sim_url}/chat/completions",
        headers={"authorization": f"Bearer {TEST_KEY}"},
        json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True},
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = _sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
        assert "usage" not in chunk and len(chunk["choices"]) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert (
        chunks[-1]["choices"][0]["finish_reason"] == "stop"
        and chunks[-1]["choices"][0]["delta"] == {}
    )
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == whole.choices[0].message.content
    assert len(chunks) == 2 + whole.usage.completion_tokens  # one chunk per token


def test_stream_with_usage_ends_with_usage_chunk(sim_url: str, client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=6)
    response = httpx.post(
        f"{sim_url}/chat/completions",
        headers={"authorization": f"Bearer {TEST_KEY}"},
        json={
            "model": "gpt-4o-mini",
            "messages": MESSAGES,
            "stream": True,
            "max_tokens": 6,
            "stream_options": {"include_usage": True},
        },
    )
    chunks = [orjson.loads(p) for p in _sse_payloads(response.text)[:-1]]
    assert all(c["usage"] is None for c in chunks[:-1])  # present and null, as the API sends them
    last = chunks[-1]
    assert last["choices"] == []
    assert last["usage"]["prompt_tokens"] == whole.usage.prompt_tokens
    assert last["usage"]["completion_tokens"] == whole.usage.completion_tokens == 6
    assert last["usage"]["total_tokens"] == whole.usage.total_tokens
    assert last["usage"]["prompt_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 0}
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"


def test_sdk_stream_with_and_without_usage(client: openai.OpenAI) -> None:
    plain = list(
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    )
    assert all(chunk.usage is None and chunk.choices for chunk in plain)
    counted = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert [c for c in counted if c.usage is not None] == [counted[-1]]
    assert counted[-1].choices == [] and counted[-1].usage.completion_tokens == 16


async def test_async_client_streams(aclient: openai.AsyncOpenAI) -> None:
    stream = await aclient.chat.completions.create(
        model="gpt-4.1-nano", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        usage = chunk.usage or usage
    assert usage is not None and usage.completion_tokens == reference_text_tokens(
        text, "o200k_base"
    )
    whole = await aclient.chat.completions.create(model="gpt-4.1-nano", messages=MESSAGES)
    assert whole.choices[0].message.content == text and whole.model == "gpt-4.1-nano-2025-04-14"


def test_stream_options_need_stream(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream_options={"include_usage": True}
        )
    assert refused.value.param == "stream_options"


def test_models_unknown_wrong_kind_and_fine_tuned_names(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-9-imaginary", messages=MESSAGES)
    assert missing.value.code == "model_not_found"
    assert missing.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError) as wrong:
        client.chat.completions.create(model="davinci-002", messages=MESSAGES)
    assert "not a chat model" in wrong.value.message
    # Each endpoint answers a model of another kind in its own words, as the real API does.
    with pytest.raises(openai.NotFoundError) as wrong:
        client.completions.create(model="gpt-4o-mini", prompt="hi")
    assert "is a chat model and not supported in the v1/completions endpoint" in wrong.value.message
    with pytest.raises(openai.BadRequestError) as wrong:
        client.embeddings.create(model="gpt-4o-mini", input="hi")
    assert wrong.value.param == "model" and "`gpt-4o-mini` does not support embeddings" in wrong.value.message
    with pytest.raises(openai.BadRequestError) as missing_model:
        client.embeddings.create(model="", input="hi")
    assert "you must provide a model parameter" in missing_model.value.message
    name = "ft:gpt-4o-mini-2024-07-18:acme:support:AbC12345"
    completion = client.chat.completions.create(model=name, messages=MESSAGES)
    assert completion.model == name
    assert completion.usage.prompt_tokens == reference_chat_tokens(MESSAGES, "o200k_base")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="ft:not-a-base:acme::x", messages=MESSAGES)


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"gpt-4o-mini", "gpt-4o-mini-2024-07-18", "text-embedding-3-small", "davinci-002"} <= ids
    model = client.models.retrieve("gpt-4o")
    assert model.id == "gpt-4o" and model.object == "model" and model.owned_by == "system"
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("nope-1")
    assert missing.value.code == "model_not_found"


def test_authentication(sim_url: str) -> None:
    missing = httpx.post(
        f"{sim_url}/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES}
    )
    assert (
        missing.status_code == 401
        and "didn't provide an API key" in missing.json()["error"]["message"]
    )
    with openai.OpenAI(base_url=sim_url, api_key="not-an-sk-key", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as refused:
            bad.models.list()
    assert refused.value.code == "invalid_api_key"


def test_configured_key_is_the_only_one_accepted() -> None:
    with run_in_thread(SimulatorConfig(api_key="sk-the-one", fast=True)) as url:
        with openai.OpenAI(base_url=url, api_key="sk-another", max_retries=0) as other:
            with pytest.raises(openai.AuthenticationError):
                other.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        with openai.OpenAI(base_url=url, api_key="sk-the-one", max_retries=0) as right:
            fast = right.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert (
        fast.usage.prompt_tokens == 12 and fast.usage.completion_tokens == 16
    )  # fixed usage in fast mode
