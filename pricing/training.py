"""Training-file validation and token counting, line by line in bounded memory, following OpenAI's
cookbook "Data preparation and analysis for chat model fine-tuning"."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import tiktoken

from pricing.catalog import DEFAULT_IMAGE_TOKENS, Catalog, load_catalog
from pricing.errors import UnknownModelError
from pricing.models import resolve_model
from pricing.tokens import ENCODING_NAMES, count_messages_with, get_encoding

MAX_ERRORS = 100
MAX_LINE_BYTES = 64 * 1024 * 1024
MIN_EXAMPLES = 10  # OpenAI refuses to start a job on fewer
CHAT_ROLES = frozenset({"system", "user", "assistant", "tool", "function"})
EXAMPLE_KEYS = frozenset({"messages", "tools", "functions", "parallel_tool_calls"})
MESSAGE_KEYS = frozenset(
    {"role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call"}
)
COMPLETION_KEYS = frozenset({"prompt", "completion"})


@dataclass(frozen=True, slots=True)
class LineError:
    """Why one line of a training file was rejected; `line` is 1-based."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True, slots=True)
class TrainingFileReport:
    """What validation found: valid examples, their billable tokens, and the first errors."""

    model: str | None  # the model validated for; None when validated before the model was known
    format: str  # chat | completion | unknown
    lines: int
    examples: int
    error_count: int
    errors: tuple[LineError, ...]  # the first MAX_ERRORS of error_count
    billable_tokens: (
        int  # valid examples, each capped at example_limit (an upper bound if no model)
    )
    total_tokens: int  # valid examples, uncapped
    tokens_by_encoding: tuple[tuple[str, int], ...]  # uncapped totals per encoding counted
    max_tokens_per_example: int
    min_tokens_per_example: int
    example_limit: int | None
    too_long_examples: int
    missing_system: int
    missing_user: int
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """No line was rejected and at least one example is usable."""
        return self.error_count == 0 and self.examples > 0

    def tokens_for_encoding(self, encoding: str) -> int | None:
        return dict(self.tokens_by_encoding).get(encoding)


class _LineRejected(Exception):
    pass


def _reject(reason: str) -> NoReturn:
    raise _LineRejected(reason)


def _names(keys: Iterable[str]) -> str:
    return ", ".join(repr(k) for k in sorted(keys))


def _check_content_parts(index: int, parts: list[Any]) -> None:
    if not parts:
        _reject(f"message {index}: content list is empty")
    for part in parts:
        if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
            _reject(f"message {index}: each content part must be an object with a 'type'")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            _reject(f"message {index}: a text content part needs a string 'text'")


def _check_message(index: int, message: Any) -> None:
    if not isinstance(message, Mapping):
        _reject(f"message {index} is not an object")
    unknown = set(message) - MESSAGE_KEYS
    if unknown:
        _reject(f"message {index} has unrecognized key(s) {_names(unknown)}")
    if "role" not in message:
        _reject(f"message {index} has no 'role'")
    role = message["role"]
    if role not in CHAT_ROLES:
        _reject(
            f"message {index} has unrecognized role {role!r}; expected one of {_names(CHAT_ROLES)}"
        )
    if "name" in message and not isinstance(message["name"], str):
        _reject(f"message {index}: 'name' must be a string")
    if "weight" in message:
        if role != "assistant":
            _reject(f"message {index}: 'weight' is only allowed on assistant messages")
        if message["weight"] not in (0, 1) or isinstance(message["weight"], bool):
            _reject(f"message {index}: 'weight' must be 0 or 1")
    calls = message.get("tool_calls")
    if calls is not None:
        if role != "assistant":
            _reject(f"message {index}: 'tool_calls' is only allowed on assistant messages")
        if not isinstance(calls, list) or not all(isinstance(c, Mapping) for c in calls):
            _reject(f"message {index}: 'tool_calls' must be a list of objects")
    if "function_call" in message and role != "assistant":
        _reject(f"message {index}: 'function_call' is only allowed on assistant messages")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        _reject(f"message {index}: a tool message needs a string 'tool_call_id'")
    if role == "function" and not isinstance(message.get("name"), str):
        _reject(f"message {index}: a function message needs a string 'name'")
    if "content" not in message:
        _reject(f"message {index} has no 'content'")
    content = message["content"]
    if content is None:
        if not (role == "assistant" and (calls or message.get("function_call"))):
            _reject(
                f"message {index}: content may be null only on an assistant message "
                "with tool_calls or function_call"
            )
    elif isinstance(content, list):
        _check_content_parts(index, content)
    elif not isinstance(content, str):
        _reject(f"message {index}: content must be a string, a list of parts, or null")


def _check_chat(example: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    unknown = set(example) - EXAMPLE_KEYS
    if unknown:
        _reject(f"unrecognized key(s) {_names(unknown)} in the example")
    messages = example["messages"]
    if not isinstance(messages, list) or not messages:
        _reject("'messages' must be a non-empty list")
    for index, message in enumerate(messages, 1):
        _check_message(index, message)
    if not any(m["role"] == "assistant" for m in messages):
        _reject("the example has no assistant message")
    for key in ("tools", "functions"):
        if key in example and not isinstance(example[key], list):
            _reject(f"'{key}' must be a list")
    return messages


def _check_completion(example: Mapping[str, Any]) -> tuple[str, str]:
    unknown = set(example) - COMPLETION_KEYS
    if unknown:
        _reject(f"unrecognized key(s) {_names(unknown)} in a prompt/completion example")
    for key in ("prompt", "completion"):
        if not isinstance(example.get(key), str):
            _reject(f"'{key}' must be a string")
    return example["prompt"], example["completion"]


class TrainingFileValidator:
    """Validates a JSONL training file fed line by line (or in raw chunks) and keeps only counters,
    so a file of any size is checked in bounded memory."""

    def __init__(
        self,
        model: str | None = None,
        *,
        max_errors: int = MAX_ERRORS,
        max_line_bytes: int = MAX_LINE_BYTES,
        catalog: Catalog | None = None,
    ) -> None:
        self._catalog = catalog or load_catalog()
        self._model = model
        self._format = "unknown"
        self._limit: int | None = None
        self._image_tokens = DEFAULT_IMAGE_TOKENS
        names: tuple[str, ...] = ENCODING_NAMES
        if model is not None:
            resolved = resolve_model(model, self._catalog)
            limits = resolved.limits(self._catalog)
            if limits is None or not resolved.known or limits.training_format == "none":
                raise UnknownModelError(f"{model!r} is not a model the catalog can fine-tune")
            self._format = limits.training_format
            self._limit = limits.training_example_limit
            self._image_tokens = limits.image_tokens
            names = (limits.encoding,)
        self._encodings: tuple[tiktoken.Encoding, ...] = tuple(get_encoding(n) for n in names)
        self._totals = [0] * len(self._encodings)
        self._max_errors = max_errors
        self._max_line_bytes = max_line_bytes
        self._line = 0
        self._blank_run = 0  # consecutive blank lines just read; an error only if data follows
        self._buffer = bytearray()
        self._overlong = False
        self._errors: list[LineError] = []
        self._error_count = 0
        self._examples = 0
        self._billable = 0
        self._uncapped = 0
        self._max = 0
        self._min: int | None = None
        self._too_long = 0
        self._missing_system = 0
        self._missing_user = 0

    def feed_bytes(self, chunk: bytes) -> None:
        """Feed raw file bytes in chunks of any size; each complete line is validated on arrival."""
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                self._buffer_part(chunk[start:])
                return
            self._buffer_part(chunk[start:end])
            if self._overlong:
                self._line += 1
                self._flush_blanks()
                self._error(self._line, f"line is longer than {self._max_line_bytes} bytes")
                self._overlong = False
            else:
                self.feed_line(bytes(self._buffer))
            self._buffer.clear()
            start = end + 1

    def _buffer_part(self, part: bytes) -> None:
        if self._overlong:
            return
        if len(self._buffer) + len(part) > self._max_line_bytes:
            self._overlong = True
            self._buffer.clear()
            return
        self._buffer += part

    def feed_line(self, raw: bytes | str) -> None:
        """Validate the next line of the file (with or without its newline)."""
        self._line += 1
        number = self._line
        if isinstance(raw, bytes):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                self._flush_blanks()
                self._error(number, "line is not valid UTF-8")
                return
        else:
            text = raw
        if not text.strip():
            # Trailing blank lines are harmless; a blank line followed by more data is an error.
            self._blank_run += 1
            return
        self._flush_blanks()
        try:
            self._example(text)
        except _LineRejected as rejected:
            self._error(number, str(rejected))

    def _flush_blanks(self) -> None:
        first = self._line - self._blank_run
        for number in range(first, first + min(self._blank_run, self._max_errors)):
            self._error(number, "blank line inside the file")
        self._error_count += max(0, self._blank_run - self._max_errors)
        self._blank_run = 0

    def _error(self, number: int, reason: str) -> None:
        self._error_count += 1
        if len(self._errors) < self._max_errors:
            self._errors.append(LineError(number, reason))

    def _example(self, text: str) -> None:
        try:
            example = json.loads(text)
        except json.JSONDecodeError as exc:
            _reject(f"not valid JSON: {exc.msg} at column {exc.colno}")
        except RecursionError:
            _reject("not valid JSON: nested too deeply")
        if not isinstance(example, dict):
            _reject(f"expected a JSON object, got {type(example).__name__}")
        if "messages" in example:
            kind = "chat"
        elif "prompt" in example or "completion" in example:
            kind = "completion"
        else:
            _reject("no 'messages' list (chat format) or 'prompt'/'completion' pair")
        if self._format != "unknown" and kind != self._format:
            _reject(self._format_mismatch(kind))
        if kind == "chat":
            messages = _check_chat(example)
            counts = [
                count_messages_with(enc, messages, self._image_tokens)
                + sum(
                    len(enc.encode_ordinary(json.dumps(example[k], separators=(",", ":"))))
                    for k in ("tools", "functions")
                    if k in example
                )
                for enc in self._encodings
            ]
            roles = {m["role"] for m in messages}
            self._missing_system += "system" not in roles
            self._missing_user += "user" not in roles
        else:
            prompt, completion = _check_completion(example)
            counts = [
                len(enc.encode_ordinary(prompt)) + len(enc.encode_ordinary(completion))
                for enc in self._encodings
            ]
        self._format = kind  # the first valid line fixes the format when no model was given
        self._count(counts)

    def _format_mismatch(self, kind: str) -> str:
        if self._model is None:
            return f"mixes {kind} examples into a {self._format} file"
        if self._format == "chat":
            return (
                f'{self._model} is trained on chat examples {{"messages": [...]}}, '
                "not prompt/completion"
            )
        return f"{self._model} is trained on prompt/completion examples, not chat messages"

    def _count(self, counts: list[int]) -> None:
        for i, n in enumerate(counts):
            self._totals[i] += n
        tokens = max(counts)  # without a model, the larger encoding's count is the upper bound
        self._uncapped += tokens
        self._examples += 1
        self._max = max(self._max, tokens)
        self._min = tokens if self._min is None else min(self._min, tokens)
        if self._limit is not None and tokens > self._limit:
            self._too_long += 1
            tokens = self._limit  # OpenAI truncates long examples, so bills at most the limit
        self._billable += tokens

    def finish(self) -> TrainingFileReport:
        """Close the file (a final line without a newline counts) and report."""
        if self._buffer or self._overlong:
            self.feed_bytes(b"\n")
        warnings = []
        if self._examples == 0:
            warnings.append("the file has no valid examples")
        elif self._examples < MIN_EXAMPLES:
            warnings.append(
                f"{self._examples} valid examples; OpenAI requires at least {MIN_EXAMPLES}"
            )
        if self._too_long:
            warnings.append(
                f"{self._too_long} examples exceed the {self._limit}-token limit "
                "and will be truncated in training"
            )
        if self._missing_system:
            warnings.append(f"{self._missing_system} examples have no system message")
        if self._missing_user:
            warnings.append(f"{self._missing_user} examples have no user message")
        return TrainingFileReport(
            model=self._model,
            format=self._format,
            lines=self._line - self._blank_run,
            examples=self._examples,
            error_count=self._error_count,
            errors=tuple(self._errors),
            billable_tokens=self._billable,
            total_tokens=self._uncapped,
            tokens_by_encoding=tuple(
                (enc.name, total) for enc, total in zip(self._encodings, self._totals, strict=True)
            ),
            max_tokens_per_example=self._max,
            min_tokens_per_example=self._min or 0,
            example_limit=self._limit,
            too_long_examples=self._too_long,
            missing_system=self._missing_system,
            missing_user=self._missing_user,
            warnings=tuple(warnings),
        )


def validate_training_file(
    lines: Iterable[bytes | str],
    model: str | None = None,
    *,
    max_errors: int = MAX_ERRORS,
    catalog: Catalog | None = None,
) -> TrainingFileReport:
    """Validate a JSONL training file given as an iterator of lines (e.g. a file opened "rb").

    With `model`, examples are checked against its format and counted with its encoding, each
    capped at its per-example limit; without it, the file's own format is used and tokens are
    counted in every encoding, uncapped, as an upper bound for any model."""
    validator = TrainingFileValidator(model, max_errors=max_errors, catalog=catalog)
    for line in lines:
        validator.feed_line(line)
    return validator.finish()
