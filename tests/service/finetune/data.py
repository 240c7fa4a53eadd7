"""Training files for the fine-tuning tests: valid chat examples, broken lines, exact token totals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from pricing import validate_training_file

WORDS = "alpha beta gamma delta budget ledger token proxy model answer".split()


def example(i: int, words: int = 12) -> dict:
    text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(words))
    return {
        "messages": [
            {"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": f"Question {i}: {text}?"},
            {"role": "assistant", "content": f"Answer {i}: {text}."},
        ]
    }


def lines(count: int, words: int = 12) -> Iterator[bytes]:
    for i in range(count):
        yield json.dumps(example(i, words)).encode() + b"\n"


def write_training_file(path: Path, count: int = 40, words: int = 12) -> Path:
    path.write_bytes(b"".join(lines(count, words)))
    return path


def write_exact_tokens(path: Path, total: int, model: str = "gpt-3.5-turbo", count: int = 50) -> Path:
    """A valid file whose billable tokens for `model` are exactly `total` (answers padded evenly)."""
    examples = [example(i) for i in range(count)]
    base = validate_training_file([json.dumps(e) for e in examples], model).billable_tokens
    each, rest = divmod(total - base, count)
    # " ok" is one cl100k/o200k token, so each added word adds exactly one token.
    for i, ex in enumerate(examples):
        ex["messages"][-1]["content"] += " ok" * (each + (rest if i == count - 1 else 0))
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    counted = validate_training_file(path.open("rb"), model).billable_tokens
    assert counted == total, f"built {counted} tokens, wanted {total}"
    return path


def billable_tokens(path: Path) -> int:
    """What Farebox records at upload: counted before the model is known (upper bound over encodings)."""
    with path.open("rb") as handle:
        return validate_training_file(handle).billable_tokens
