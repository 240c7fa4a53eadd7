"""Fine-tuning estimates: OpenAI's `auto` epochs, the training cost of a file, and what a
fine-tuned model saves per request against its base model."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime

from pricing.catalog import Catalog, ModelRates, load_catalog
from pricing.cost import Usage, price
from pricing.errors import PricingError, UnknownModelError, UnpricedUsageError
from pricing.models import ResolvedModel, resolve_model
from pricing.training import TrainingFileReport

# The cookbook's defaults for n_epochs="auto".
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25


def auto_epochs(n_examples: int) -> int:
    """The epochs OpenAI picks for n_epochs="auto": 3, more for small files, fewer for huge ones."""
    if n_examples < 1:
        raise PricingError(f"a training file needs at least one example, got {n_examples}")
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        # Integer division, as in OpenAI's data-preparation cookbook (33 examples -> 3 epochs).
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


@dataclass(frozen=True, slots=True)
class TrainingEstimate:
    """The expected cost of a fine-tuning job: tokens x epochs x the training rate in force."""

    model: str
    base_model: str
    examples: int | None
    tokens_per_epoch: int
    epochs: int
    epochs_auto: bool
    trained_tokens: int
    cost_nano: int
    training_rate_nano: int
    rate_effective_from: date
    catalog_version: str
    source: str


def training_rates(model: str, at: datetime, catalog: Catalog | None = None) -> ModelRates:
    """The fine-tuned rates, training rate included, for tuning `model` at `at`; raise if none."""
    resolved = resolve_model(model, catalog)
    rates = _fine_tuned_rates(resolved, at, catalog)
    if rates.training is None:
        raise UnpricedUsageError(f"{model} has no training rate on {at.date()}")
    return rates


def _fine_tuned_rates(resolved: ResolvedModel, at: datetime, catalog: Catalog | None) -> ModelRates:
    cat = catalog or load_catalog()
    if resolved.base_model is None or not cat.has_model(resolved.base_model):
        raise UnknownModelError(f"{resolved.name!r} is not in the rate catalog")
    rates = cat.rates_for(resolved.base_model, fine_tuned=True, at=at, snapshot=resolved.snapshot)
    if rates is None:
        raise UnpricedUsageError(f"{resolved.name} had no fine-tuning prices on {at.date()}")
    return rates


def _tokens_from(report: TrainingFileReport, model: str, catalog: Catalog | None) -> int:
    if report.model is not None:
        same = resolve_model(report.model, catalog)
        wanted = resolve_model(model, catalog)
        if (same.base_model, same.limits(catalog)) == (wanted.base_model, wanted.limits(catalog)):
            return report.billable_tokens
    limits = resolve_model(model, catalog).limits(catalog)
    counted = report.tokens_for_encoding(limits.encoding) if limits else None
    # Counted for another model or before the model was known: the uncapped count is an upper bound.
    return counted if counted is not None else report.total_tokens


def estimate_training(
    report_or_tokens: TrainingFileReport | int,
    n_examples: int | None,
    model: str,
    epochs: int | None,
    at: datetime,
    *,
    catalog: Catalog | None = None,
) -> TrainingEstimate:
    """Estimate a job on `model` (a base, snapshot or ft: name); epochs None means OpenAI's auto
    rule, which needs the example count (taken from the report when not given)."""
    if isinstance(report_or_tokens, TrainingFileReport):
        tokens = _tokens_from(report_or_tokens, model, catalog)
        if n_examples is None:
            n_examples = report_or_tokens.examples
    else:
        tokens = report_or_tokens
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise PricingError(f"training tokens must be a non-negative integer, got {tokens!r}")
    if epochs is None:
        if n_examples is None:
            raise PricingError("epochs='auto' needs the number of examples")
        chosen, is_auto = auto_epochs(n_examples), True
    elif isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise PricingError(f"epochs must be a positive integer, got {epochs!r}")
    else:
        chosen, is_auto = epochs, False
    rates = training_rates(model, at, catalog)
    trained = tokens * chosen
    return TrainingEstimate(
        model=model,
        base_model=rates.base_model,
        examples=n_examples,
        tokens_per_epoch=tokens,
        epochs=chosen,
        epochs_auto=is_auto,
        trained_tokens=trained,
        cost_nano=price(Usage(training_tokens=trained), rates).training_nano,
        training_rate_nano=rates.training or 0,
        rate_effective_from=rates.effective_from,
        catalog_version=rates.catalog_version,
        source=rates.source,
    )


@dataclass(frozen=True, slots=True)
class InferenceComparison:
    """Cost of `requests` requests on the base model (long prompt) and a fine-tune (short one)."""

    base_model: str
    requests: int
    base_cost_nano: int
    fine_tuned_cost_nano: int
    base_rates: ModelRates
    fine_tuned_rates: ModelRates

    @property
    def saving_nano(self) -> int:
        """What the fine-tune saves over `requests` requests; negative when it costs more."""
        return self.base_cost_nano - self.fine_tuned_cost_nano

    def break_even_requests(self, training_cost_nano: int) -> int | None:
        """Requests that pay back the training cost; None if the fine-tune saves nothing."""
        if self.saving_nano <= 0:
            return None
        return math.ceil(training_cost_nano * self.requests / self.saving_nano)


def compare_inference(
    model: str,
    *,
    base_prompt_tokens: int,
    fine_tuned_prompt_tokens: int,
    completion_tokens: int,
    at: datetime,
    requests: int = 1000,
    catalog: Catalog | None = None,
) -> InferenceComparison:
    """Compare `requests` requests (1K by default) on `model` with a long prompt against its
    fine-tune with a shorter one, since shorter prompts are why people fine-tune."""
    if requests < 1:
        raise PricingError(f"requests must be at least 1, got {requests}")
    resolved = resolve_model(model, catalog)
    cat = catalog or load_catalog()
    if resolved.base_model is None or not cat.has_model(resolved.base_model):
        raise UnknownModelError(f"{model!r} is not in the rate catalog")
    base = cat.rates_for(resolved.base_model, fine_tuned=False, at=at, snapshot=resolved.snapshot)
    if base is None:
        raise UnpricedUsageError(f"{model} had no prices on {at.date()}")
    tuned = _fine_tuned_rates(resolved, at, catalog)
    base_usage = Usage(base_prompt_tokens * requests, 0, completion_tokens * requests)
    tuned_usage = Usage(fine_tuned_prompt_tokens * requests, 0, completion_tokens * requests)
    return InferenceComparison(
        base_model=resolved.base_model,
        requests=requests,
        base_cost_nano=price(base_usage, base).total_nano,
        fine_tuned_cost_nano=price(tuned_usage, tuned).total_nano,
        base_rates=base,
        fine_tuned_rates=tuned,
    )
