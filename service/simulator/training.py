"""A training file's examples and billable tokens, and OpenAI's rule for default epochs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from service.simulator.catalog import ModelInfo
from service.simulator.tokens import count_chat_messages, count_text

# OpenAI's rule for n_epochs="auto" (from its fine-tuning data-preparation cookbook).
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25

FAILURE_MARKER = "SIMULATE_FAILURE"  # anywhere in the file or its name: the job fails mid-training
INVALID_MARKER = "SIMULATE_INVALID_FILE"  # the job fails validation


@dataclass(frozen=True, slots=True)
class TrainingFile:
    """The outcome of validating a training file as the fine-tuning service would."""

    examples: int
    billable_tokens: int  # tokens of one pass over the file: what one epoch bills
    problem: str | None = None  # why validation fails, or None
    fail_mid_training: bool = False


def auto_epochs(examples: int) -> int:
    """n_epochs when the request leaves it to "auto"."""
    if examples <= 0:
        return TARGET_EPOCHS
    if examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // examples)
    if examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // examples)
    return TARGET_EPOCHS


def auto_batch_size(examples: int) -> int:
    """Roughly 0.2% of the examples, between 1 and 256."""
    return max(1, min(256, round(examples * 0.002)))


def example_limit(model: ModelInfo) -> int:
    """Tokens per example the trainer keeps; longer examples are truncated, and billed truncated."""
    return 65_536 if model.encoding == "o200k_base" else 16_385


def _example_tokens(line: bytes, number: int, model: ModelInfo) -> int:
    try:
        example = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise ValueError(f"Line {number} is not valid JSON.") from None
    if not isinstance(example, dict):
        raise ValueError(f"Line {number} is not a JSON object.")
    if model.kind == "completion":
        prompt, completion = example.get("prompt"), example.get("completion")
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise ValueError(f"Line {number} must have string 'prompt' and 'completion' fields.")
        return count_text(prompt, model.encoding) + count_text(completion, model.encoding)
    messages = example.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(m, dict) for m in messages)
    ):
        raise ValueError(f"Line {number} must have a non-empty 'messages' array.")
    if not any(m.get("role") == "assistant" for m in messages):
        raise ValueError(f"Line {number} has no assistant message.")
    return count_chat_messages(messages, model.answer, model.encoding)


def analyse(path: Path, filename: str, model: ModelInfo, *, min_examples: int) -> TrainingFile:
    """Count examples and billable tokens line by line; a large file is never read whole."""
    examples = tokens = 0
    fail = FAILURE_MARKER in filename
    invalid_marked = INVALID_MARKER in filename
    limit = example_limit(model)
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fail = fail or FAILURE_MARKER.encode() in line
            invalid_marked = invalid_marked or INVALID_MARKER.encode() in line
            try:
                tokens += min(limit, _example_tokens(line, number, model))
            except ValueError as exc:
                return TrainingFile(examples, tokens, problem=str(exc))
            examples += 1
    if invalid_marked:
        return TrainingFile(
            examples, tokens, problem="The training file was marked invalid for this simulation."
        )
    if examples < min_examples:
        return TrainingFile(
            examples,
            tokens,
            problem=f"Training file has {examples} example(s), but must have at least "
            f"{min_examples} examples",
        )
    return TrainingFile(examples, tokens, fail_mid_training=fail)
