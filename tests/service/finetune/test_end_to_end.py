"""Fine-tuning through a running Farebox with the official SDK: files, budgets, jobs, billing, scoping."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from pricing import resolve_model
from tests.conftest import Stack
from tests.harness import Proc, wait_until
from tests.service.finetune.data import billable_tokens, write_exact_tokens, write_training_file

FT_RATE_NANO = 8_000  # gpt-3.5-turbo training, $0.008 per 1K tokens at every date in the catalog


def sdk(stack: Stack, key: str) -> OpenAI:
    return OpenAI(base_url=stack.v1, api_key=key, max_retries=0, timeout=30)


def sim_calls(sim: Proc, endpoint: str) -> int:
    stats = httpx.get(f"{sim.base_url}/_sim/stats", timeout=10).raise_for_status().json()
    return int(stats["by_endpoint"].get(endpoint, 0))


def training_rows(stack: Stack, team_id: str) -> list[dict[str, Any]]:
    return [r for r in stack.ledger.rows(team_id) if r["kind"] == "training"]


def standing(stack: Stack, team_id: str) -> tuple[int, int]:
    """(spent, reserved) of the team's only budget."""
    (state,) = stack.admin.standing(team_id)
    return state["spent_nano"], state["reserved_nano"]


def finished(client: OpenAI, job_id: str, status: str, timeout_s: float = 30.0) -> Any:
    return wait_until(
        lambda: (job := client.fine_tuning.jobs.retrieve(job_id)).status == status and job,
        timeout_s, interval_s=0.1, what=f"job {job_id} {status}",
    )


def one_training_row(stack: Stack, team_id: str, job_id: str) -> dict[str, Any]:
    rows = wait_until(lambda: [r for r in training_rows(stack, team_id) if r["job_id"] == job_id],
                      30, what=f"the ledger row of {job_id}")
    assert len(rows) == 1
    return rows[0]


def test_a_job_is_budgeted_trained_billed_once_and_its_model_is_the_teams(
    ft_stack: Stack, ft_simulator: Proc, tmp_path: Path
) -> None:
    admin = ft_stack.admin
    team, key = admin.team_with_key()
    other, other_key = admin.team_with_key()
    budget = admin.budget(team["id"], "0.0001", period="daily", kind="training", name="training")
    a, b = sdk(ft_stack, key), sdk(ft_stack, other_key)

    # The file goes through, counted; the other team cannot see or touch it.
    path = write_training_file(tmp_path / "train.jsonl", count=40)
    with path.open("rb") as handle:
        uploaded = a.files.create(file=handle, purpose="fine-tune")
    assert (uploaded.purpose, uploaded.bytes, uploaded.filename) == ("fine-tune", path.stat().st_size, "train.jsonl")
    assert a.files.retrieve(uploaded.id).id == uploaded.id
    assert uploaded.id in [f.id for f in a.files.list()]
    assert a.files.content(uploaded.id).content == path.read_bytes()
    for attempt in (b.files.retrieve, b.files.content, b.files.delete):
        with pytest.raises(openai.NotFoundError) as hidden:
            attempt(uploaded.id)
        assert hidden.value.message.endswith(f"No such File object: {uploaded.id}")
    assert uploaded.id not in [f.id for f in b.files.list()]

    # Too small a training budget: refused with 429 before anything reaches the upstream.
    jobs_before = sim_calls(ft_simulator, "POST /v1/fine_tuning/jobs")
    with pytest.raises(openai.RateLimitError) as refused:
        a.fine_tuning.jobs.create(training_file=uploaded.id, model="gpt-3.5-turbo", hyperparameters={"n_epochs": 3})
    assert refused.value.code == "budget_exceeded"
    assert "training" in refused.value.message
    assert sim_calls(ft_simulator, "POST /v1/fine_tuning/jobs") == jobs_before
    with pytest.raises(openai.NotFoundError):  # another team cannot train on the file either
        b.fine_tuning.jobs.create(training_file=uploaded.id, model="gpt-3.5-turbo")
    assert sim_calls(ft_simulator, "POST /v1/fine_tuning/jobs") == jobs_before

    # Raised, the budget admits the job and holds its estimate while it runs.
    admin.http.patch(f"/budgets/{budget['id']}", json={"limit_usd": "10"}).raise_for_status()
    job = a.fine_tuning.jobs.create(training_file=uploaded.id, model="gpt-3.5-turbo", hyperparameters={"n_epochs": 3})
    assert sim_calls(ft_simulator, "POST /v1/fine_tuning/jobs") == jobs_before + 1
    estimate = billable_tokens(path) * 3 * FT_RATE_NANO
    # While the job runs its estimate is held (unless it already finished and settled).
    spent, reserved = standing(ft_stack, team["id"])
    assert (spent, reserved) == (0, estimate) or (
        reserved == 0 and one_training_row(ft_stack, team["id"], job.id)["cost_nano"] == spent
    )

    # The other team sees none of the job.
    for attempt in (b.fine_tuning.jobs.retrieve, b.fine_tuning.jobs.cancel, b.fine_tuning.jobs.list_events,
                    b.fine_tuning.jobs.checkpoints.list):
        with pytest.raises(openai.NotFoundError):
            attempt(job.id)
    assert job.id not in [j.id for j in b.fine_tuning.jobs.list()]
    assert job.id in [j.id for j in a.fine_tuning.jobs.list()]

    done = finished(a, job.id, "succeeded")
    assert done.trained_tokens and done.fine_tuned_model
    row = one_training_row(ft_stack, team["id"], job.id)
    assert row["cost_nano"] == done.trained_tokens * FT_RATE_NANO
    assert (row["trained_tokens"], row["training_rate_nano"], row["status"]) == (done.trained_tokens, FT_RATE_NANO, "ok")
    assert row["model_answered"] == done.fine_tuned_model
    assert wait_until(lambda: standing(ft_stack, team["id"]) == (row["cost_nano"], 0), 10, what="the hold settled")
    assert [e.message for e in a.fine_tuning.jobs.list_events(job.id)][0] == "The job has successfully completed"

    # Seeing the end again (a client retrieving the finished job pokes the watcher) adds nothing.
    a.fine_tuning.jobs.retrieve(job.id)
    assert len(training_rows(ft_stack, team["id"])) == 1

    # Inference on the fine-tuned model is the team's, at fine-tuned rates.
    answer = a.chat.completions.create(model=done.fine_tuned_model, messages=[{"role": "user", "content": "hello"}])
    assert answer.usage is not None
    rows = ft_stack.ledger.wait_rows(team["id"], 2)
    inference = [r for r in rows if r["kind"] == "inference"]
    assert len(inference) == 1
    rates = resolve_model(done.fine_tuned_model).rates(datetime.now(timezone.utc))
    assert rates is not None and rates.fine_tuned and rates.input == 3_000 and rates.output == 6_000
    assert inference[0]["fine_tuned"] and inference[0]["input_rate_nano"] == rates.input
    assert inference[0]["cost_nano"] == answer.usage.prompt_tokens * rates.input + answer.usage.completion_tokens * rates.output
    checkpoints = [c.fine_tuned_model_checkpoint for c in a.fine_tuning.jobs.checkpoints.list(job.id)]
    assert checkpoints
    for model in (done.fine_tuned_model, checkpoints[0]):
        with pytest.raises(openai.NotFoundError):
            b.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}])


def test_failed_and_cancelled_jobs_settle_at_what_was_trained(ft_stack: Stack, tmp_path: Path) -> None:
    admin = ft_stack.admin
    team, key = admin.team_with_key()
    admin.budget(team["id"], "10", period="daily", kind="training")
    a = sdk(ft_stack, key)

    failing = write_training_file(tmp_path / "SIMULATE_FAILURE.jsonl", count=40)
    with failing.open("rb") as handle:
        failing_file = a.files.create(file=handle, purpose="fine-tune")
    failed_job = a.fine_tuning.jobs.create(
        training_file=failing_file.id, model="gpt-3.5-turbo",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
    )
    path = write_training_file(tmp_path / "train.jsonl", count=40)
    with path.open("rb") as handle:
        good = a.files.create(file=handle, purpose="fine-tune")
    cancelled_job = a.fine_tuning.jobs.create(training_file=good.id, model="gpt-3.5-turbo")
    assert a.fine_tuning.jobs.cancel(cancelled_job.id).status == "cancelled"

    failed = finished(a, failed_job.id, "failed")
    assert failed.trained_tokens  # the simulator reports what it trained before failing
    row = one_training_row(ft_stack, team["id"], failed_job.id)
    assert (row["status"], row["trained_tokens"]) == ("failed", failed.trained_tokens)
    assert row["cost_nano"] == failed.trained_tokens * FT_RATE_NANO

    assert a.fine_tuning.jobs.retrieve(cancelled_job.id).trained_tokens is None
    row = one_training_row(ft_stack, team["id"], cancelled_job.id)
    assert (row["status"], row["trained_tokens"], row["cost_nano"]) == ("cancelled", 0, 0)
    assert wait_until(lambda: standing(ft_stack, team["id"]) == (failed.trained_tokens * FT_RATE_NANO, 0), 10,
                      what="both holds settled")

    # The team's job list pages newest first, like OpenAI's.
    first = a.fine_tuning.jobs.list(limit=1)
    assert [j.id for j in first.data] == [cancelled_job.id] and first.has_more
    assert [j.id for j in a.fine_tuning.jobs.list(limit=1)] == [cancelled_job.id, failed_job.id]  # auto-paginates


def test_a_job_the_upstream_refuses_gives_its_hold_back(ft_stack: Stack, tmp_path: Path) -> None:
    team, key = ft_stack.admin.team_with_key()
    ft_stack.admin.budget(team["id"], "10", period="daily", kind="training")
    a = sdk(ft_stack, key)
    path = write_training_file(tmp_path / "train.jsonl", count=40)
    with path.open("rb") as handle:
        uploaded = a.files.create(file=handle, purpose="fine-tune")
    with pytest.raises(openai.InternalServerError):
        a.fine_tuning.jobs.create(training_file=uploaded.id, model="gpt-3.5-turbo",
                                  extra_headers={"x-sim-error": "500"})  # reaches the simulator unchanged
    (row,) = wait_until(lambda: training_rows(ft_stack, team["id"]), 10, what="the refusal's ledger row")
    assert (row["status"], row["http_status"], row["cost_nano"], row["job_id"]) == ("upstream_error", 500, 0, None)
    assert standing(ft_stack, team["id"]) == (0, 0)
    assert a.fine_tuning.jobs.list().data == []


def test_invalid_files_are_refused_before_the_upstream_unless_the_team_opted_out(
    ft_stack: Stack, ft_simulator: Proc, tmp_path: Path
) -> None:
    admin = ft_stack.admin
    _, key = admin.team_with_key()
    _, lax_key = admin.team_with_key(validate_training_files=False)
    bad = write_training_file(tmp_path / "bad.jsonl", count=12)
    content = bad.read_bytes().splitlines(keepends=True)
    content[1] = b'{"messages": [{"role": "user", "content": "no answer"}]}\n'
    content[4] = b"{not json\n"
    bad.write_bytes(b"".join(content))

    uploads_before = sim_calls(ft_simulator, "POST /v1/files")
    with pytest.raises(openai.BadRequestError) as refused, bad.open("rb") as handle:
        sdk(ft_stack, key).files.create(file=handle, purpose="fine-tune")
    assert refused.value.code == "invalid_training_file"
    assert "line 2: the example has no assistant message" in refused.value.message
    assert "line 5: not valid JSON" in refused.value.message
    assert [e["line"] for e in refused.value.body["errors"]] == [2, 5]  # type: ignore[index]
    assert sim_calls(ft_simulator, "POST /v1/files") == uploads_before

    with bad.open("rb") as handle:
        accepted = sdk(ft_stack, lax_key).files.create(file=handle, purpose="fine-tune")
    assert accepted.bytes == bad.stat().st_size
    assert sim_calls(ft_simulator, "POST /v1/files") == uploads_before + 1


def test_an_upload_over_the_limit_is_refused_with_413(ft_sqlite_stack: Stack, tmp_path: Path) -> None:
    _, key = ft_sqlite_stack.admin.team_with_key()
    big = write_training_file(tmp_path / "big.jsonl", count=30_000)
    assert big.stat().st_size > 4 * 1024 * 1024
    with pytest.raises(openai.APIStatusError) as refused, big.open("rb") as handle:
        sdk(ft_sqlite_stack, key).files.create(file=handle, purpose="fine-tune")
    assert refused.value.status_code == 413


def test_estimates_over_http_give_2_40_for_100k_tokens_at_3_epochs(ft_stack: Stack, tmp_path: Path) -> None:
    _, key = ft_stack.admin.team_with_key()
    _, other_key = ft_stack.admin.team_with_key()
    http = httpx.Client(base_url=ft_stack.v1, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    body = {"model": "gpt-3.5-turbo", "tokens": 100_000, "n_epochs": 3, "at": "2023-09-01"}
    est = http.post("/farebox/estimates", json=body).raise_for_status().json()
    assert (est["trained_tokens"], est["cost_nano"], est["cost_usd"]) == (300_000, 2_400_000_000, "$2.40")
    assert est["training_rate"] == {
        "nano_usd_per_token": 8000, "usd_per_1k": "0.008", "effective_from": "2023-08-22",
        "source": est["training_rate"]["source"],
    }
    assert est["comparison"]["requests"] == 1000
    assert est["comparison"]["base"]["cost_nano"] == 1000 * (2000 * 1500 + 150 * 2000)

    path = write_exact_tokens(tmp_path / "exact.jsonl", 100_000)
    with path.open("rb") as handle:
        uploaded = sdk(ft_stack, key).files.create(file=handle, purpose="fine-tune")
    by_file = http.get(f"/files/{uploaded.id}/estimate", params={"model": "gpt-3.5-turbo", "n_epochs": 3,
                                                                  "at": "2023-09-01"}).raise_for_status().json()
    assert (by_file["tokens_per_epoch"], by_file["examples"], by_file["cost_usd"]) == (100_000, 50, "$2.40")
    auto = http.post("/farebox/estimates", json={"model": "gpt-3.5-turbo", "training_file": uploaded.id}).json()
    assert (auto["n_epochs"], auto["n_epochs_auto"]) == (3, True)
    other = httpx.get(f"{ft_stack.v1}/files/{uploaded.id}/estimate", params={"model": "gpt-3.5-turbo"},
                      headers={"Authorization": f"Bearer {other_key}"})
    assert other.status_code == 404
    unpriced = http.post("/farebox/estimates", json={"model": "gpt-4-turbo", "tokens": 10})
    assert unpriced.status_code == 400
