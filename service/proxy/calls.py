"""What metering needs from an inference request body, read once and validated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.errors import InvalidRequest

# Far above any model's output limit: anything larger is a client bug, refused before it costs.
MAX_TOKENS_CEILING = 1_000_000
MAX_CHOICES = 128


@dataclass(frozen=True, slots=True)
class InferenceCall:
    endpoint: str  # chat.completions | completions | embeddings
    model: str
    stream: bool
    client_wants_usage: bool
    max_output_tokens: int | None
    choices: int
    payload: dict[str, Any]


def parse_call(endpoint: str, payload: Any) -> InferenceCall:
    """Validate the fields Farebox meters on; everything else is OpenAI's to judge."""
    if not isinstance(payload, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("You must provide a model parameter.", param="model")
    stream = payload.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    stream = bool(stream) and endpoint != "embeddings"
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object.", param="stream_options")
    wants_usage = bool(options and options.get("include_usage") is True)

    max_out = _max_output(payload)
    choices = _choices(payload, endpoint)
    if endpoint == "chat.completions":
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest("'messages' must be a non-empty array.", param="messages")
        if not all(isinstance(m, dict) for m in messages):
            raise InvalidRequest("Each message must be an object.", param="messages")
    elif endpoint == "completions":
        if "prompt" in payload and not isinstance(payload["prompt"], (str, list)):
            raise InvalidRequest("'prompt' must be a string or an array.", param="prompt")
    elif endpoint == "embeddings":
        if not isinstance(payload.get("input"), (str, list)):
            raise InvalidRequest("'input' must be a string or an array.", param="input")
    return InferenceCall(endpoint, model, stream, wants_usage, max_out, choices, payload)


def _max_output(payload: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = payload.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest(f"'{name}' must be an integer.", param=name)
        if value < 1:
            raise InvalidRequest(f"'{name}' must be at least 1, got {value}.", param=name)
        if value > MAX_TOKENS_CEILING:
            raise InvalidRequest(
                f"'{name}' is {value}, above any model's output limit.", param=name
            )
        return value
    return None


def _choices(payload: dict[str, Any], endpoint: str) -> int:
    n = payload.get("n", 1)
    if n is None:
        n = 1
    if isinstance(n, bool) or not isinstance(n, int) or n < 1 or n > MAX_CHOICES:
        raise InvalidRequest(f"'n' must be an integer between 1 and {MAX_CHOICES}.", param="n")
    if endpoint == "completions":
        best_of = payload.get("best_of") or 1
        if isinstance(best_of, bool) or not isinstance(best_of, int) or best_of < 1 or best_of > MAX_CHOICES:
            raise InvalidRequest("'best_of' must be an integer between 1 and 128.", param="best_of")
        n = max(n, best_of)  # best_of candidates are generated and billed
    return n
