"""Which team made a fine-tuned model that nobody has registered yet: the unsettled jobs are asked.

OpenAI serves a job's checkpoints while it trains and its model as soon as it ends; Farebox
records them for the job's team when it settles the job, which can be a poll interval later.
An `ft:` name that no team owns is checked, before anyone may use it, against what the upstream
says each unsettled job it could come from has made so far; whatever that finds is recorded for
the job's team at once. Only a name no Farebox job made stays open to every team (a model
trained outside Farebox), as before.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from sqlalchemy import select

from service.db.models import FineTuneJob
from service.errors import UpstreamError
from service.finetune import forward
from service.finetune.settlement import announce_owned, insert_owned
from service.finetune.watcher import made_models
from service.models_access import Resolution
from service.runtime import Runtime

log = structlog.get_logger(__name__)

_MADE_TTL_S = 3.0  # what one job has made, reused across names asked about in a burst
_CONCURRENT = 4  # upstream checks at once, across names


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


class ModelOwners:
    """ModelAccess's resolver: asks the upstream what Farebox's unsettled jobs have made."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._made: dict[str, tuple[frozenset[str], float]] = {}  # job id -> names, until when
        self._recorded: dict[str, frozenset[str]] = {}  # job id -> names already recorded
        self._limit = asyncio.Semaphore(_CONCURRENT)

    async def claim(self, model: str) -> Resolution:
        """The team whose unsettled job made `model`, now recorded as its owner, or no owner.

        Raises UpstreamError when the upstream cannot say: the name is then refused, not opened.
        """
        async with self.rt.sessions() as session:
            jobs = (await session.execute(
                select(FineTuneJob).where(FineTuneJob.settled_at.is_(None)).order_by(FineTuneJob.created_at)
            )).scalars().all()
        base = base_of(model)
        candidates = [job for job in jobs if could_have_made(job, base)]
        for job in candidates:
            if model in await self._made_by(job):
                log.info("model_claimed_before_settle", model=model, job_id=job.id, team_id=job.team_id)
                return Resolution(job.team_id)
        return Resolution(None, may_change=bool(candidates))

    async def _made_by(self, job: FineTuneJob) -> frozenset[str]:
        hit = self._made.get(job.id)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        async with self._limit:
            answer = await forward.call(self.rt, "GET", f"/fine_tuning/jobs/{job.id}", timeout=forward.WATCH_TIMEOUT)
            if answer.status == 404:
                names: frozenset[str] = frozenset()
            elif answer.status != 200:
                raise UpstreamError(
                    f"Farebox could not check who owns this model: the upstream answered {answer.status} "
                    "for a fine-tuning job it may come from. Retry shortly."
                )
            else:
                names = frozenset(await made_models(self.rt, job.id, answer.json()))
        new = names - self._recorded.get(job.id, frozenset())
        if new:
            async with self.rt.sessions() as session:
                await insert_owned(session, job, sorted(new))
                await session.commit()
            await announce_owned(self.rt, sorted(new))
            self._recorded[job.id] = names
        self._made[job.id] = (names, time.monotonic() + _MADE_TTL_S)
        if len(self._made) > 1000:  # settled jobs leave; keep only fresh entries
            now = time.monotonic()
            self._made = {k: v for k, v in self._made.items() if v[1] > now}
            self._recorded = {k: v for k, v in self._recorded.items() if k in self._made}
        return names
