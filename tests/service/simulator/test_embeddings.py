"""Embeddings: input forms, float and base64 encodings, dimensions, usage."""

from __future__ import annotations

import math

import openai
import pytest

from tests.service.simulator.reference import reference_text_tokens


def test_float_vectors_are_unit_length_with_exact_usage(client: openai.OpenAI) -> None:
    texts = ["hello world", "a second, longer input string"]
    result = client.embeddings.create(
        model="text-embedding-3-small", input=texts, encoding_format="float"
    )
    assert result.model == "text-embedding-3-small" and result.object == "list"
    assert [d.index for d in result.data] == [0, 1]
    for item in result.data:
        assert len(item.embedding) == 1536
        assert math.isclose(math.fsum(x * x for x in item.embedding), 1.0, rel_tol=1e-4)
    assert result.data[0].embedding != result.data[1].embedding
    expected = sum(reference_text_tokens(t, "cl100k_base") for t in texts)
    assert result.usage.prompt_tokens == result.usage.total_tokens == expected


def test_base64_default_decodes_to_the_float_vector(client: openai.OpenAI) -> None:
    as_float = client.embeddings.create(
        model="text-embedding-3-large", input="same", encoding_format="float"
    )
    as_default = client.embeddings.create(
        model="text-embedding-3-large", input="same"
    )  # SDK asks base64
    assert len(as_default.data[0].embedding) == 3072
    assert as_default.data[0].embedding == pytest.approx(as_float.data[0].embedding)


def test_dimensions_and_token_inputs(client: openai.OpenAI) -> None:
    short = client.embeddings.create(
        model="text-embedding-3-small", input=[[1, 2, 3], [4, 5]], dimensions=64
    )
    assert [len(d.embedding) for d in short.data] == [64, 64]
    assert short.usage.prompt_tokens == 5
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="text-embedding-ada-002", input="x", dimensions=64)
    assert refused.value.param == "dimensions"


def test_ada_answers_with_its_internal_name(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="text-embedding-ada-002", input="x")
    assert result.model == "text-embedding-ada-002-v2"
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="gpt-4o-mini", input="x")
