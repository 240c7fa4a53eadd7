"""What a fine-tuning job will cost, and what inference on its model costs against the base model.

One estimate feeds both the `farebox estimate` command (rich tables) and the HTTP endpoint (JSON).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from decimal import Decimal
from typing import Any

from rich.table import Table

from pricing import (
    InferenceComparison,
    PricingError,
    TrainingEstimate,
    TrainingFileReport,
    compare_inference,
    estimate_training,
    nano_per_token_to_usd_per_1k,
    nano_to_usd,
)
from pricing.catalog import ModelRates


@dataclass(frozen=True, slots=True)
class PromptSizes:
    """The comparison's request shape: a long prompt on the base model, a short one on the fine-tune."""

    base_prompt_tokens: int = 2000
    fine_tuned_prompt_tokens: int = 200
    completion_tokens: int = 150
    requests: int = 1000

    def __post_init__(self) -> None:
        for name in ("base_prompt_tokens", "fine_tuned_prompt_tokens", "completion_tokens"):
            if getattr(self, name) < 0:
                raise PricingError(f"{name} cannot be negative")
        if self.requests < 1:
            raise PricingError("requests must be at least 1")


@dataclass(frozen=True, slots=True)
class Estimate:
    training: TrainingEstimate
    at: datetime
    sizes: PromptSizes
    comparison: InferenceComparison | None
    comparison_error: str | None
    warnings: tuple[str, ...] = ()


def estimate(
    source: TrainingFileReport | int,
    examples: int | None,
    model: str,
    epochs: int | None,
    at: datetime,
    sizes: PromptSizes | None = None,
    warnings: tuple[str, ...] = (),
) -> Estimate:
    """Training cost of `source` (a validated file, or a token count per epoch) on `model` at `at`.

    Raises PricingError when the model cannot be fine-tuned or priced at that date.
    """
    sizes = sizes or PromptSizes()
    training = estimate_training(source, examples, model, epochs, at)
    comparison, error = None, None
    try:
        comparison = compare_inference(
            model,
            base_prompt_tokens=sizes.base_prompt_tokens,
            fine_tuned_prompt_tokens=sizes.fine_tuned_prompt_tokens,
            completion_tokens=sizes.completion_tokens,
            at=at,
            requests=sizes.requests,
        )
    except PricingError as exc:  # the training estimate stands without the comparison
        error = str(exc)
    return Estimate(training, at, sizes, comparison, error, warnings)


def parse_at(text: str | None) -> datetime:
    """A date (midnight UTC) or an ISO timestamp; now when None."""
    if not text:
        return datetime.now(timezone.utc)
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), timezone.utc)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise PricingError(f"'at' must be a date (2023-09-01) or an ISO timestamp, not {text!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def parse_epochs(value: Any) -> int | None:
    """n_epochs as OpenAI takes it: "auto" (None here) or a positive integer."""
    if value is None or value == "auto":
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PricingError(f"n_epochs must be 'auto' or a positive integer, not {value!r}")
    return value


def usd(nano: int) -> str:
    """Dollars for display: at least cents, more places only when they are not zero."""
    amount = nano_to_usd(abs(nano)).normalize()
    if amount.as_tuple().exponent > -2:  # type: ignore[operator]
        amount = amount.quantize(Decimal("0.01"))
    return f"{'-' if nano < 0 else ''}${amount:f}"


def _rates_json(rates: ModelRates, cost_nano: int) -> dict[str, Any]:
    return {
        "input_usd_per_1k": nano_per_token_to_usd_per_1k(rates.input),
        "output_usd_per_1k": nano_per_token_to_usd_per_1k(rates.output),
        "rate_effective_from": rates.effective_from.isoformat(),
        "cost_nano": cost_nano,
        "cost_usd": usd(cost_nano),
    }


def as_json(est: Estimate) -> dict[str, Any]:
    t = est.training
    body: dict[str, Any] = {
        "object": "farebox.training_estimate",
        "model": t.model,
        "base_model": t.base_model,
        "at": est.at.isoformat(),
        "examples": t.examples,
        "tokens_per_epoch": t.tokens_per_epoch,
        "n_epochs": t.epochs,
        "n_epochs_auto": t.epochs_auto,
        "trained_tokens": t.trained_tokens,
        "training_rate": {
            "nano_usd_per_token": t.training_rate_nano,
            "usd_per_1k": nano_per_token_to_usd_per_1k(t.training_rate_nano),
            "effective_from": t.rate_effective_from.isoformat(),
            "source": t.source,
        },
        "cost_nano": t.cost_nano,
        "cost_usd": usd(t.cost_nano),
        "catalog_version": t.catalog_version,
        "comparison": None,
        "comparison_error": est.comparison_error,
        "warnings": list(est.warnings),
    }
    c = est.comparison
    if c is not None:
        s = est.sizes
        break_even = c.break_even_requests(t.cost_nano)
        body["comparison"] = {
            "requests": c.requests,
            "base_model": c.base_model,
            "base_prompt_tokens": s.base_prompt_tokens,
            "fine_tuned_prompt_tokens": s.fine_tuned_prompt_tokens,
            "completion_tokens": s.completion_tokens,
            "base": _rates_json(c.base_rates, c.base_cost_nano),
            "fine_tuned": _rates_json(c.fine_tuned_rates, c.fine_tuned_cost_nano),
            "saving_nano": c.saving_nano,
            "saving_usd": usd(c.saving_nano),
            "break_even_requests": break_even,
        }
    return body


def tables(est: Estimate) -> list[Table]:
    """The estimate as rich tables: the training cost, then the inference comparison."""
    t = est.training
    training = Table(title=f"Fine-tuning {t.model} (rates as of {est.at.date().isoformat()})", show_header=False)
    training.add_column("", style="bold")
    training.add_column("", justify="right")
    if t.examples is not None:
        training.add_row("Examples", f"{t.examples:,}")
    training.add_row("Tokens per epoch", f"{t.tokens_per_epoch:,}")
    training.add_row("Epochs", f"{t.epochs} ({'auto' if t.epochs_auto else 'requested'})")
    training.add_row("Trained tokens", f"{t.trained_tokens:,}")
    training.add_row(
        "Training rate",
        f"${nano_per_token_to_usd_per_1k(t.training_rate_nano)} / 1K tokens (from {t.rate_effective_from.isoformat()})",
    )
    training.add_row("Training cost", usd(t.cost_nano))
    training.add_row("Catalog", t.catalog_version)
    out = [training]
    c = est.comparison
    if c is None:
        return out
    s = est.sizes
    table = Table(title=f"Inference per {c.requests:,} requests: base model with a long prompt vs the fine-tune")
    table.add_column("")
    table.add_column(f"{c.base_model} (base)", justify="right")
    table.add_column("fine-tuned", justify="right")
    table.add_row("Prompt tokens / request", f"{s.base_prompt_tokens:,}", f"{s.fine_tuned_prompt_tokens:,}")
    table.add_row("Completion tokens / request", f"{s.completion_tokens:,}", f"{s.completion_tokens:,}")
    table.add_row(
        "Input rate / 1K", f"${nano_per_token_to_usd_per_1k(c.base_rates.input)}",
        f"${nano_per_token_to_usd_per_1k(c.fine_tuned_rates.input)}",
    )
    table.add_row(
        "Output rate / 1K", f"${nano_per_token_to_usd_per_1k(c.base_rates.output)}",
        f"${nano_per_token_to_usd_per_1k(c.fine_tuned_rates.output)}",
    )
    table.add_row(f"Cost per {c.requests:,} requests", usd(c.base_cost_nano), usd(c.fine_tuned_cost_nano))
    break_even = c.break_even_requests(t.cost_nano)
    table.add_row(
        "Fine-tune saves", "", usd(c.saving_nano) + (
            f" (training paid back after {break_even:,} requests)" if break_even is not None else " (never pays back)"
        ),
    )
    out.append(table)
    return out
