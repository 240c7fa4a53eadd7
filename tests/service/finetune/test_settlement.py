"""Settling finished jobs in process: once per job across repeats, replicas, restarts and crashes.

Two runtimes share one database. On Redis they share the store too (two replicas); on the
in-process store the second has a fresh one, as a restarted embedded Farebox does.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select

from service.admin.schemas import BudgetIn
from service.auth.principal import Principal
from service.db.models import FineTuneJob, OwnedModel, utcnow
from service.finetune.settlement import HOLD_TTL_S, charge_for, job_hold, restore_holds, settle_job
from service.finetune.watcher import JobWatcher, poll_interval
from service.ledger.queries import entries_for_request
from service.runtime import Runtime

RATE = 8_000
ESTIMATE_TOKENS = 30_000
FT_MODEL = "ft:gpt-3.5-turbo-0125:org::abc12345"


async def open_job(rt: Runtime) -> FineTuneJob:
    """A team with a $5 training budget and a job that reserved its estimate, as create_job leaves them."""
    team = await rt.admin.create_team(f"ft-{uuid.uuid4().hex[:10]}")
    await rt.admin.create_budget(team.id, BudgetIn(limit_usd=Decimal("5"), period="daily", kind="training"))
    principal = Principal(team.id, team.name, "key_1", "", None)
    request_id = f"fbr_{uuid.uuid4().hex[:24]}"
    created = utcnow()
    await rt.budgets.reserve(
        principal, request_id=request_id, model="gpt-3.5-turbo", base_model="gpt-3.5-turbo", kind="training",
        amount_nano=ESTIMATE_TOKENS * RATE, ttl_s=HOLD_TTL_S, at=created,
    )
    job = FineTuneJob(
        id=f"ftjob-{uuid.uuid4().hex[:20]}", team_id=team.id, key_id="key_1", request_id=request_id,
        model="gpt-3.5-turbo", base_model="gpt-3.5-turbo", training_file="file-x", n_epochs=3,
        estimated_tokens=ESTIMATE_TOKENS, estimate_nano=ESTIMATE_TOKENS * RATE, training_rate_nano=RATE,
        catalog_version="test", status="running", created_at=created, next_poll_at=created,
    )
    async with rt.sessions() as session:
        session.add(job)
        await session.commit()
    return job


def succeeded(trained: int) -> dict:
    return {"status": "succeeded", "trained_tokens": trained, "fine_tuned_model": FT_MODEL, "finished_at": int(time.time())}


async def spent_reserved(rt: Runtime, team_id: str) -> tuple[int, int]:
    (state,) = await rt.budgets.standing(team_id)
    return state.spent_nano, state.reserved_nano


async def ledger_rows(rt: Runtime, request_id: str, *, wait_for: int = 0) -> list:
    """The request's ledger rows, waiting (up to 10 s) until there are `wait_for`: on Redis the
    other runtime's writer may hold the outbox entry for a moment."""
    deadline = time.monotonic() + 10
    while True:
        await rt.drain_ledger()
        async with rt.sessions() as session:
            rows = await entries_for_request(session, request_id)
        if len(rows) >= wait_for or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.05)


async def test_settling_twice_or_on_another_replica_charges_the_job_once(runtimes: tuple[Runtime, Runtime]) -> None:
    rt, other = runtimes
    job = await open_job(rt)
    assert await spent_reserved(rt, job.team_id) == (0, ESTIMATE_TOKENS * RATE)

    assert await settle_job(rt, job, succeeded(24_000), [FT_MODEL])
    assert not await settle_job(rt, job, succeeded(24_000), [FT_MODEL])
    assert not await settle_job(other, job, succeeded(24_000), [FT_MODEL])

    (row,) = await ledger_rows(rt, job.request_id)
    assert (row.kind, row.status, row.trained_tokens, row.cost_nano) == ("training", "ok", 24_000, 24_000 * RATE)
    assert (row.job_id, row.training_rate_nano, row.model_answered) == (job.id, RATE, FT_MODEL)
    assert await spent_reserved(rt, job.team_id) == (24_000 * RATE, 0)
    async with rt.sessions() as session:
        settled = await session.get(FineTuneJob, job.id)
        owner = await session.get(OwnedModel, FT_MODEL)
    assert settled is not None and settled.settled_at is not None and settled.cost_nano == 24_000 * RATE
    assert owner is not None and owner.team_id == job.team_id
    assert await rt.models.owner_of(FT_MODEL) == job.team_id


async def test_a_settle_that_died_after_the_store_is_finished_without_counting_twice(
    runtimes: tuple[Runtime, Runtime],
) -> None:
    rt, _ = runtimes
    job = await open_job(rt)
    upstream = {"status": "failed", "trained_tokens": 7_000, "finished_at": int(time.time())}
    # The store counted the charge and the ledger writer wrote it; the job row was never marked.
    await rt.budgets.settle(await job_hold(rt, job), charge_for(job, upstream))
    assert len(await ledger_rows(rt, job.request_id, wait_for=1)) == 1

    assert await settle_job(rt, job, upstream)
    (row,) = await ledger_rows(rt, job.request_id)
    assert (row.status, row.cost_nano) == ("failed", 7_000 * RATE)
    assert await spent_reserved(rt, job.team_id) == (7_000 * RATE, 0)


async def test_a_restarted_farebox_still_holds_the_open_job_then_settles_it(runtimes: tuple[Runtime, Runtime]) -> None:
    rt, restarted = runtimes
    job = await open_job(rt)
    await restarted.budgets.rebuild_from_ledger()  # what startup does
    await restore_holds(restarted)
    assert await spent_reserved(restarted, job.team_id) == (0, ESTIMATE_TOKENS * RATE)

    cancelled = {"status": "cancelled", "trained_tokens": None, "finished_at": int(time.time())}
    assert await settle_job(restarted, job, cancelled)
    (row,) = await ledger_rows(restarted, job.request_id)
    assert (row.status, row.trained_tokens, row.cost_nano, row.usage_source) == ("cancelled", 0, 0, "none")
    assert await spent_reserved(restarted, job.team_id) == (0, 0)


async def test_only_one_replica_wins_the_lease_on_a_due_job(runtimes: tuple[Runtime, Runtime]) -> None:
    rt, other = runtimes
    job = await open_job(rt)
    now = utcnow()
    first, second = JobWatcher(rt, lease_s=60), JobWatcher(other, lease_s=60)
    assert sorted(await asyncio.gather(first.claim(job.id, now), second.claim(job.id, now))) == [False, True]
    assert not await first.claim(job.id, utcnow())
    assert await second.claim(job.id, utcnow() + timedelta(seconds=61))  # the holder died: the lease ran out
    async with rt.sessions() as session:
        await settle_job(rt, job, succeeded(1))
        assert (await session.execute(select(FineTuneJob.settled_at).where(FineTuneJob.id == job.id))).scalar_one()
    assert not await first.claim(job.id, utcnow() + timedelta(days=1))  # settled jobs are never claimed


def test_polls_back_off_with_age_and_failures_within_the_configured_bounds() -> None:
    assert poll_interval(10, 120, age_s=5, failures=0) == 10
    assert poll_interval(10, 120, age_s=600, failures=0) == 60
    assert poll_interval(10, 120, age_s=86_400, failures=0) == 120
    assert [poll_interval(10, 120, age_s=5, failures=n) for n in (1, 2, 3, 4)] == [20, 40, 80, 120]
