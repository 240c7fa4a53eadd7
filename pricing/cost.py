"""Pricing usage: token counts times per-token nano rates, exact and additive."""

from __future__ import annotations

from dataclasses import dataclass

from pricing.catalog import ModelLimits, ModelRates
from pricing.errors import PricingError, UnpricedUsageError


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one request or job; cached_tokens are the part of prompt_tokens read from cache."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    training_tokens: int = 0

    def __post_init__(self) -> None:
        for field in ("prompt_tokens", "cached_tokens", "completion_tokens", "training_tokens"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PricingError(f"{field} must be a non-negative integer, got {value!r}")
        if self.cached_tokens > self.prompt_tokens:
            raise PricingError(
                f"cached_tokens ({self.cached_tokens}) exceed prompt_tokens ({self.prompt_tokens})"
            )

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.cached_tokens + other.cached_tokens,
            self.completion_tokens + other.completion_tokens,
            self.training_tokens + other.training_tokens,
        )

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Cost:
    """A price in nano-USD, split by component; input_nano covers the uncached prompt tokens."""

    input_nano: int = 0
    cached_input_nano: int = 0
    output_nano: int = 0
    training_nano: int = 0

    @property
    def total_nano(self) -> int:
        return self.input_nano + self.cached_input_nano + self.output_nano + self.training_nano

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.input_nano + other.input_nano,
            self.cached_input_nano + other.cached_input_nano,
            self.output_nano + other.output_nano,
            self.training_nano + other.training_nano,
        )


def _charge(tokens: int, rate: int | None, component: str, rates: ModelRates) -> int:
    if tokens == 0:
        return 0
    if rate is None:
        kind = "fine-tuned " if rates.fine_tuned else ""
        raise UnpricedUsageError(
            f"{kind}{rates.base_model} has no {component} rate (from {rates.effective_from}), "
            f"but the usage has {tokens} {component} tokens"
        )
    return tokens * rate


def price(usage: Usage, rates: ModelRates) -> Cost:
    """The exact cost of `usage`; cached tokens pay the cached rate, or the input rate if none."""
    cached_rate = rates.cached_input if rates.cached_input is not None else rates.input
    return Cost(
        input_nano=_charge(usage.prompt_tokens - usage.cached_tokens, rates.input, "input", rates),
        cached_input_nano=_charge(usage.cached_tokens, cached_rate, "cached input", rates),
        output_nano=_charge(usage.completion_tokens, rates.output, "output", rates),
        training_nano=_charge(usage.training_tokens, rates.training, "training", rates),
    )


def worst_case_output_tokens(requested_max_tokens: int | None, limits: ModelLimits) -> int:
    """The most output tokens one completion can have: its max_tokens, capped at the model's limit,
    or the limit itself when the request gives none."""
    # The context window is not subtracted: the prompt count may be a local estimate, and an
    # overestimated prompt would shrink the output allowance below what upstream can return.
    if requested_max_tokens is None:
        return limits.max_output_tokens
    return min(max(0, requested_max_tokens), limits.max_output_tokens)


def max_cost(
    prompt_tokens: int, max_output_tokens: int | None, rates: ModelRates, *, choices: int = 1
) -> int:
    """The largest cost a request can reach, in nano-USD, for reservations: nothing cached and every
    one of `choices` completions running to the output limit (None: the model's own limit)."""
    if choices < 1:
        raise PricingError(f"choices must be at least 1, got {choices}")
    output = worst_case_output_tokens(max_output_tokens, rates.limits)
    worst = Usage(prompt_tokens=prompt_tokens, completion_tokens=output * choices)
    return price(worst, rates).total_nano
