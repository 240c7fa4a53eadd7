from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pricing.catalog import load_catalog
from pricing.cost import Cost, Usage, max_cost, price, worst_case_output_tokens
from pricing.errors import PricingError, UnpricedUsageError
from pricing.models import resolve_model

AUG_2023 = datetime(2023, 9, 1, tzinfo=UTC)
MID_2025 = datetime(2025, 6, 1, tzinfo=UTC)


def test_fine_tuned_gpt35_request_at_august_2023_rates_costs_two_cents() -> None:
    rates = resolve_model("ft:gpt-3.5-turbo-0613:acme::x").rates(AUG_2023)
    assert rates is not None
    cost = price(Usage(prompt_tokens=1_000, completion_tokens=500), rates)
    assert cost.total_nano == 20_000_000
    assert (cost.input_nano, cost.output_nano) == (12_000_000, 8_000_000)


def test_training_file_at_august_2023_rate_costs_two_forty() -> None:
    rates = load_catalog().rates_for("gpt-3.5-turbo", fine_tuned=True, at=AUG_2023)
    assert rates is not None
    cost = price(Usage(training_tokens=100_000 * 3), rates)
    assert cost.total_nano == cost.training_nano == 2_400_000_000


def test_cached_tokens_are_a_subset_billed_at_the_cached_rate() -> None:
    rates = resolve_model("gpt-4o-mini").rates(MID_2025)
    assert rates is not None
    cost = price(Usage(prompt_tokens=1_000, cached_tokens=400, completion_tokens=100), rates)
    assert cost.input_nano == 600 * 150
    assert cost.cached_input_nano == 400 * 75
    assert cost.output_nano == 100 * 600
    assert cost.total_nano == 90_000 + 30_000 + 60_000


def test_cached_tokens_pay_the_input_rate_where_no_cached_rate_exists() -> None:
    rates = resolve_model("gpt-3.5-turbo-0125").rates(MID_2025)
    assert rates is not None and rates.cached_input is None
    cost = price(Usage(prompt_tokens=1_000, cached_tokens=1_000), rates)
    assert cost.cached_input_nano == 1_000 * 500 and cost.input_nano == 0


def test_a_component_the_rates_do_not_offer_raises_instead_of_pricing_zero() -> None:
    rates = resolve_model("text-embedding-3-small").rates(MID_2025)
    assert rates is not None
    assert price(Usage(prompt_tokens=10), rates).total_nano == 200
    with pytest.raises(UnpricedUsageError, match="output"):
        price(Usage(prompt_tokens=10, completion_tokens=1), rates)
    base = resolve_model("gpt-4o-mini").rates(MID_2025)
    with pytest.raises(UnpricedUsageError, match="training"):
        price(Usage(training_tokens=1), base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"prompt_tokens": -1},
        {"prompt_tokens": 1, "cached_tokens": 2},
        {"completion_tokens": 1.5},
        {"training_tokens": True},
    ],
)
def test_usage_validates(kwargs: dict) -> None:
    with pytest.raises(PricingError):
        Usage(**kwargs)


def test_usage_and_cost_add() -> None:
    assert Usage(10, 5, 3, 1) + Usage(1, 1, 1, 1) == Usage(11, 6, 4, 2)
    assert (Cost(1, 2, 3, 4) + Cost(10, 20, 30, 40)).total_nano == 110
    assert Usage(10, 0, 5).total_tokens == 15


def test_max_cost_reserves_the_model_limit_when_no_max_tokens() -> None:
    rates = resolve_model("gpt-4o-mini-2024-07-18").rates(MID_2025)
    assert rates is not None
    assert max_cost(1_000, None, rates) == 1_000 * 150 + 16_384 * 600
    assert max_cost(1_000, 100, rates) == 1_000 * 150 + 100 * 600
    # A max_tokens above the model's limit cannot produce more than the limit.
    assert max_cost(1_000, 10**9, rates) == max_cost(1_000, None, rates)
    assert max_cost(1_000, 100, rates, choices=3) == 1_000 * 150 + 300 * 600
    with pytest.raises(PricingError):
        max_cost(1, 1, rates, choices=0)


def test_worst_case_output_uses_snapshot_limits() -> None:
    limits = resolve_model("gpt-4o-2024-05-13").limits()
    assert limits is not None
    assert worst_case_output_tokens(None, limits) == 4096
    assert worst_case_output_tokens(-5, limits) == 0
    assert worst_case_output_tokens(10, limits) == 10


def test_embeddings_reserve_only_input() -> None:
    rates = resolve_model("text-embedding-3-large").rates(MID_2025)
    assert rates is not None
    assert max_cost(8_000, None, rates) == 8_000 * 130
