"""Fine-tuning jobs through their lifecycle, with exact trained_tokens and signed webhooks."""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.fine_tuning import FineTuningJob
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.simulator.config import SimulatorConfig
from service.simulator.server import run_in_thread, serve_in_thread
from tests.service.simulator.reference import TEST_KEY, reference_chat_tokens

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"simulator-webhook-secret-32bytes").decode()
TERMINAL = ("succeeded", "failed", "cancelled")


def _examples(count: int, marker: str = "") -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "system", "content": "You answer support questions for Farebox."},
                {
                    "role": "user",
                    "content": f"How do budgets work, case {i}? {marker if i == 3 else ''}".strip(),
                },
                {
                    "role": "assistant",
                    "content": f"Each team has budgets; case {i} is no exception.",
                    "weight": 1,
                },
            ]
        }
        for i in range(count)
    ]


def _jsonl(examples: list[dict[str, Any]]) -> bytes:
    return "\n".join(json.dumps(e) for e in examples).encode() + b"\n"


def _billable(examples: list[dict[str, Any]]) -> int:
    return sum(reference_chat_tokens(e["messages"], "o200k_base") for e in examples)


def _wait(
    client: openai.OpenAI, job_id: str, until: tuple[str, ...] = TERMINAL
) -> tuple[FineTuningJob, list[str]]:
    """Poll the job until its status is one of `until`; returns it and every status seen."""
    seen: list[str] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if not seen or seen[-1] != job.status:
            seen.append(job.status)
        if job.status in until:
            return job, seen
        time.sleep(0.005)
    raise AssertionError(f"job {job_id} stuck in {seen}")


@pytest.fixture(scope="module")
def webhook_inbox() -> Iterator[tuple[str, list[tuple[bytes, dict[str, str]]]]]:
    received: list[tuple[bytes, dict[str, str]]] = []

    async def hook(request: Request) -> Response:
        if request.method == "POST":  # GET is the readiness probe
            received.append((await request.body(), dict(request.headers)))
        return Response(status_code=204)

    with serve_in_thread(
        Starlette(routes=[Route("/hook", hook, methods=["POST", "GET"])]), probe_path="/hook"
    ) as root:
        yield f"{root}/hook", received


@pytest.fixture(scope="module")
def sim_config(webhook_inbox: tuple[str, list[Any]]) -> SimulatorConfig:
    return SimulatorConfig(
        job_phase_s=0.25, webhook_url=webhook_inbox[0], webhook_secret=WEBHOOK_SECRET
    )


def _upload(
    client: openai.OpenAI, examples: list[dict[str, Any]], name: str = "train.jsonl"
) -> str:
    return client.files.create(file=(name, _jsonl(examples)), purpose="fine-tune").id


def test_job_succeeds_with_trained_tokens_and_serves_its_model(
    client: openai.OpenAI, webhook_inbox: tuple[str, list[tuple[bytes, dict[str, str]]]]
) -> None:
    examples = _examples(12)
    created = client.fine_tuning.jobs.create(
        model="gpt-4o-mini",
        training_file=_upload(client, examples),
        suffix="support",
        metadata={"team": "blue"},
    )
    assert created.status == "validating_files" and created.hyperparameters.n_epochs == "auto"
    assert created.model == "gpt-4o-mini-2024-07-18" and created.trained_tokens is None

    job, seen = _wait(client, created.id)
    lifecycle = ["validating_files", "queued", "running", "succeeded"]
    assert seen[-1] == "succeeded" and seen == [s for s in lifecycle if s in seen]
    # 12 examples: auto epochs = min(25, 100 // 12) = 8 by OpenAI's rule.
    assert job.hyperparameters.n_epochs == 8
    assert job.trained_tokens == _billable(examples) * 8
    assert job.fine_tuned_model == f"ft:gpt-4o-mini-2024-07-18:farebox-sim:support:{job.id[6:14]}"
    assert job.finished_at is not None and job.finished_at >= job.created_at
    assert job.error is None and job.metadata == {"team": "blue"} and job.estimated_finish is None
    raw = client.fine_tuning.jobs.with_raw_response.retrieve(job.id).http_response.json()
    FineTuningJob.model_validate(raw)

    results = client.files.content(job.result_files[0]).text.splitlines()
    assert results[0].startswith("step,train_loss") and len(results) > 2
    assert client.files.retrieve(job.result_files[0]).purpose == "fine-tune-results"

    answer = client.chat.completions.create(
        model=job.fine_tuned_model, messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.model == job.fine_tuned_model
    assert job.fine_tuned_model in {m.id for m in client.models.list()}

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    steps_per_epoch = math.ceil(12 / job.hyperparameters.batch_size)
    assert [c.step_number for c in checkpoints] == [steps_per_epoch * e for e in (8, 7, 6)]
    assert (
        checkpoints[0].fine_tuned_model_checkpoint
        == f"{job.fine_tuned_model}:ckpt-step-{8 * steps_per_epoch}"
    )

    inbox = webhook_inbox[1]
    deadline = time.monotonic() + 5
    while (
        not any(json.loads(body)["data"]["id"] == job.id for body, _ in inbox)
        and time.monotonic() < deadline
    ):
        time.sleep(0.01)
    body, headers = next((b, h) for b, h in inbox if json.loads(b)["data"]["id"] == job.id)
    event = client.webhooks.unwrap(body, headers, secret=WEBHOOK_SECRET)  # verifies the signature
    assert event.type == "fine_tuning.job.succeeded" and event.data.id == job.id
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(body, headers, secret="whsec_" + base64.b64encode(b"wrong").decode())


def test_events_paginate_newest_first(client: openai.OpenAI) -> None:
    created = client.fine_tuning.jobs.create(
        model="gpt-3.5-turbo",
        training_file=_upload(client, _examples(10)),
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 5}},
        },
    )
    job, _ = _wait(client, created.id)
    assert (job.hyperparameters.n_epochs, job.hyperparameters.batch_size) == (2, 5)
    assert job.method.supervised.hyperparameters.n_epochs == 2
    everything = client.fine_tuning.jobs.list_events(job.id, limit=100)
    assert not everything.has_more
    full = [e.id for e in everything.data]
    pages, after = [], None
    while True:
        page = client.fine_tuning.jobs.list_events(
            job.id, limit=3, **({"after": after} if after else {})
        )
        pages.extend(e.id for e in page.data)
        if not page.has_more:
            break
        after = page.data[-1].id
    assert pages == full and len(full) == len(set(full))
    assert [
        e.id for e in client.fine_tuning.jobs.list_events(job.id, limit=4)
    ] == full  # SDK auto-paging
    times = [e.created_at for e in everything.data]
    assert times == sorted(times, reverse=True)
    messages = [e.message for e in everything.data][::-1]
    assert messages[0] == f"Created fine-tuning job: {job.id}"
    assert messages[-1] == "The job has successfully completed"
    steps = [e for e in everything.data if e.type == "metrics"]
    assert (
        len(steps) == 4
        and steps[0].data["step"] == 4
        and steps[0].message.startswith("Step 4/4: training loss=")
    )


def test_failing_job_reports_partial_trained_tokens(client: openai.OpenAI) -> None:
    examples = _examples(20, marker="SIMULATE_FAILURE")
    created = client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18",
        training_file=_upload(client, examples),
        hyperparameters={"n_epochs": 3, "batch_size": 2},
    )
    job, _ = _wait(client, created.id)
    assert job.status == "failed"
    # It ran before it failed (its running phase is 75 ms: polling may not catch it, the events do).
    assert "Fine-tuning job started" in [e.message for e in client.fine_tuning.jobs.list_events(job.id)]
    assert job.error is not None and job.error.code == "server_error"
    total_steps = 10 * 3
    assert job.trained_tokens == _billable(examples) * 3 * (total_steps // 2) // total_steps
    assert job.fine_tuned_model is None and job.result_files == []


def test_invalid_training_file_fails_validation(client: openai.OpenAI) -> None:
    created = client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=_upload(client, _examples(3))
    )
    job, seen = _wait(client, created.id)
    assert seen == ["validating_files", "failed"]
    assert job.error.code == "invalid_training_file" and job.error.param == "training_file"
    assert "at least 10 examples" in job.error.message
    assert job.trained_tokens is None


def test_cancel_running_and_validating_jobs(client: openai.OpenAI) -> None:
    examples = _examples(10)
    file_id = _upload(client, examples)
    early = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id)
    cancelled = client.fine_tuning.jobs.cancel(early.id)
    assert (
        cancelled.status == "cancelled" and cancelled.trained_tokens is None
    )  # nothing trained yet

    running = client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=file_id, hyperparameters={"n_epochs": 4}
    )
    _wait(client, running.id, until=("running",))
    stopped = client.fine_tuning.jobs.cancel(running.id)
    assert stopped.status == "cancelled" and stopped.fine_tuned_model is None
    assert (
        stopped.trained_tokens is not None and 0 <= stopped.trained_tokens < _billable(examples) * 4
    )
    assert client.fine_tuning.jobs.retrieve(running.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(running.id)
    assert (
        client.fine_tuning.jobs.list_events(running.id, limit=1).data[0].message
        == "The job was cancelled"
    )


def test_job_list_pagination(client: openai.OpenAI) -> None:
    file_id = _upload(client, _examples(10))
    ids = [
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id).id
        for _ in range(3)
    ]
    first = client.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in first.data] == ids[::-1][:2] and first.has_more
    second = client.fine_tuning.jobs.list(limit=2, after=first.data[-1].id)
    assert second.data[0].id == ids[0]
    for job_id in ids:
        client.fine_tuning.jobs.cancel(job_id)


def test_create_refusals(client: openai.OpenAI) -> None:
    file_id = _upload(client, _examples(10))
    with pytest.raises(openai.BadRequestError) as model:
        client.fine_tuning.jobs.create(model="o1", training_file=file_id)
    assert model.value.code == "model_not_available"
    with pytest.raises(openai.BadRequestError) as missing:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file="file-doesnotexist")
    assert missing.value.param == "training_file"
    other = client.files.create(file=("x.jsonl", b"{}"), purpose="batch").id
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=other)
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-nope")


def test_null_trained_tokens_on_failure_when_configured() -> None:
    examples = _examples(10, marker="SIMULATE_FAILURE")
    config = SimulatorConfig(job_phase_s=0.05, partial_trained_tokens=False, fast=True)
    with (
        run_in_thread(config) as url,
        openai.OpenAI(base_url=url, api_key=TEST_KEY, max_retries=0) as client,
    ):
        created = client.fine_tuning.jobs.create(
            model="gpt-4o-mini", training_file=_upload(client, examples)
        )
        job, _ = _wait(client, created.id)
    assert job.status == "failed" and job.trained_tokens is None
