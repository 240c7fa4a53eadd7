"""Property tests: pricing is exact integer arithmetic, additive and monotone, and reservations
always cover what a request can cost."""

from __future__ import annotations

import json
from datetime import datetime, time
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from pricing.catalog import ModelRates, load_catalog
from pricing.cost import Usage, max_cost, price
from pricing.estimates import MAX_DEFAULT_EPOCHS, MIN_DEFAULT_EPOCHS, auto_epochs
from pricing.money import nano_per_token_to_usd_per_1k, usd_per_1k_to_nano_per_token
from pricing.training import TrainingFileValidator, validate_training_file


def _all_rates() -> list[ModelRates]:
    """The rates of every period of every series in the shipped catalog, as lookups return them."""
    catalog = load_catalog()
    found = []
    for entry in catalog.entries:
        at = datetime.combine(entry.effective_from, time())
        rates = catalog.rates_for(
            entry.base_model, fine_tuned=entry.fine_tuned, at=at, snapshot=entry.snapshot
        )
        assert rates is not None and rates.effective_from == entry.effective_from
        found.append(rates)
    return found


ALL_RATES = _all_rates()
TOKENS = st.integers(min_value=0, max_value=2_000_000)


@st.composite
def usage_for(draw: st.DrawFn, rates: ModelRates) -> Usage:
    prompt = draw(TOKENS) if rates.input is not None else 0
    cached = draw(st.integers(min_value=0, max_value=prompt))
    completion = draw(TOKENS) if rates.output is not None else 0
    training = draw(TOKENS) if rates.training is not None else 0
    return Usage(prompt, cached, completion, training)


@st.composite
def rates_and_usages(draw: st.DrawFn, count: int) -> tuple[ModelRates, list[Usage]]:
    rates = draw(st.sampled_from(ALL_RATES))
    return rates, [draw(usage_for(rates)) for _ in range(count)]


@given(rates_and_usages(2))
def test_price_is_an_exact_integer_and_additive(case: tuple[ModelRates, list[Usage]]) -> None:
    rates, (a, b) = case
    pa, pb, pab = price(a, rates), price(b, rates), price(a + b, rates)
    assert type(pab.total_nano) is int
    assert pa + pb == pab
    assert pa.total_nano + pb.total_nano == pab.total_nano


@given(
    rates_and_usages(1),
    st.sampled_from(["prompt", "cached", "completion", "training"]),
    st.integers(1, 10_000),
)
def test_price_is_monotone_in_tokens(
    case: tuple[ModelRates, list[Usage]], component: str, extra: int
) -> None:
    rates, (usage,) = case
    more = {
        "prompt": Usage(
            usage.prompt_tokens + extra,
            usage.cached_tokens,
            usage.completion_tokens,
            usage.training_tokens,
        ),
        "cached": Usage(
            usage.prompt_tokens + extra,
            usage.cached_tokens + extra,
            usage.completion_tokens,
            usage.training_tokens,
        ),
        "completion": Usage(
            usage.prompt_tokens,
            usage.cached_tokens,
            usage.completion_tokens + extra,
            usage.training_tokens,
        ),
        "training": Usage(
            usage.prompt_tokens,
            usage.cached_tokens,
            usage.completion_tokens,
            usage.training_tokens + extra,
        ),
    }[component]
    offered = {
        "prompt": rates.input,
        "cached": rates.input,
        "completion": rates.output,
        "training": rates.training,
    }
    if offered[component] is None:
        return
    assert price(more, rates).total_nano >= price(usage, rates).total_nano


@given(rates_and_usages(1), st.integers(1, 4))
def test_max_cost_covers_any_usage_within_the_limits(
    case: tuple[ModelRates, list[Usage]], choices: int
) -> None:
    rates, (usage,) = case
    limit = rates.limits.max_output_tokens
    within = Usage(
        usage.prompt_tokens, usage.cached_tokens, min(usage.completion_tokens, limit * choices)
    )
    assert (
        max_cost(within.prompt_tokens, None, rates, choices=choices)
        >= price(within, rates).total_nano
    )
    requested = min(usage.completion_tokens, limit)
    tight = Usage(usage.prompt_tokens, usage.cached_tokens, requested)
    assert max_cost(usage.prompt_tokens, requested, rates) >= price(tight, rates).total_nano


def test_every_catalog_rate_round_trips() -> None:
    for entry in load_catalog().entries:
        for component, text in entry.usd_per_1k:
            nano = getattr(entry, component)
            assert usd_per_1k_to_nano_per_token(nano_per_token_to_usd_per_1k(nano)) == nano
            assert Decimal(nano_per_token_to_usd_per_1k(nano)) == Decimal(text)


@given(st.integers(min_value=0, max_value=10**15))
def test_nano_conversion_round_trips(nano: int) -> None:
    assert usd_per_1k_to_nano_per_token(nano_per_token_to_usd_per_1k(nano)) == nano


@given(st.integers(min_value=1, max_value=10**7))
def test_auto_epochs_bounds(n: int) -> None:
    epochs = auto_epochs(n)
    assert MIN_DEFAULT_EPOCHS <= epochs <= MAX_DEFAULT_EPOCHS
    assert auto_epochs(n + 1) <= epochs  # more data never means more epochs
    if 34 <= n <= 8_333:
        assert epochs == 3
    if n * 3 < 100:
        # The most epochs that stay within 100 examples seen, unless capped.
        assert epochs == MAX_DEFAULT_EPOCHS or n * epochs <= 100 < n * (epochs + 1)
    if n * epochs > 25_000:
        assert epochs == MIN_DEFAULT_EPOCHS  # above the target only when floored


LINES = [
    json.dumps(
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "é🚀"}]}
    ),
    "{broken",
    "",
    json.dumps({"prompt": "p", "completion": "c"}),
    "[]",
]


@settings(max_examples=50)
@given(
    st.lists(st.sampled_from(LINES), max_size=12),
    st.lists(st.integers(1, 40), min_size=1, max_size=20),
)
def test_chunking_never_changes_the_report(lines: list[str], cuts: list[int]) -> None:
    data = "\n".join(lines).encode()
    expected = validate_training_file([line.encode() for line in lines], "gpt-4o-mini")
    validator = TrainingFileValidator("gpt-4o-mini")
    start, i = 0, 0
    while start < len(data):
        size = cuts[i % len(cuts)]
        validator.feed_bytes(data[start : start + size])
        start, i = start + size, i + 1
    assert validator.finish() == expected
