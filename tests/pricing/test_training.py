from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from pricing.errors import UnknownModelError
from pricing.tokens import count_chat_messages, count_text
from pricing.training import (
    LineError,
    TrainingFileValidator,
    validate_training_file,
)


def chat(*turns: tuple[str, Any], **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": r, "content": c} for r, c in turns], **extra}


GOOD = chat(("system", "You are terse."), ("user", "Capital of France?"), ("assistant", "Paris."))


def jsonl(*examples: Any) -> list[bytes]:
    return [(e if isinstance(e, str) else json.dumps(e)).encode() + b"\n" for e in examples]


def test_a_good_chat_file() -> None:
    report = validate_training_file(jsonl(*[GOOD] * 12), "gpt-3.5-turbo-0613")
    per_example = count_chat_messages(GOOD["messages"], "gpt-3.5-turbo-0613")
    assert report.ok and report.format == "chat"
    assert (report.lines, report.examples, report.error_count) == (12, 12, 0)
    assert report.billable_tokens == report.total_tokens == 12 * per_example
    assert report.max_tokens_per_example == report.min_tokens_per_example == per_example
    assert report.tokens_by_encoding == (("cl100k_base", 12 * per_example),)
    assert report.warnings == ()


BAD_LINES: list[tuple[str, str]] = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    (json.dumps({"text": "hi"}), "no 'messages'"),
    (json.dumps({**GOOD, "extra": 1}), "unrecognized key(s) 'extra' in the example"),
    (json.dumps({"messages": []}), "non-empty list"),
    (json.dumps({"messages": "hi"}), "non-empty list"),
    (json.dumps(chat(("user", "hi"))), "no assistant message"),
    (json.dumps(chat(("robot", "hi"), ("assistant", "x"))), "unrecognized role 'robot'"),
    (
        json.dumps({"messages": [{"content": "hi"}, {"role": "assistant", "content": "x"}]}),
        "message 1 has no 'role'",
    ),
    (
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "hi", "mood": "ok"},
                    {"role": "assistant", "content": "x"},
                ]
            }
        ),
        "message 1 has unrecognized key(s) 'mood'",
    ),
    (
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant"}]}),
        "message 2 has no 'content'",
    ),
    (json.dumps(chat(("user", None), ("assistant", "x"))), "content may be null only"),
    (json.dumps(chat(("user", 5), ("assistant", "x"))), "content must be a string"),
    (json.dumps(chat(("user", [{"type": "text"}]), ("assistant", "x"))), "needs a string 'text'"),
    (json.dumps(chat(("user", []), ("assistant", "x"))), "content list is empty"),
    (
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "q", "weight": 1},
                    {"role": "assistant", "content": "a"},
                ]
            }
        ),
        "'weight' is only allowed on assistant",
    ),
    (
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a", "weight": 2},
                ]
            }
        ),
        "'weight' must be 0 or 1",
    ),
    (
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "tool", "content": "r"},
                    {"role": "assistant", "content": "a"},
                ]
            }
        ),
        "needs a string 'tool_call_id'",
    ),
    (json.dumps({"prompt": "q", "completion": "a"}), "trained on chat examples"),
    ('"just a string"', "expected a JSON object, got str"),
]


def test_bad_lines_are_reported_with_their_line_numbers() -> None:
    lines = jsonl(GOOD) + [raw.encode() + b"\n" for raw, _ in BAD_LINES] + jsonl(GOOD)
    report = validate_training_file(lines, "gpt-4o-mini-2024-07-18")
    assert report.examples == 2 and not report.ok
    assert report.error_count == len(BAD_LINES)
    for error, (_, reason) in zip(report.errors, BAD_LINES, strict=True):
        assert reason in error.reason, (error, reason)
    assert [e.line for e in report.errors] == list(range(2, 2 + len(BAD_LINES)))
    assert str(report.errors[0]).startswith("line 2: not valid JSON")


def test_tool_calls_and_null_content_are_accepted() -> None:
    example = {
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "assistant", "content": "Sunny.", "weight": 1},
        ],
        "tools": [{"type": "function", "function": {"name": "w", "parameters": {}}}],
    }
    report = validate_training_file(jsonl(example), "gpt-4o-mini")
    assert report.error_count == 0 and report.examples == 1
    without_tools = count_chat_messages(example["messages"], "gpt-4o-mini")
    assert report.billable_tokens > without_tools  # the tool definitions are trained on too


def test_blank_lines() -> None:
    trailing = jsonl(GOOD, GOOD) + [b"\n", b"   \n"]
    report = validate_training_file(trailing, "gpt-4o")
    assert report.error_count == 0 and report.lines == 2
    inner = jsonl(GOOD) + [b"\n"] + jsonl(GOOD)
    report = validate_training_file(inner, "gpt-4o")
    assert report.errors == (LineError(2, "blank line inside the file"),)
    many = jsonl(GOOD) + [b"\n"] * 500 + jsonl(GOOD)
    report = validate_training_file(many, "gpt-4o", max_errors=10)
    assert report.error_count == 500 and report.lines == 502 and report.examples == 2
    assert [e.line for e in report.errors] == list(range(2, 12))


def test_invalid_utf8_line() -> None:
    report = validate_training_file(jsonl(GOOD) + [b'{"messages": "\xff"}\n'], "gpt-4o")
    assert report.errors == (LineError(2, "line is not valid UTF-8"),)


def test_errors_are_capped_but_all_counted() -> None:
    def lines() -> Iterator[bytes]:
        yield from jsonl(GOOD)
        for _ in range(5_000):
            yield b"nope\n"

    report = validate_training_file(lines(), "gpt-4o-mini", max_errors=100)
    assert report.error_count == 5_000
    assert len(report.errors) == 100
    assert report.errors[-1].line == 101


def test_examples_over_the_limit_are_billed_at_the_limit() -> None:
    long = chat(("user", "hello " * 5_000), ("assistant", "ok"))
    full = count_chat_messages(long["messages"], "gpt-3.5-turbo-0613")
    assert full > 4096
    short = count_chat_messages(GOOD["messages"], "gpt-3.5-turbo-0613")
    report = validate_training_file(jsonl(long, GOOD), "gpt-3.5-turbo-0613")
    assert report.too_long_examples == 1 and report.example_limit == 4096
    assert report.billable_tokens == 4096 + short
    assert report.total_tokens == full + short
    assert report.max_tokens_per_example == full
    assert any("truncated" in w for w in report.warnings)
    # The 0125 snapshot allows 16385 tokens per example, so nothing is cut.
    later = validate_training_file(jsonl(long, GOOD), "gpt-3.5-turbo-0125")
    assert later.too_long_examples == 0 and later.billable_tokens == full + short


def test_warnings_for_missing_roles_and_small_files() -> None:
    no_system = chat(("user", "q"), ("assistant", "a"))
    report = validate_training_file(jsonl(no_system, GOOD), "gpt-4o")
    assert report.missing_system == 1 and report.missing_user == 0
    assert "1 examples have no system message" in report.warnings
    assert any("at least 10" in w for w in report.warnings)
    empty = validate_training_file([], "gpt-4o")
    assert not empty.ok and "the file has no valid examples" in empty.warnings


def test_legacy_prompt_completion_format() -> None:
    example = {"prompt": "Capital of France ->", "completion": " Paris"}
    report = validate_training_file(jsonl(example, example), "babbage-002")
    assert report.format == "completion" and report.error_count == 0
    per = count_text(example["prompt"], "cl100k_base") + count_text(
        example["completion"], "cl100k_base"
    )
    assert report.billable_tokens == 2 * per
    bad = validate_training_file(
        jsonl(GOOD, {"prompt": "x", "completion": 3}, {"prompt": "x", "completion": "y", "n": 1}),
        "davinci-002",
    )
    assert [e.line for e in bad.errors] == [1, 2, 3]
    assert "prompt/completion examples, not chat" in bad.errors[0].reason
    assert "'completion' must be a string" in bad.errors[1].reason
    assert "unrecognized key(s) 'n'" in bad.errors[2].reason


def test_without_a_model_the_file_sets_the_format_and_both_encodings_count() -> None:
    report = validate_training_file(jsonl(GOOD, {"prompt": "a", "completion": "b"}))
    assert report.model is None and report.format == "chat"
    assert report.errors == (LineError(2, "mixes completion examples into a chat file"),)
    names = [name for name, _ in report.tokens_by_encoding]
    assert names == ["cl100k_base", "o200k_base"]
    assert report.billable_tokens == max(
        count_chat_messages(GOOD["messages"], "gpt-3.5-turbo"),
        count_chat_messages(GOOD["messages"], "gpt-4o"),
    )


def test_models_that_cannot_be_fine_tuned_are_refused() -> None:
    for model in ("text-embedding-3-small", "o3-mini", "gpt-4"):
        with pytest.raises(UnknownModelError):
            TrainingFileValidator(model)


def test_chunked_bytes_match_line_by_line() -> None:
    lines = (
        jsonl(GOOD, "{bad", chat(("user", "ünïcödé 🚀"), ("assistant", "ok")))
        + [b"\n"]
        + jsonl(GOOD)
    )
    whole = b"".join(lines).rstrip(b"\n")  # the last line has no newline
    expected = validate_training_file(lines, "gpt-4o")
    for size in (1, 3, 7, 64, len(whole)):
        validator = TrainingFileValidator("gpt-4o")
        for start in range(0, len(whole), size):
            validator.feed_bytes(whole[start : start + size])
        assert validator.finish() == expected, size


def test_overlong_lines_are_rejected_without_buffering_them() -> None:
    validator = TrainingFileValidator("gpt-4o", max_line_bytes=1_000)
    validator.feed_bytes(json.dumps(GOOD).encode() + b"\n")
    validator.feed_bytes(b'{"messages": "' + b"x" * 5_000)
    validator.feed_bytes(b"x" * 5_000)
    assert len(validator._buffer) == 0
    validator.feed_bytes(b'"}\n' + json.dumps(GOOD).encode())
    report = validator.finish()
    assert report.examples == 2
    assert report.errors == (LineError(2, "line is longer than 1000 bytes"),)
