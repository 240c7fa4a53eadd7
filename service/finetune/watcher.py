"""The job watcher: follows every open fine-tuning job until it ends, then settles it.

Each replica runs one. A replica claims a due job with a row lease (a conditional UPDATE of
next_poll_at that only one replica can win), polls the upstream, and either schedules the
next poll (backing off as the job ages or the upstream fails) or settles the finished job.
Webhooks and clients that see a finished job only make a job due now; the poll decides.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import func, or_, select, update

from service.budgets.store import Reservation
from service.db.models import FineTuneJob, utcnow
from service.errors import UpstreamError
from service.finetune import forward
from service.finetune.settlement import HOLD_TTL_S, JOBS, TERMINAL, restore_holds, settle_job
from service.ledger.entries import as_utc
from service.runtime import Runtime

log = structlog.get_logger(__name__)

LEASE_S = 60.0  # longer than one poll and settle take; a lost lease only costs a duplicate poll
BATCH = 50
CONCURRENCY = 8
MAX_CHECKPOINT_PAGES = 20


def poll_interval(base_s: float, max_s: float, age_s: float, failures: int) -> float:
    """Young jobs are polled every base_s, older ones less often, failing ones with exponential backoff."""
    if failures:
        return min(max_s, base_s * 2 ** min(failures, 20))
    return min(max_s, max(base_s, age_s / 10))


class JobWatcher:
    def __init__(self, rt: Runtime, *, lease_s: float = LEASE_S, batch: int = BATCH) -> None:
        self.rt = rt
        self.lease = timedelta(seconds=lease_s)
        self.batch = batch
        self._wake = asyncio.Event()
        self._limit = asyncio.Semaphore(CONCURRENCY)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        try:
            restored = await restore_holds(self.rt)
            if restored:
                log.info("job_holds_restored", jobs=restored)
        except Exception as exc:  # the store may be briefly away; settling later still works
            log.warning("job_holds_not_restored", error=str(exc))
        try:
            # Webhooks sent while this replica was down are lost: look at every open job once now.
            async with self.rt.sessions() as session:
                await session.execute(update(JOBS).where(JOBS.c.settled_at.is_(None)).values(next_poll_at=utcnow()))
                await session.commit()
        except Exception as exc:
            log.warning("open_jobs_not_rescheduled", error=str(exc))
        self._task = asyncio.create_task(self._run(), name="finetune-job-watcher")

    async def stop(self) -> None:
        """Let a poll in progress finish (bounded by the drain grace), then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self.rt.settings.drain_grace_s)
        except (asyncio.TimeoutError, Exception):
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._task = None

    async def poke(self, job_id: str) -> None:
        """Make an open job due now (a webhook said it ended, or a client saw it end) and wake up."""
        async with self.rt.sessions() as session:
            await session.execute(
                update(JOBS).where(JOBS.c.id == job_id, JOBS.c.settled_at.is_(None)).values(next_poll_at=utcnow())
            )
            await session.commit()
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                await self.run_once()
                delay = await self._until_next_due()
            except Exception as exc:
                log.warning("job_watch_round_failed", error=str(exc))
                delay = self.rt.settings.job_poll_interval_s
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def run_once(self) -> int:
        """Claim the jobs due now and check each; returns how many this replica checked."""
        now = utcnow()
        async with self.rt.sessions() as session:
            due = list((await session.execute(
                select(JOBS.c.id)
                .where(JOBS.c.settled_at.is_(None), or_(JOBS.c.next_poll_at.is_(None), JOBS.c.next_poll_at <= now))
                .order_by(JOBS.c.next_poll_at)
                .limit(self.batch)
            )).scalars())
        claimed = [job_id for job_id in due if await self.claim(job_id, now)]
        await asyncio.gather(*(self._guarded(job_id) for job_id in claimed))
        return len(claimed)

    async def claim(self, job_id: str, now: datetime) -> bool:
        """Take the job's lease: only one replica's UPDATE matches a job that is due."""
        async with self.rt.sessions() as session:
            result = await session.execute(
                update(JOBS)
                .where(
                    JOBS.c.id == job_id,
                    JOBS.c.settled_at.is_(None),
                    or_(JOBS.c.next_poll_at.is_(None), JOBS.c.next_poll_at <= now),
                )
                .values(next_poll_at=now + self.lease)
            )
            await session.commit()
        return result.rowcount == 1  # type: ignore[attr-defined]

    async def _guarded(self, job_id: str) -> None:
        async with self._limit:
            await self.check(job_id)

    async def check(self, job_id: str) -> None:
        """Poll one claimed job: settle it if it ended, else schedule the next poll and keep its hold."""
        async with self.rt.sessions() as session:
            job = await session.get(FineTuneJob, job_id)
        if job is None or job.settled_at is not None:
            return
        now = utcnow()
        try:
            answer = await forward.call(self.rt, "GET", f"/fine_tuning/jobs/{job.id}", timeout=forward.WATCH_TIMEOUT)
            if answer.status != 200:
                raise UpstreamError(f"the upstream answered {answer.status} for job {job.id}")
            data = answer.json()
            status = data.get("status") if isinstance(data, dict) else None
            if status in TERMINAL:
                models = await made_models(self.rt, job.id, data) if status == "succeeded" else []
                await settle_job(self.rt, job, data, models)
                return
            await self._keep_hold(job)
            await self._schedule(job, now, 0, status if isinstance(status, str) else None)
        except Exception as exc:
            log.warning("job_poll_failed", job_id=job.id, failures=job.poll_failures + 1, error=str(exc))
            await self._schedule(job, now, job.poll_failures + 1, None)

    async def _keep_hold(self, job: FineTuneJob) -> None:
        reservation = Reservation(job.request_id, job.team_id, job.estimate_nano, (), HOLD_TTL_S)
        try:
            await self.rt.store.extend(reservation, HOLD_TTL_S)
        except Exception as exc:  # the next poll extends it again
            log.warning("job_hold_not_extended", job_id=job.id, error=str(exc))

    async def _schedule(self, job: FineTuneJob, now: datetime, failures: int, status: str | None) -> None:
        settings = self.rt.settings
        age_s = (now - as_utc(job.created_at)).total_seconds()
        delay = poll_interval(settings.job_poll_interval_s, settings.job_poll_max_interval_s, age_s, failures)
        values: dict[str, Any] = {"next_poll_at": now + timedelta(seconds=delay), "poll_failures": failures}
        if status is not None:
            values["status"] = status[:32]
        async with self.rt.sessions() as session:
            await session.execute(update(JOBS).where(JOBS.c.id == job.id, JOBS.c.settled_at.is_(None)).values(**values))
            await session.commit()

    async def _until_next_due(self) -> float:
        """Seconds until the earliest open job is due, at most one poll interval (jobs other replicas add)."""
        base = self.rt.settings.job_poll_interval_s
        async with self.rt.sessions() as session:
            earliest = (await session.execute(
                select(func.min(JOBS.c.next_poll_at)).where(JOBS.c.settled_at.is_(None))
            )).scalar_one_or_none()
        if earliest is None:
            return base
        return min(base, max(0.02, (as_utc(earliest) - utcnow()).total_seconds()))


async def made_models(rt: Runtime, job_id: str, data: dict[str, Any]) -> list[str]:
    """The job's fine-tuned model (once it has one) and its checkpoints so far: all the team's."""
    models = [data["fine_tuned_model"]] if isinstance(data.get("fine_tuned_model"), str) else []
    after = ""
    for _ in range(MAX_CHECKPOINT_PAGES):
        query = "limit=100" + (f"&after={after}" if after else "")
        answer = await forward.call(
            rt, "GET", f"/fine_tuning/jobs/{job_id}/checkpoints", query=query, timeout=forward.WATCH_TIMEOUT,
        )
        if answer.status == 404:  # an upstream without checkpoints
            break
        if answer.status != 200:
            raise UpstreamError(f"the upstream answered {answer.status} for the checkpoints of {job_id}")
        page = answer.json()
        items = page.get("data") or []
        models += [c["fine_tuned_model_checkpoint"] for c in items if isinstance(c.get("fine_tuned_model_checkpoint"), str)]
        if not page.get("has_more") or not items:
            break
        after = items[-1]["id"]
    return models
