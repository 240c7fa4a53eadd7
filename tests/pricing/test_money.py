from __future__ import annotations

from decimal import Decimal

import pytest

from pricing.errors import InexactRateError
from pricing.money import (
    format_usd,
    nano_per_token_to_usd_per_1k,
    nano_to_usd,
    usd_per_1k_to_nano_per_token,
    usd_per_1m_to_nano_per_token,
    usd_to_nano,
)


@pytest.mark.parametrize(
    ("usd_per_1k", "nano"),
    [
        ("0.008", 8_000),
        ("0.012", 12_000),
        ("0.016", 16_000),
        ("0.000025", 25),  # $0.025 per 1M
        ("0.001875", 1_875),  # $1.875 per 1M
        ("0.00002", 20),
        ("0.03", 30_000),
        ("0", 0),
        (" 0.0004 ", 400),
    ],
)
def test_usd_per_1k_converts_exactly(usd_per_1k: str, nano: int) -> None:
    assert usd_per_1k_to_nano_per_token(usd_per_1k) == nano


def test_usd_per_1m() -> None:
    assert usd_per_1m_to_nano_per_token("0.025") == 25
    assert usd_per_1m_to_nano_per_token("3.75") == 3_750
    with pytest.raises(InexactRateError):
        usd_per_1m_to_nano_per_token("0.0001")


@pytest.mark.parametrize("bad", ["0.0000001", "0.0000255", "1e-7"])
def test_sub_nano_rates_are_refused(bad: str) -> None:
    with pytest.raises(InexactRateError, match="not a whole number"):
        usd_per_1k_to_nano_per_token(bad)


@pytest.mark.parametrize("bad", [0.008, 8, None])
def test_non_strings_are_refused(bad: object) -> None:
    with pytest.raises(InexactRateError, match="decimal strings"):
        usd_per_1k_to_nano_per_token(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["abc", "", "NaN", "Infinity", "-0.001"])
def test_garbage_and_negative_are_refused(bad: str) -> None:
    with pytest.raises(InexactRateError):
        usd_per_1k_to_nano_per_token(bad)


def test_back_to_usd_per_1k() -> None:
    assert nano_per_token_to_usd_per_1k(8_000) == "0.008"
    assert nano_per_token_to_usd_per_1k(25) == "0.000025"
    assert nano_per_token_to_usd_per_1k(30_000) == "0.03"
    assert nano_per_token_to_usd_per_1k(0) == "0"


def test_display_keeps_full_precision() -> None:
    assert format_usd(20_000_000) == "0.020000000"
    assert format_usd(2_400_000_000) == "2.400000000"
    assert format_usd(1) == "0.000000001"
    assert format_usd(0) == "0.000000000"
    assert format_usd(-1_500_000_000) == "-1.500000000"
    assert nano_to_usd(123_456_789_012) == Decimal("123.456789012")


def test_usd_amounts_parse_exactly() -> None:
    assert usd_to_nano("12.50") == 12_500_000_000
    assert usd_to_nano("0.000000001") == 1
    with pytest.raises(InexactRateError):
        usd_to_nano("0.0000000001")
