"""Deterministic answers: words picked by the prompt, each one token in cl100k and o200k.

Because every piece is exactly one token, a stream can send one token per chunk and a limit of
N tokens cuts the answer after N pieces; the non-fast path still counts the text with tiktoken.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache

from service.simulator.tokens import count_text

# Each entry is a single token in both cl100k_base and o200k_base (asserted by the tests).
OPENERS = ("Sure", "The", "Here", "Yes", "This", "Okay", "Certainly", "Well", "Lorem", "Hello")
WORDS = (
    " lorem",
    " ipsum",
    " dolor",
    " sit",
    " amet",
    " consectetur",
    " adipiscing",
    " elit",
    " sed",
    " do",
    " eiusmod",
    " tempor",
    " incididunt",
    " ut",
    " labore",
    " et",
    " dolore",
    " magna",
    " aliqua",
    " enim",
    " ad",
    " minim",
    " veniam",
    " quis",
    " exercitation",
    " nisi",
    " ex",
    " ea",
    " commodo",
    " consequat",
    " the",
    " quick",
    " brown",
    " fox",
    " jumps",
    " over",
    " lazy",
    " dog",
    " a",
    " model",
    " answers",
    " every",
    " request",
    " with",
    " simple",
    " words",
    " that",
    " count",
    " as",
    " one",
    " token",
    " each",
    " for",
    " exact",
    " usage",
    " tests",
    " and",
    " budgets",
    " are",
    " kept",
    " clear",
    " stable",
    " fast",
    " small",
)


@dataclass(frozen=True, slots=True)
class Answer:
    """One generated choice: pieces (one token each), text, token count and finish reason."""

    pieces: tuple[str, ...]
    text: str
    tokens: int
    finish_reason: str


@lru_cache(maxsize=4096)
def pieces_for(seed: int, count: int, opener: bool) -> tuple[str, ...]:
    """count one-token pieces picked by seed; a chat answer starts with a capitalised opener."""
    step = 2 * ((seed >> 8) % 31) + 1  # odd, so the walk visits all 64 words before repeating
    out: list[str] = []
    if opener and count:
        out.append(OPENERS[seed % len(OPENERS)])
    i = len(out)
    while len(out) < count:
        out.append(WORDS[(seed + i * step) % len(WORDS)])
        i += 1
    return tuple(out)


def plan(
    seed_text: str,
    *,
    natural: int,
    limit: int | None,
    opener: bool,
    encoding: str | None,
) -> Answer:
    """`natural` tokens cut to `limit`, counted with tiktoken unless encoding is None (fast)."""
    count = natural if limit is None else min(natural, limit)
    # Keyed by the prompt's crc32, not the prompt, so the cache stays small for long prompts.
    pieces = pieces_for(zlib.crc32(seed_text.encode("utf-8", "surrogatepass")), count, opener)
    text = "".join(pieces)
    tokens = len(pieces) if encoding is None else count_text(text, encoding)
    finish = "length" if limit is not None and limit < natural else "stop"
    return Answer(pieces, text, tokens, finish)
