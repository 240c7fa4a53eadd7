"""The fine-tuning jobs API: create, list, retrieve, cancel, events and checkpoints."""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from service.simulator import training, wire
from service.simulator.errors import invalid, no_such
from service.simulator.jobs import Job, accuracy_at, loss_at, stable_id

if TYPE_CHECKING:
    from service.simulator.state import Simulator

_AUTO = "auto"


def _hyperparameters(body: dict[str, Any]) -> dict[str, Any]:
    """Merge the legacy top-level hyperparameters with method.supervised.hyperparameters."""
    merged = dict(body.get("hyperparameters") or {})
    method = body.get("method")
    if method is not None:
        if not isinstance(method, dict) or method.get("type") != "supervised":
            raise invalid("This simulator runs supervised fine-tuning only.", param="method.type")
        supervised = method.get("supervised") or {}
        merged.update(supervised.get("hyperparameters") or {})
    requested = {
        name: merged.get(name, _AUTO)
        for name in ("n_epochs", "batch_size", "learning_rate_multiplier")
    }
    for name, low, high in (("n_epochs", 1, 50), ("batch_size", 1, 256)):
        value = requested[name]
        if value != _AUTO and (
            isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high
        ):
            raise invalid(
                f"Invalid '{name}': expected 'auto' or an integer in [{low}, {high}].",
                param=f"hyperparameters.{name}",
            )
    lr = requested["learning_rate_multiplier"]
    if lr != _AUTO and (isinstance(lr, bool) or not isinstance(lr, int | float) or lr <= 0):
        raise invalid(
            "Invalid 'learning_rate_multiplier': expected 'auto' or a positive number.",
            param="hyperparameters.learning_rate_multiplier",
        )
    return requested


def _training_file(sim: Simulator, body: dict[str, Any], name: str) -> Any:
    file_id = body.get(name)
    if file_id is None:
        if name == "training_file":
            raise invalid("Missing required parameter: 'training_file'.", param=name)
        return None
    record = sim.files.get(file_id) if isinstance(file_id, str) else None
    if record is None:
        raise invalid(f"invalid {name}: {file_id}", param=name, code=f"invalid_{name}")
    if record.purpose != "fine-tune":
        raise invalid(
            f"File {file_id} has purpose '{record.purpose}'; fine-tuning needs 'fine-tune'.",
            param=name,
            code=f"invalid_{name}",
        )
    return record


async def create(sim: Simulator, request: Request) -> Response:
    body = await wire.read_json(request)
    config = sim.config
    name = body.get("model")
    info = sim.catalog.get(name) if isinstance(name, str) else None
    base = sim.catalog.get(info.base) if info is not None and info.base else info
    if info is None or base is None or not info.fine_tunable:
        raise invalid(
            f"Model {name} is not available for fine-tuning or does not exist.",
            param="model",
            code="model_not_available",
        )
    suffix = body.get("suffix")
    if suffix is not None and (not isinstance(suffix, str) or len(suffix) > 64):
        raise invalid("'suffix' must be a string of at most 64 characters.", param="suffix")
    requested = _hyperparameters(body)
    train = _training_file(sim, body, "training_file")
    validation = _training_file(sim, body, "validation_file")
    seed = body.get("seed")
    if seed is None:
        seed = random.randrange(2**31)
    data = await anyio.to_thread.run_sync(
        lambda: training.analyse(
            train.path, train.filename, base, min_examples=config.min_training_examples
        )
    )
    n_epochs = requested["n_epochs"]
    batch_size = requested["batch_size"]
    lr = requested["learning_rate_multiplier"]
    job_id = wire.new_id("ftjob-", 24)
    org = config.organization_name
    job = Job(
        id=job_id,
        created=time.time(),
        model=info.answer,
        base=base.answer,
        training_file=train.id,
        validation_file=validation.id if validation is not None else None,
        suffix=suffix,
        seed=seed,
        metadata=body.get("metadata"),
        requested=requested,
        n_epochs=training.auto_epochs(data.examples) if n_epochs == _AUTO else n_epochs,
        batch_size=training.auto_batch_size(data.examples) if batch_size == _AUTO else batch_size,
        learning_rate_multiplier=1.8 if lr == _AUTO else float(lr),
        data=data,
        phase_s=config.job_phase_s,
        organization_id=config.organization_id,
        fine_tuned_name=f"ft:{base.answer}:{org}:{suffix or ''}:{job_id[6:14]}",
        partial_trained_tokens=config.partial_trained_tokens,
    )
    sim.jobs.add(job)
    return wire.json_response(job.to_json(time.time()))


def _job(sim: Simulator, request: Request, now: float) -> Job:
    job_id = request.path_params["job_id"]
    job = sim.jobs.get(job_id, now)
    if job is None:
        raise no_such("fine-tuning job", job_id, param="fine_tuning_job_id")
    return job


def _page(request: Request, ids: list[str], default_limit: int) -> tuple[int, int]:
    """(start, stop) of the page after the `after` cursor, `limit` long."""
    query = request.query_params
    try:
        limit = min(max(int(query.get("limit", default_limit)), 1), 100)
    except ValueError:
        raise invalid("'limit' must be an integer", param="limit") from None
    after = query.get("after")
    start = ids.index(after) + 1 if after in ids else 0
    return start, start + limit


async def list_jobs(sim: Simulator, request: Request) -> Response:
    now = time.time()
    jobs = sim.jobs.listed(now)
    start, stop = _page(request, [j.id for j in jobs], 20)
    return wire.json_response(
        {
            "object": "list",
            "data": [j.to_json(now) for j in jobs[start:stop]],
            "has_more": stop < len(jobs),
        }
    )


async def retrieve(sim: Simulator, request: Request) -> Response:
    now = time.time()
    return wire.json_response(_job(sim, request, now).to_json(now))


async def cancel(sim: Simulator, request: Request) -> Response:
    now = time.time()
    job = _job(sim, request, now)
    if not sim.jobs.cancel(job, now):
        raise invalid(
            f"Job {job.id} has already finished ({job.status(now)}) and cannot be cancelled.",
            param="fine_tuning_job_id",
        )
    return wire.json_response(job.to_json(now))


async def events(sim: Simulator, request: Request) -> Response:
    now = time.time()
    job = _job(sim, request, now)
    listed = [
        {
            "object": "fine_tuning.job.event",
            "id": stable_id("ftevent-", job.id, index),
            "created_at": int(event.at),
            "level": event.level,
            "message": event.message,
            "data": event.data or {},
            "type": event.type,
        }
        for index, event in enumerate(job.events(now))
    ][::-1]
    start, stop = _page(request, [e["id"] for e in listed], 20)
    return wire.json_response(
        {"object": "list", "data": listed[start:stop], "has_more": stop < len(listed)}
    )


async def checkpoints(sim: Simulator, request: Request) -> Response:
    now = time.time()
    job = _job(sim, request, now)
    total = job.total_steps
    listed = [
        {
            "object": "fine_tuning.job.checkpoint",
            "id": stable_id("ftckpt_", job.id, step),
            "created_at": int(job.started_at + job.phase_s * step / total),
            "fine_tuned_model_checkpoint": f"{job.fine_tuned_name}:ckpt-step-{step}",
            "fine_tuning_job_id": job.id,
            "step_number": step,
            "metrics": {
                "step": float(step),
                "train_loss": loss_at(step, total),
                "train_mean_token_accuracy": accuracy_at(step, total),
                "valid_loss": round(loss_at(step, total) + 0.05, 4),
                "valid_mean_token_accuracy": round(accuracy_at(step, total) - 0.02, 4),
                "full_valid_loss": round(loss_at(step, total) + 0.06, 4),
                "full_valid_mean_token_accuracy": round(accuracy_at(step, total) - 0.03, 4),
            },
        }
        for step in job.checkpoint_steps(now)
    ][::-1]
    start, stop = _page(request, [c["id"] for c in listed], 10)
    page = listed[start:stop]
    return wire.json_response(
        {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": stop < len(listed),
        }
    )
