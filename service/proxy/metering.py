"""From a request and its answer to tokens and nano-USD, using the pure pricing library."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from functools import lru_cache
from typing import Any

import orjson

from pricing.catalog import Catalog, ModelRates, load_catalog
from pricing.cost import Usage, max_cost as pricing_max_cost, price
from pricing.errors import PricingError
from pricing.models import ResolvedModel, resolve_model
from pricing.tokens import count_chat_messages, count_input, count_json, count_text, encoding_name_for
from service.proxy.calls import InferenceCall
from service.proxy.stream_relay import StreamOutcome


class GarbageAnswer(Exception):
    """The upstream answered 200 with a body that is not an OpenAI response."""


@dataclass(frozen=True, slots=True)
class PriceContext:
    """How one request is priced: the resolved model and the rates in force when it started."""

    resolved: ResolvedModel
    rates: ModelRates | None

    @property
    def base_model(self) -> str | None:
        return self.resolved.base_model

    @property
    def fine_tuned(self) -> bool:
        return self.resolved.fine_tuned

    @property
    def priced(self) -> bool:
        return self.rates is not None

    @property
    def catalog_version(self) -> str:
        return self.rates.catalog_version if self.rates is not None else ""


@dataclass(frozen=True, slots=True)
class Metered:
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    cost_nano: int
    source: str  # upstream | tiktoken | none
    priced: bool = True

    @classmethod
    def nothing(cls) -> Metered:
        return cls(0, 0, 0, 0, "none")


def price_context(model: str, at: datetime) -> PriceContext:
    """Rates change only from one UTC day to the next, so one context serves a model all day."""
    day = at.astimezone(timezone.utc).date() if at.tzinfo is not None else at.date()
    return _price_context_on(model, day, load_catalog())


@lru_cache(maxsize=4096)
def _price_context_on(model: str, day: date, catalog: Catalog) -> PriceContext:
    resolved = resolve_model(model, catalog)
    midnight = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    return PriceContext(resolved, resolved.rates(midnight, catalog))


def estimate_prompt_tokens(call: InferenceCall, ctx: PriceContext) -> int:
    """The prompt's tokens counted locally with tiktoken (the reservation's input side)."""
    payload = call.payload
    if call.endpoint == "chat.completions":
        tokens = count_chat_messages(payload["messages"], call.model)
        for extra in ("tools", "functions", "response_format", "tool_choice"):
            if payload.get(extra) is not None:
                tokens += count_json(payload[extra], call.model)
        return tokens
    if call.endpoint == "completions":
        return max(1, count_input(payload.get("prompt"), call.model)) + count_input(payload.get("suffix"), call.model)
    return count_input(payload.get("input"), call.model)


def max_cost(call: InferenceCall, ctx: PriceContext, prompt_tokens: int) -> int:
    """The most this request can cost: every prompt token uncached, every choice at its output limit."""
    if ctx.rates is None:
        return 0
    try:
        if call.endpoint == "embeddings":
            return price(Usage(prompt_tokens=prompt_tokens), ctx.rates).total_nano
        return pricing_max_cost(prompt_tokens, call.max_output_tokens, ctx.rates, choices=call.choices)
    except PricingError:
        return 0


def meter_body(call: InferenceCall, ctx: PriceContext, data: bytes, prompt_estimate: int) -> tuple[Metered, str | None]:
    """Tokens from the upstream's own `usage`; counted with tiktoken only when it gave none."""
    try:
        answer = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise GarbageAnswer(str(exc)) from exc
    if not isinstance(answer, dict):
        raise GarbageAnswer("the answer is not a JSON object")
    model = answer.get("model") if isinstance(answer.get("model"), str) else None
    usage = answer.get("usage")
    if isinstance(usage, dict):
        return _from_usage(usage, ctx), model
    completion = 0
    if call.endpoint != "embeddings":
        encoding = encoding_name_for(call.model)
        completion = sum(count_text(text, encoding) for text in _answer_texts(answer))
    return _priced(prompt_estimate, 0, completion, ctx, "tiktoken"), model


def meter_stream(call: InferenceCall, ctx: PriceContext, outcome: StreamOutcome, prompt_estimate: int) -> Metered:
    """A stream's usage chunk when it came; else the delivered tokens counted with tiktoken."""
    if outcome.usage is not None:
        return _from_usage(outcome.usage, ctx)
    encoding = encoding_name_for(call.model)
    completion = 0
    for event in outcome.events:
        start = event.find(b"{")
        if start < 0:
            continue
        try:
            chunk = orjson.loads(event[start:])
        except orjson.JSONDecodeError:
            continue
        if isinstance(chunk, dict):
            completion += sum(count_text(text, encoding) for text in _chunk_texts(chunk))
    return _priced(prompt_estimate, 0, completion, ctx, "tiktoken")


def _from_usage(usage: dict[str, Any], ctx: PriceContext) -> Metered:
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return _priced(prompt, min(cached, prompt), completion, ctx, "upstream")


def _priced(prompt: int, cached: int, completion: int, ctx: PriceContext, source: str) -> Metered:
    if ctx.rates is None:
        return Metered(prompt, cached, completion, 0, source, priced=False)
    try:
        cost = price(Usage(prompt_tokens=prompt, cached_tokens=cached, completion_tokens=completion), ctx.rates)
    except PricingError:
        return Metered(prompt, cached, completion, 0, source, priced=False)
    return Metered(prompt, cached, completion, cost.total_nano, source)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _answer_texts(answer: dict[str, Any]) -> list[str]:
    texts: list[str] = []
    for choice in answer.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        if isinstance(choice.get("text"), str):
            texts.append(choice["text"])
        message = choice.get("message")
        if isinstance(message, dict):
            texts.extend(_message_texts(message))
    return texts


def _chunk_texts(chunk: dict[str, Any]) -> list[str]:
    texts: list[str] = []
    for choice in chunk.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        if isinstance(choice.get("text"), str):
            texts.append(choice["text"])
        delta = choice.get("delta")
        if isinstance(delta, dict):
            texts.extend(_message_texts(delta))
    return texts


def _message_texts(message: dict[str, Any]) -> list[str]:
    texts = [message[k] for k in ("content", "refusal") if isinstance(message.get(k), str)]
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            texts.extend(v for v in (function.get("name"), function.get("arguments")) if isinstance(v, str))
    return texts
