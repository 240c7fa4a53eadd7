"""Fine-tuning jobs driven by the clock: validating_files, queued, running, then an end state.

A job's status, events and checkpoints are functions of the time since it was created; the side
effects of finishing (the model, the result file, the webhook) happen once, on the first look
after the end or when the job's timer fires.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

from service.simulator.catalog import Catalog
from service.simulator.config import SimulatorConfig
from service.simulator.files import FileStore
from service.simulator.training import TrainingFile
from service.simulator.webhooks import WebhookSender

_MAX_STEP_EVENTS = 100


@dataclass(frozen=True, slots=True)
class Event:
    at: float
    level: str
    message: str
    type: str = "message"
    data: dict[str, Any] | None = None


def loss_at(step: int, total: int) -> float:
    return round(2.4 * math.exp(-3.0 * step / total) + 0.12, 4)


def accuracy_at(step: int, total: int) -> float:
    return round(0.95 - 0.55 * math.exp(-3.0 * step / total), 4)


@dataclass
class Job:
    """One fine-tuning job; every timestamp is a float epoch, reported as int seconds."""

    id: str
    created: float
    model: str  # as the job reports it: the base snapshot, or the ft: model it continues
    base: str  # the snapshot the fine-tuned model name starts with
    training_file: str
    validation_file: str | None
    suffix: str | None
    seed: int
    metadata: dict[str, str] | None
    requested: dict[str, Any]  # hyperparameters as asked, "auto" where left to the service
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    data: TrainingFile
    phase_s: float
    organization_id: str
    fine_tuned_name: str
    partial_trained_tokens: bool
    cancelled_at: float | None = None
    settled: bool = False
    result_files: list[str] = field(default_factory=list)

    @property
    def validated_at(self) -> float:
        return self.created + self.phase_s

    @property
    def started_at(self) -> float:
        return self.created + 2 * self.phase_s

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.data.examples / self.batch_size))

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.n_epochs

    def _planned(self) -> tuple[float, str, int]:
        """(end time, outcome, steps trained) if nobody cancels."""
        if self.data.problem:
            return self.validated_at, "failed", 0
        if self.data.fail_mid_training:
            half = self.total_steps // 2
            return self.started_at + self.phase_s * half / self.total_steps, "failed", half
        return self.started_at + self.phase_s, "succeeded", self.total_steps

    def outcome(self) -> tuple[float, str, int]:
        """(end time, final status, steps trained by then), honouring a cancel."""
        end, status, steps = self._planned()
        if self.cancelled_at is not None and self.cancelled_at < end:
            return self.cancelled_at, "cancelled", self._steps_at(self.cancelled_at)
        return end, status, steps

    def _steps_at(self, t: float) -> int:
        if t <= self.started_at:
            return 0
        return min(self.total_steps, int(self.total_steps * (t - self.started_at) / self.phase_s))

    def status(self, now: float) -> str:
        end, final, _ = self.outcome()
        if now >= end:
            return final
        if now >= self.started_at:
            return "running"
        return "queued" if now >= self.validated_at else "validating_files"

    def trained_tokens(self, now: float) -> int | None:
        end, final, steps = self.outcome()
        if now < end:
            return None
        total = self.data.billable_tokens * self.n_epochs
        if final == "succeeded":
            return total
        if self.data.problem or not self.partial_trained_tokens or end <= self.started_at:
            return None
        return total * steps // self.total_steps

    def error(self, now: float) -> dict[str, Any] | None:
        end, final, steps = self.outcome()
        if now < end or final != "failed":
            return None
        if self.data.problem:
            return {
                "code": "invalid_training_file",
                "message": f"The job failed due to an invalid training file. {self.data.problem}",
                "param": "training_file",
            }
        total = self.total_steps
        return {
            "code": "server_error",
            "message": f"The job failed due to an internal error at step {steps}/{total}.",
            "param": None,
        }

    def hyperparameters(self, now: float) -> dict[str, Any]:
        if now < self.validated_at:
            return dict(self.requested)
        return {
            "n_epochs": self.n_epochs,
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate_multiplier,
        }

    def checkpoint_steps(self, now: float) -> list[int]:
        """Epoch-end steps reached by now, the last three kept as the service does."""
        end, _, final_steps = self.outcome()
        reached = final_steps if now >= end else self._steps_at(now)
        steps = [k * self.steps_per_epoch for k in range(1, self.n_epochs + 1)]
        return [s for s in steps if s <= reached][-3:]

    def events(self, now: float) -> list[Event]:
        """Every event that has happened by now, oldest first."""
        end, final, final_steps = self.outcome()
        out = [Event(self.created, "info", f"Created fine-tuning job: {self.id}")]
        files = f"Validating training file: {self.training_file}"
        if self.validation_file:
            files += f" and validation file: {self.validation_file}"
        out.append(Event(self.created, "info", files))
        if self.data.problem:
            out.append(
                Event(
                    end,
                    "error",
                    f"The job failed due to an invalid training file. {self.data.problem}",
                )
            )
            return [e for e in out if e.at <= now]
        out.append(Event(self.validated_at, "info", "Files validated, moving job to queued state"))
        out.append(Event(self.started_at, "info", "Fine-tuning job started"))
        total = self.total_steps
        every = max(1, math.ceil(total / _MAX_STEP_EVENTS))
        epoch_ends = {k * self.steps_per_epoch for k in range(1, self.n_epochs)}
        shown = set(range(every, final_steps + 1, every))
        if final_steps == total:
            shown.add(total)
        for step in sorted(shown | {s for s in epoch_ends if s <= final_steps}):
            at = self.started_at + self.phase_s * step / total
            if step in shown:
                loss = loss_at(step, total)
                out.append(
                    Event(
                        at,
                        "info",
                        f"Step {step}/{total}: training loss={loss:.4f}",
                        "metrics",
                        {
                            "step": step,
                            "train_loss": loss,
                            "total_steps": total,
                            "train_mean_token_accuracy": accuracy_at(step, total),
                        },
                    )
                )
            if step in epoch_ends:
                out.append(Event(at, "info", f"Checkpoint created at step {step}"))
        if final == "succeeded":
            out.append(Event(end, "info", f"New fine-tuned model created: {self.fine_tuned_name}"))
            out.append(Event(end, "info", "The job has successfully completed"))
        elif final == "failed":
            out.append(Event(end, "error", self.error(end)["message"]))  # type: ignore[index]
        else:
            out.append(Event(end, "info", "The job was cancelled"))
        return [e for e in out if e.at <= now]

    def to_json(self, now: float) -> dict[str, Any]:
        end, final, _ = self.outcome()
        status = self.status(now)
        done = now >= end
        hyper = self.hyperparameters(now)
        return {
            "object": "fine_tuning.job",
            "id": self.id,
            "model": self.model,
            "created_at": int(self.created),
            "finished_at": int(end) if done else None,
            "fine_tuned_model": self.fine_tuned_name if done and final == "succeeded" else None,
            "organization_id": self.organization_id,
            "result_files": list(self.result_files),
            "status": status,
            "validation_file": self.validation_file,
            "training_file": self.training_file,
            "hyperparameters": hyper,
            "trained_tokens": self.trained_tokens(now),
            "error": self.error(now),
            "user_provided_suffix": self.suffix,
            "seed": self.seed,
            "estimated_finish": int(end) + 1 if status in ("queued", "running") else None,
            "integrations": [],
            "metadata": self.metadata,
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
        }


def stable_id(prefix: str, *parts: object) -> str:
    return prefix + hashlib.sha1(":".join(map(str, parts)).encode()).hexdigest()[:24]


class JobStore:
    """All jobs of this simulator, and the once-only effects of their ending."""

    def __init__(
        self, config: SimulatorConfig, catalog: Catalog, files: FileStore, webhooks: WebhookSender
    ) -> None:
        self._config = config
        self._catalog = catalog
        self._files = files
        self._webhooks = webhooks
        self._jobs: dict[str, Job] = {}
        self._timers: set[asyncio.Task[None]] = set()

    def add(self, job: Job) -> None:
        self._jobs[job.id] = job
        timer = asyncio.get_running_loop().create_task(self._finish_on_time(job))
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)

    def get(self, job_id: str, now: float) -> Job | None:
        job = self._jobs.get(job_id)
        if job is not None:
            self.settle(job, now)
        return job

    def listed(self, now: float) -> list[Job]:
        """Newest first."""
        jobs = list(self._jobs.values())[::-1]
        for job in jobs:
            self.settle(job, now)
        return jobs

    def cancel(self, job: Job, now: float) -> bool:
        """Cancel a job that has not finished; False when it already has."""
        if now >= job.outcome()[0]:
            return False
        job.cancelled_at = now
        self.settle(job, now)
        return True

    def settle(self, job: Job, now: float) -> None:
        end, final, _ = job.outcome()
        if job.settled or now < end:
            return
        job.settled = True
        if final == "succeeded":
            owner = job.organization_id
            self._catalog.add_fine_tuned(job.fine_tuned_name, job.base, int(end), owner)
            for step in job.checkpoint_steps(end):
                self._catalog.add_fine_tuned(
                    f"{job.fine_tuned_name}:ckpt-step-{step}", job.base, int(end), owner
                )
            job.result_files.append(self._result_file(job, end).id)
        self._webhooks.send(f"fine_tuning.job.{final}", job.id)

    def _result_file(self, job: Job, end: float) -> Any:
        rows = ["step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"]
        rows += [
            f"{e.data['step']},{e.data['train_loss']},{e.data['train_mean_token_accuracy']},,"
            for e in job.events(end)
            if e.data
        ]
        return self._files.add_bytes(
            ("\n".join(rows) + "\n").encode(), "step_metrics.csv", "fine-tune-results"
        )

    async def _finish_on_time(self, job: Job) -> None:
        while not job.settled:
            await asyncio.sleep(max(0.0, job.outcome()[0] - time.time()) + 0.001)
            self.settle(job, time.time())

    async def close(self) -> None:
        for timer in list(self._timers):
            timer.cancel()
        await asyncio.gather(*self._timers, return_exceptions=True)
