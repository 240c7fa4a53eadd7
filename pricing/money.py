"""Exact money: published USD rates to integer nano-USD, and nano-USD back to display strings."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from pricing.errors import InexactRateError

NANO_PER_USD = 1_000_000_000
TOKENS_PER_1K = 1_000
_NANO_PER_USD_PER_1K = NANO_PER_USD // TOKENS_PER_1K  # USD per 1K tokens -> nUSD per token
_DISPLAY_PLACES = Decimal(1).scaleb(-9)


def _decimal(text: str) -> Decimal:
    if not isinstance(text, str):
        # Floats would already have lost the exact published figure.
        raise InexactRateError(f"rates must be decimal strings, got {type(text).__name__} {text!r}")
    try:
        value = Decimal(text.strip())
    except InvalidOperation as exc:
        raise InexactRateError(f"not a decimal number: {text!r}") from exc
    if not value.is_finite():
        raise InexactRateError(f"not a finite number: {text!r}")
    if value < 0:
        raise InexactRateError(f"negative amount: {text!r}")
    return value


def _whole(value: Decimal, what: str) -> int:
    if value != value.to_integral_value():
        raise InexactRateError(f"{what} is not a whole number of nano-USD ({value})")
    return int(value)


def usd_per_1k_to_nano_per_token(usd_per_1k: str) -> int:
    """Convert "0.008" (USD per 1K tokens) to 8000 (nano-USD per token); raise if not exact."""
    return _whole(_decimal(usd_per_1k) * _NANO_PER_USD_PER_1K, f"{usd_per_1k} USD per 1K tokens")


def usd_per_1m_to_nano_per_token(usd_per_1m: str) -> int:
    """Convert "0.15" (USD per 1M tokens) to 150 (nano-USD per token); raise if not exact."""
    return _whole(_decimal(usd_per_1m) * (NANO_PER_USD // 1_000_000), f"{usd_per_1m} USD per 1M")


def nano_per_token_to_usd_per_1k(nano_per_token: int) -> str:
    """The USD-per-1K decimal string of a per-token nano rate, without trailing zeros."""
    value = Decimal(nano_per_token) / _NANO_PER_USD_PER_1K
    text = format(value.normalize(), "f")
    return text


def usd_to_nano(usd: str) -> int:
    """Parse a USD amount such as "12.50" into nano-USD; raise if it has sub-nano digits."""
    return _whole(_decimal(usd) * NANO_PER_USD, f"{usd} USD")


def nano_to_usd(nano: int) -> Decimal:
    """The exact Decimal USD value of a nano-USD amount, always with nine places."""
    return (Decimal(nano) / NANO_PER_USD).quantize(_DISPLAY_PLACES)


def format_usd(nano: int) -> str:
    """Display nano-USD as a USD string at full precision: 20_000_000 -> "0.020000000"."""
    return format(nano_to_usd(nano), "f")
