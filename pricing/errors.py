"""The exceptions pricing/ raises; service/ maps them onto its own FareboxError types."""

from __future__ import annotations


class PricingError(ValueError):
    """Base of every pricing/ error: a value cannot be priced, parsed or loaded exactly."""


class InexactRateError(PricingError):
    """A rate or amount is not a whole number of nano-USD."""


class CatalogError(PricingError):
    """The rate catalog file is malformed."""


class UnpricedUsageError(PricingError):
    """Usage has tokens in a component the rates do not offer (e.g. output tokens on embeddings)."""


class UnknownModelError(PricingError):
    """The model is not in the catalog, so it has no limits, encoding or rates."""


class EncodingIntegrityError(PricingError):
    """A tokenizer ranks file does not match its official sha256; it is refused."""
