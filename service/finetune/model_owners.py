"""Which team made a fine-tuned model that nobody has registered yet: the unsettled jobs are asked.

OpenAI serves a job's checkpoints while it trains and its model as soon as it ends; Farebox
records them for the job's team when it settles the job, which can be a poll interval later.
A fine-tuned name that no team owns is checked, before anyone may use it, against what the
upstream says each unsettled job it could come from has made so far; whatever that finds is
recorded for the job's team at once. Only a name no Farebox job made stays open to every team
(a model trained outside Farebox), as before.
"""

from __future__ import annotations

import structlog
from sqlalchemy import select

from service.db.models import FineTuneJob
from service.errors import UpstreamError
from service.finetune import forward
from service.finetune.settlement import announce_owned, insert_owned
from service.finetune.watcher import made_models
from service.runtime import Runtime

log = structlog.get_logger(__name__)

MAX_JOBS = 50  # the most recent unsettled jobs asked about one name


def base_of(model: str) -> str | None:
    """`ft:{base}:{org}:{suffix}:{id}[:ckpt-step-N]` -> base; None for a name of another shape."""
    parts = model.split(":")
    return parts[1] if model.startswith("ft:") and len(parts) >= 3 and parts[1] else None


def could_have_made(job: FineTuneJob, base: str | None) -> bool:
    if base is None:
        return True
    for name in (job.base_model, job.model, base_of(job.model or "")):
        if name and (base.startswith(name) or name.startswith(base)):
            return True
    return False


async def claim_unregistered(rt: Runtime, model: str) -> str | None:
    """The team whose unsettled job made `model`, now recorded as its owner; None if no job did.

    Raises UpstreamError when the upstream cannot say: the name is then refused, not opened.
    """
    async with rt.sessions() as session:
        jobs = (await session.execute(
            select(FineTuneJob).where(FineTuneJob.settled_at.is_(None))
            .order_by(FineTuneJob.created_at.desc()).limit(MAX_JOBS)
        )).scalars().all()
    base = base_of(model)
    for job in jobs:
        if not could_have_made(job, base):
            continue
        answer = await forward.call(rt, "GET", f"/fine_tuning/jobs/{job.id}", timeout=forward.WATCH_TIMEOUT)
        if answer.status == 404:
            continue
        if answer.status != 200:
            raise UpstreamError(
                f"Farebox could not check who owns `{model}`: the upstream answered {answer.status} "
                "for a fine-tuning job it may come from. Retry shortly."
            )
        names = await made_models(rt, job.id, answer.json())
        if names:
            await record_owned(rt, job, names)
        if model in names:
            log.info("model_claimed_before_settle", model=model, job_id=job.id, team_id=job.team_id)
            return job.team_id
    return None


async def record_owned(rt: Runtime, job: FineTuneJob, names: list[str]) -> None:
    async with rt.sessions() as session:
        await insert_owned(session, job, names)
        await session.commit()
    await announce_owned(rt, names)
