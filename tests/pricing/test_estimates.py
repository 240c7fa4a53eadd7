from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest

from pricing.errors import PricingError, UnknownModelError, UnpricedUsageError
from pricing.estimates import auto_epochs, compare_inference, estimate_training
from pricing.training import validate_training_file

AUG_2023 = datetime(2023, 9, 1, tzinfo=UTC)
MID_2025 = datetime(2025, 6, 1, tzinfo=UTC)


def test_training_estimate_at_august_2023_rate() -> None:
    estimate = estimate_training(100_000, None, "gpt-3.5-turbo", 3, AUG_2023)
    assert estimate.cost_nano == 2_400_000_000
    assert (estimate.trained_tokens, estimate.epochs, estimate.epochs_auto) == (300_000, 3, False)
    assert estimate.training_rate_nano == 8_000
    assert estimate.rate_effective_from == date(2023, 8, 22)
    assert estimate.catalog_version


@pytest.mark.parametrize(
    ("n", "epochs"),
    [
        (1, 25),
        (4, 25),
        (5, 20),
        (10, 10),
        (25, 4),
        (26, 3),
        (33, 3),
        (34, 3),
        (100, 3),
        (8_333, 3),
        (8_334, 2),
        (12_500, 2),
        (12_501, 1),
        (100_000, 1),
    ],
)
def test_auto_epochs(n: int, epochs: int) -> None:
    assert auto_epochs(n) == epochs


def test_auto_epochs_needs_examples() -> None:
    with pytest.raises(PricingError):
        auto_epochs(0)


def test_estimate_from_a_report_uses_auto_epochs_and_its_billable_tokens() -> None:
    example = {
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    }
    lines = [json.dumps(example).encode()] * 20
    report = validate_training_file(lines, "gpt-4o-mini-2024-07-18")
    estimate = estimate_training(report, None, "gpt-4o-mini-2024-07-18", None, MID_2025)
    assert estimate.examples == 20 and estimate.epochs == 5 and estimate.epochs_auto
    assert estimate.tokens_per_epoch == report.billable_tokens
    assert estimate.cost_nano == report.billable_tokens * 5 * 3_000
    # Validated before the model was known: the count in the model's encoding is used.
    unknown = validate_training_file(lines)
    later = estimate_training(unknown, None, "gpt-3.5-turbo", 2, MID_2025)
    assert later.tokens_per_epoch == unknown.tokens_for_encoding("cl100k_base")


def test_continued_fine_tuning_uses_the_base_training_rate() -> None:
    estimate = estimate_training(1_000, None, "ft:gpt-4o-2024-08-06:acme::abc", 1, MID_2025)
    assert estimate.base_model == "gpt-4o" and estimate.cost_nano == 1_000 * 25_000


def test_estimate_errors() -> None:
    with pytest.raises(PricingError, match="number of examples"):
        estimate_training(1_000, None, "gpt-4o-mini", None, MID_2025)
    with pytest.raises(PricingError, match="epochs"):
        estimate_training(1_000, 10, "gpt-4o-mini", 0, MID_2025)
    with pytest.raises(UnknownModelError):
        estimate_training(1_000, 10, "o3-mini", 1, MID_2025)
    with pytest.raises(UnpricedUsageError):
        estimate_training(1_000, 10, "gpt-4", 1, MID_2025)  # never offered for fine-tuning
    with pytest.raises(UnpricedUsageError):
        estimate_training(1_000, 10, "gpt-4.1", 1, AUG_2023)  # not offered yet


def test_compare_inference_per_thousand_requests() -> None:
    comparison = compare_inference(
        "gpt-4o-mini",
        base_prompt_tokens=2_000,
        fine_tuned_prompt_tokens=200,
        completion_tokens=100,
        at=MID_2025,
    )
    assert comparison.requests == 1_000
    assert comparison.base_cost_nano == 1_000 * (2_000 * 150 + 100 * 600)
    assert comparison.fine_tuned_cost_nano == 1_000 * (200 * 300 + 100 * 1_200)
    assert comparison.saving_nano == 360_000_000 - 180_000_000
    assert comparison.break_even_requests(1_000_000_000) == 5_556
    worse = compare_inference(
        "gpt-4o-mini",
        base_prompt_tokens=200,
        fine_tuned_prompt_tokens=200,
        completion_tokens=100,
        at=MID_2025,
    )
    assert worse.saving_nano < 0 and worse.break_even_requests(1) is None
