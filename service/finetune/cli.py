"""`farebox estimate`: validate a training file locally and print what fine-tuning on it costs."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from pricing import PricingError, TrainingFileValidator
from service.finetune.estimates import PromptSizes, as_json, estimate, parse_at, tables

READ_BYTES = 1024 * 1024
SHOWN_ERRORS = 20


def register(app: typer.Typer) -> None:
    """Add the fine-tuning commands to the `farebox` CLI."""
    app.command("estimate")(estimate_command)


def estimate_command(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="The JSONL training file."),
    model: str = typer.Option(..., "--model", "-m", help="The model to fine-tune, e.g. gpt-3.5-turbo."),
    epochs: int = typer.Option(None, "--epochs", min=1, help="n_epochs; OpenAI's auto rule when omitted."),
    at: str = typer.Option(None, "--at", help="Price at this date (YYYY-MM-DD) instead of today."),
    base_prompt_tokens: int = typer.Option(2000, min=0, help="Prompt tokens per request on the base model."),
    prompt_tokens: int = typer.Option(200, min=0, help="Prompt tokens per request on the fine-tuned model."),
    completion_tokens: int = typer.Option(150, min=0, help="Completion tokens per request (both models)."),
    requests: int = typer.Option(1000, min=1, help="Requests in the comparison."),
    json_output: bool = typer.Option(False, "--json", help="Print the estimate as JSON."),
) -> None:
    """Count a training file's billable tokens and estimate the job's cost, with the inference comparison."""
    console = Console()
    try:
        when = parse_at(at)
        validator = TrainingFileValidator(model)
    except PricingError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    with file.open("rb") as handle:
        while chunk := handle.read(READ_BYTES):
            validator.feed_bytes(chunk)
    report = validator.finish()
    if not report.ok:
        console.print(f"[red]{file.name} is not a valid training file for {model}:[/red]")
        for error in report.errors[:SHOWN_ERRORS]:
            console.print(f"  {error}")
        if report.error_count > SHOWN_ERRORS:
            console.print(f"  … and {report.error_count - SHOWN_ERRORS} more")
        if report.error_count == 0:
            console.print("  the file has no valid examples")
        raise typer.Exit(1)
    try:
        sizes = PromptSizes(base_prompt_tokens, prompt_tokens, completion_tokens, requests)
        est = estimate(report, None, model, epochs, when, sizes, report.warnings)
    except PricingError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if json_output:
        print(json.dumps(as_json(est), indent=2))
        return
    for table in tables(est):
        console.print(table)
    if est.comparison_error:
        console.print(f"[yellow]no inference comparison:[/yellow] {est.comparison_error}")
    for warning in est.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
