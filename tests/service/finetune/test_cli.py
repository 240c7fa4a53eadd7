"""`farebox estimate`: the training cost and the inference comparison, printed from a local file."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from service.cli import app
from tests.service.finetune.data import write_exact_tokens, write_training_file

runner = CliRunner()


def test_100k_tokens_at_3_epochs_on_gpt_35_turbo_cost_2_40_at_the_august_2023_rate(tmp_path: Path) -> None:
    path = write_exact_tokens(tmp_path / "train.jsonl", 100_000)
    result = runner.invoke(app, ["estimate", str(path), "--model", "gpt-3.5-turbo", "--epochs", "3", "--at", "2023-09-01"],
                           env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "100,000" in out and "300,000" in out
    assert "$2.40" in out
    assert "$0.008 / 1K tokens (from 2023-08-22)" in out
    assert "Inference per 1,000 requests" in out and "$3.30" in out and "$4.80" in out  # base vs fine-tuned


def test_json_output_uses_the_auto_epochs_rule_and_the_prompt_sizes(tmp_path: Path) -> None:
    path = write_training_file(tmp_path / "small.jsonl", count=20)
    result = runner.invoke(app, [
        "estimate", str(path), "-m", "gpt-3.5-turbo", "--at", "2024-03-01", "--json",
        "--base-prompt-tokens", "3000", "--prompt-tokens", "100", "--completion-tokens", "50", "--requests", "10",
    ])
    assert result.exit_code == 0, result.output
    est = json.loads(result.output)
    assert (est["examples"], est["n_epochs"], est["n_epochs_auto"]) == (20, 5, True)  # 100 / 20 examples
    assert est["trained_tokens"] == est["tokens_per_epoch"] * 5
    assert est["cost_nano"] == est["trained_tokens"] * 8_000
    comparison = est["comparison"]
    # Rates in force on 2024-03-01: base $0.0005/$0.0015, fine-tuned $0.003/$0.006 per 1K.
    assert comparison["base"]["cost_nano"] == 10 * (3000 * 500 + 50 * 1500)
    assert comparison["fine_tuned"]["cost_nano"] == 10 * (100 * 3000 + 50 * 6000)
    assert comparison["saving_nano"] == comparison["base"]["cost_nano"] - comparison["fine_tuned"]["cost_nano"]


def test_an_invalid_file_names_its_lines_and_fails(tmp_path: Path) -> None:
    path = write_training_file(tmp_path / "bad.jsonl", count=12)
    content = path.read_bytes().splitlines(keepends=True)
    content[2] = b'{"prompt": "p", "completion": "c"}\n'
    path.write_bytes(b"".join(content))
    result = runner.invoke(app, ["estimate", str(path), "--model", "gpt-3.5-turbo"], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "line 3: gpt-3.5-turbo is trained on chat examples" in result.output


def test_a_model_that_cannot_be_fine_tuned_is_an_error(tmp_path: Path) -> None:
    path = write_training_file(tmp_path / "t.jsonl", count=12)
    result = runner.invoke(app, ["estimate", str(path), "--model", "gpt-4-turbo"])
    assert result.exit_code == 2
    assert "not a model the catalog can fine-tune" in result.output
