"""POST /v1/completions: the legacy endpoint (gpt-3.5-turbo-instruct, babbage-002, davinci-002).

Fine-tuned babbage-002 and davinci-002 models are served here too.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from service.simulator import textgen, wire
from service.simulator.chat import header_int
from service.simulator.errors import ApiError, invalid
from service.simulator.tokens import count_text

if TYPE_CHECKING:
    from service.simulator.state import Simulator


def _prompts(raw: Any) -> list[str | list[int]]:
    """The prompt forms the API takes: a string, strings, a token array, or token arrays."""
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw:
        if all(isinstance(p, str) for p in raw):
            return list(raw)
        if all(isinstance(t, int) for t in raw):
            return [raw]
        if all(isinstance(p, list) and all(isinstance(t, int) for t in p) for p in raw):
            return list(raw)
    raise invalid(
        "'prompt' must be a string, an array of strings, or token arrays.", param="prompt"
    )


async def create(sim: Simulator, request: Request) -> Response:
    body = await wire.read_json(request)
    info = sim.catalog.requested(
        body,
        "completion",
        lambda _: ApiError(
            404,
            "This is a chat model and not supported in the v1/completions endpoint. "
            "Did you mean to use v1/chat/completions?",
        ),
    )
    prompts = _prompts(body.get("prompt"))
    n = wire.int_param(body, "n", minimum=1) or 1
    limit = wire.int_param(body, "max_tokens", minimum=1)
    stream = body.get("stream") is True
    echo = body.get("echo") is True
    config = sim.config
    natural = header_int(request, "x-sim-completion-tokens")
    natural = config.completion_tokens if natural is None else natural
    encoding = None if config.fast else info.encoding

    prompt_tokens = 0
    choices: list[tuple[str, textgen.Answer]] = []
    for prompt in prompts:
        text = prompt if isinstance(prompt, str) else f"tokens:{prompt[:64]}"
        if config.fast:
            prompt_tokens += config.fast_prompt_tokens
        else:
            prompt_tokens += (
                count_text(prompt, info.encoding) if isinstance(prompt, str) else len(prompt)
            )
        for j in range(n):
            answer = textgen.plan(
                text if j == 0 else f"{text}#{j}",
                natural=natural,
                limit=limit,
                opener=False,
                encoding=encoding,
            )
            choices.append((prompt if echo and isinstance(prompt, str) else "", answer))
    completion_tokens = sum(a.tokens for _, a in choices)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    head = {
        "id": wire.new_id("cmpl-", 29),
        "object": "text_completion",
        "created": int(time.time()),
        "model": info.answer,
    }
    if stream:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return StreamingResponse(
            _chunks(head, choices, usage if include_usage else None), media_type="text/event-stream"
        )
    head["choices"] = [
        {"text": prefix + a.text, "index": i, "logprobs": None, "finish_reason": a.finish_reason}
        for i, (prefix, a) in enumerate(choices)
    ]
    head["usage"] = usage
    return wire.raw_json(orjson.dumps(head))


async def _chunks(
    head: dict[str, Any], choices: list[tuple[str, textgen.Answer]], usage: dict[str, Any] | None
) -> AsyncIterator[bytes]:
    """One chunk per token per choice, a finish chunk per choice, usage chunk if asked, [DONE]."""
    if usage is not None:
        head = {**head, "usage": None}

    def chunk(index: int, text: str, finish: str | None = None) -> bytes:
        return wire.sse(
            {
                **head,
                "choices": [
                    {"text": text, "index": index, "logprobs": None, "finish_reason": finish}
                ],
            }
        )

    for i, (prefix, _) in enumerate(choices):
        if prefix:
            yield chunk(i, prefix)
    for step in range(max((len(a.pieces) for _, a in choices), default=0)):
        for i, (_, answer) in enumerate(choices):
            if step < len(answer.pieces):
                yield chunk(i, answer.pieces[step])
    for i, (_, answer) in enumerate(choices):
        yield chunk(i, "", answer.finish_reason)
    if usage is not None:
        yield wire.sse({**head, "choices": [], "usage": usage})
    yield wire.DONE
