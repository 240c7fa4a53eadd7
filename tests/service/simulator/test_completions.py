"""Legacy completions (gpt-3.5-turbo-instruct, babbage-002, davinci-002 and their ft: models)."""

from __future__ import annotations

import httpx
import openai
import orjson
import pytest
from openai.types import Completion

from tests.service.simulator.reference import TEST_KEY, reference_text_tokens

PROMPT = "Once upon a time, in a simulated land,"


def test_completion_shape_and_usage(client: openai.OpenAI) -> None:
    raw = client.completions.with_raw_response.create(model="gpt-3.5-turbo-instruct", prompt=PROMPT)
    strict = Completion.model_validate(raw.http_response.json())
    assert strict.id.startswith("cmpl-") and strict.object == "text_completion"
    assert strict.model == "gpt-3.5-turbo-instruct"
    choice = strict.choices[0]
    assert choice.finish_reason == "stop" and choice.logprobs is None
    assert strict.usage.prompt_tokens == reference_text_tokens(PROMPT, "cl100k_base")
    assert strict.usage.completion_tokens == reference_text_tokens(choice.text, "cl100k_base") == 16


def test_prompt_forms_limits_and_echo(client: openai.OpenAI) -> None:
    many = client.completions.create(
        model="davinci-002", prompt=["a b c", "d e"], n=2, max_tokens=3
    )
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    assert all(c.finish_reason == "length" for c in many.choices)
    assert many.usage.completion_tokens == 12
    assert many.usage.prompt_tokens == reference_text_tokens(
        "a b c", "cl100k_base"
    ) + reference_text_tokens("d e", "cl100k_base")
    tokens = client.completions.create(
        model="babbage-002", prompt=[[1, 2, 3, 4], [5, 6]], max_tokens=2
    )
    assert tokens.usage.prompt_tokens == 6
    echoed = client.completions.create(model="babbage-002", prompt=PROMPT, echo=True, max_tokens=2)
    assert echoed.choices[0].text.startswith(PROMPT)
    assert echoed.usage.completion_tokens == 2


def test_streaming_with_usage(sim_url: str, client: openai.OpenAI) -> None:
    whole = client.completions.create(model="gpt-3.5-turbo-instruct", prompt=PROMPT, max_tokens=5)
    chunks = list(
        client.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt=PROMPT,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert chunks[-2].choices[0].finish_reason == "length"
    raw = httpx.post(
        f"{sim_url}/completions",
        headers={"authorization": f"Bearer {TEST_KEY}"},
        json={"model": "gpt-3.5-turbo-instruct", "prompt": PROMPT, "stream": True, "max_tokens": 2},
    ).text
    payloads = [line[6:] for line in raw.split("\n\n") if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    assert all("usage" not in orjson.loads(p) for p in payloads[:-1])


def test_fine_tuned_legacy_and_wrong_endpoint(client: openai.OpenAI) -> None:
    name = "ft:davinci-002:acme:legal:Zz9Yy8Xx"
    assert client.completions.create(model=name, prompt="x").model == name
    with pytest.raises(openai.NotFoundError) as refused:
        client.completions.create(model="gpt-4o-mini", prompt="x")
    assert "chat model" in refused.value.message
