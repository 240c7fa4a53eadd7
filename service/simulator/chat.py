"""POST /v1/chat/completions: deterministic answers with exact usage, streamed or whole."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from service.simulator import textgen, wire
from service.simulator.catalog import ModelInfo
from service.simulator.errors import ApiError, invalid
from service.simulator.tokens import count_chat_messages

if TYPE_CHECKING:
    from service.simulator.state import Simulator

_SERVICE_TIERS = {
    "auto": "default",
    "default": "default",
    "flex": "flex",
    "priority": "priority",
    "scale": "scale",
}


def fingerprint(model: str) -> str:
    """A stable system_fingerprint per answering model, like fp_44709d6fcb."""
    return "fp_" + hashlib.sha1(model.encode()).hexdigest()[:10]


def _last_text(messages: list[Any]) -> str:
    content = messages[-1].get("content") if isinstance(messages[-1], dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _limit(body: dict[str, Any], info: ModelInfo) -> int | None:
    if info.reasoning and body.get("max_tokens") is not None:
        raise invalid(
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            param="max_tokens",
            code="unsupported_parameter",
        )
    limit = wire.int_param(body, "max_completion_tokens", minimum=1)
    return limit if limit is not None else wire.int_param(body, "max_tokens", minimum=1)


def usage_block(prompt: int, completion: int, cached: int, reasoning: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def header_int(request: Request, name: str) -> int | None:
    raw = request.headers.get(name)
    if raw is None:
        return None
    try:
        return max(0, int(raw))
    except ValueError:
        raise invalid(f"{name} must be an integer", param=name) from None


async def create(sim: Simulator, request: Request) -> Response:
    body = await wire.read_json(request)
    info = sim.catalog.requested(
        body,
        "chat",
        lambda _: ApiError(
            404,
            "This is not a chat model and thus not supported in the v1/chat/completions endpoint. "
            "Did you mean to use v1/completions?",
        ),
    )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("[] is too short - 'messages'", param="messages", code="empty_array")
    n = wire.int_param(body, "n", minimum=1) or 1
    limit = _limit(body, info)
    stream = body.get("stream") is True
    stream_options = body.get("stream_options")
    if stream_options is not None and not stream:
        raise invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
            code="invalid_value",
        )
    config = sim.config
    natural = header_int(request, "x-sim-completion-tokens")
    natural = config.completion_tokens if natural is None else natural
    reasoning = 0
    if info.reasoning:  # hidden reasoning comes first and counts against the same limit
        reasoning = (
            config.reasoning_tokens if limit is None else min(config.reasoning_tokens, limit)
        )
    visible_limit = None if limit is None else limit - reasoning
    encoding = None if config.fast else info.encoding
    seed = _last_text(messages)
    answers = [
        textgen.plan(
            seed if i == 0 else f"{seed}#{i}",
            natural=natural,
            limit=visible_limit,
            opener=True,
            encoding=encoding,
        )
        for i in range(n)
    ]
    if config.fast:
        prompt_tokens = config.fast_prompt_tokens
    else:
        tokenizer_model = info.base or info.answer
        prompt_tokens = count_chat_messages(messages, tokenizer_model, info.encoding)
    cached = min(header_int(request, "x-sim-cached-tokens") or 0, prompt_tokens)
    completion_tokens = sum(a.tokens for a in answers) + reasoning * n
    usage = usage_block(prompt_tokens, completion_tokens, cached, reasoning * n)
    head = {
        "id": wire.new_id("chatcmpl-", 29),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": info.answer,
        "service_tier": _SERVICE_TIERS.get(body.get("service_tier") or "auto", "default"),
        "system_fingerprint": fingerprint(info.answer),
    }
    if stream:
        include_usage = (
            isinstance(stream_options, dict) and stream_options.get("include_usage") is True
        )
        return StreamingResponse(
            _chunks(head, answers, usage if include_usage else None),
            media_type="text/event-stream",
        )
    head["choices"] = [
        {
            "index": i,
            "message": {"role": "assistant", "content": a.text, "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": a.finish_reason,
        }
        for i, a in enumerate(answers)
    ]
    head["usage"] = usage
    return wire.raw_json(orjson.dumps(head))


async def _chunks(
    head: dict[str, Any], answers: list[textgen.Answer], usage: dict[str, Any] | None
) -> AsyncIterator[bytes]:
    """Role chunk, one chunk per token per choice, finish chunks, usage chunk if asked, [DONE]."""
    head = {**head, "object": "chat.completion.chunk"}
    if usage is not None:
        head["usage"] = None  # the real API marks every chunk this way once include_usage is set

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return wire.sse(
            {
                **head,
                "choices": [
                    {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
        )

    for i in range(len(answers)):
        yield chunk(i, {"role": "assistant", "content": "", "refusal": None})
    for step in range(max(len(a.pieces) for a in answers)):
        for i, answer in enumerate(answers):
            if step < len(answer.pieces):
                yield chunk(i, {"content": answer.pieces[step]})
    for i, answer in enumerate(answers):
        yield chunk(i, {}, answer.finish_reason)
    if usage is not None:
        yield wire.sse({**head, "choices": [], "usage": usage})
    yield wire.DONE
