"""Charging a finished fine-tuning job exactly once: settle its hold, write its one ledger row.

A job's hold is rebuilt from its row (request id, team, estimate, budgets of the period it
started in), so any replica, before or after a restart, settles it the same way. The budget
store's settle is idempotent on the request id and the ledger is unique on it; the job row's
settled_at, set in the same transaction as the ledger row, stops later attempts early.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import structlog
from sqlalchemy import Table, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from service import metrics
from service.auth.principal import Principal
from service.budgets.gate import Hold
from service.budgets.policy import applicable_budgets
from service.budgets.store import Reservation
from service.db.models import FineTuneJob, LedgerEntry, OwnedModel, Team, utcnow
from service.ledger.entries import as_utc, write_events
from service.ledger.event import ChargeEvent
from service.runtime import Runtime

log = structlog.get_logger(__name__)

JOBS: Table = FineTuneJob.__table__  # type: ignore[assignment]
OWNED: Table = OwnedModel.__table__  # type: ignore[assignment]
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
HOLD_TTL_S = 7 * 24 * 3600  # the watcher pushes it back while the job runs
ENDPOINT = "fine_tuning.jobs"
_LEDGER_STATUS = {"succeeded": "ok", "failed": "failed", "cancelled": "cancelled"}


class StoreDown(Exception):
    """The budget store did not answer; the job is settled on a later poll, nothing is lost."""


async def job_hold(rt: Runtime, job: FineTuneJob) -> Hold:
    """The job's reservation: its budgets in the period it started in, as reserve computed them."""
    rules = await rt.budgets.rules(job.team_id)
    counters = applicable_budgets(
        rules, key_id=job.key_id, model=job.model, base_model=job.base_model, kind="training",
        at=as_utc(job.created_at), default_tz=rt.settings.budget_timezone,
    )
    return Hold(Reservation(job.request_id, job.team_id, job.estimate_nano, counters, HOLD_TTL_S))


def charge_for(job: FineTuneJob, upstream: dict[str, Any]) -> ChargeEvent:
    """The ledger row of a finished job: trained tokens x the training rate recorded at creation."""
    status = upstream["status"]
    reported = upstream.get("trained_tokens")
    if isinstance(reported, int) and not isinstance(reported, bool) and reported >= 0:
        trained, source = reported, "upstream"
    elif status == "succeeded":
        # A finished job always trained; without the upstream's number, bill Farebox's own count.
        trained, source = job.estimated_tokens or 0, "tiktoken"
    else:
        trained, source = 0, "none"
    rate = job.training_rate_nano or 0
    finished = upstream.get("finished_at")
    return ChargeEvent(
        request_id=job.request_id,
        team_id=job.team_id,
        key_id=job.key_id,
        kind="training",
        status=_LEDGER_STATUS[status],
        endpoint=ENDPOINT,
        started_at=as_utc(job.created_at),
        finished_at=datetime.fromtimestamp(finished, timezone.utc) if isinstance(finished, int) else utcnow(),
        model_requested=job.model,
        model_answered=upstream.get("fine_tuned_model"),
        base_model=job.base_model,
        priced=job.training_rate_nano is not None,
        trained_tokens=trained,
        cost_nano=trained * rate,
        training_rate_nano=job.training_rate_nano,
        catalog_version=job.catalog_version,
        usage_source=source,
        job_id=job.id,
    )


async def settle_job(rt: Runtime, job: FineTuneJob, upstream: dict[str, Any], models: Sequence[str] = ()) -> bool:
    """Charge a finished job once and record the models it made; False if it was already settled.

    Raises StoreDown when the budget store is unreachable (and Farebox does not fail open).
    """
    async with rt.sessions() as session:
        current = await session.get(FineTuneJob, job.id)
    if current is None or current.settled_at is not None:
        return False
    event = charge_for(job, upstream)
    hold = await job_hold(rt, job)
    charged = await _in_ledger(rt, job.request_id)
    # Already in the ledger (a settle that died before marking the job): only release the hold.
    result = await rt.budgets.settle(hold, dataclasses.replace(event, cost_nano=0) if charged else event)
    if result is None and not charged and not rt.settings.fail_open:
        raise StoreDown(f"the budget store did not answer while settling {job.id}")
    async with rt.sessions() as session:
        # At its outbox position, so a counter rebuild under way counts it once (gate.rebuild_from_ledger).
        await write_events(session, [event], [result.position if result is not None else None])
        marked = await session.execute(
            update(JOBS)
            .where(JOBS.c.id == job.id, JOBS.c.settled_at.is_(None))
            .values(
                status=upstream["status"], trained_tokens=event.trained_tokens, cost_nano=event.cost_nano,
                fine_tuned_model=event.model_answered, finished_at=event.finished_at, settled_at=utcnow(),
                next_poll_at=None, poll_failures=0,
            )
        )
        if models:
            await insert_owned(session, job, models)
        await session.commit()
    await announce_owned(rt, models)
    if result is not None and result.settled and not charged:
        principal = await _principal(rt, job)
        for hook in rt.settle_hooks:
            hook(principal, hold, result)
        metrics.record_charge(principal.team_name, event)
    first = marked.rowcount == 1  # type: ignore[attr-defined]
    if first:
        log.info("job_settled", job_id=job.id, status=upstream["status"], trained_tokens=event.trained_tokens,
                 cost_nano=event.cost_nano, estimate_nano=job.estimate_nano)
    return first


async def restore_holds(rt: Runtime) -> int:
    """Hold again what open jobs reserved where the store lost it (the in-process store after a restart).

    Reserve is idempotent: a hold still live, or already settled, is left as it is.
    """
    async with rt.sessions() as session:
        jobs = list((await session.execute(select(FineTuneJob).where(JOBS.c.settled_at.is_(None)))).scalars())
    restored = 0
    for job in jobs:
        hold = await job_hold(rt, job)
        if not hold.reservation.budgets:
            continue
        denial = await rt.store.reserve(hold.reservation)
        if denial is not None:
            log.warning("job_hold_not_restored", job_id=job.id, budget=denial.state.budget.budget_id)
        else:
            restored += 1
    return restored


async def _in_ledger(rt: Runtime, request_id: str) -> bool:
    async with rt.sessions() as session:
        found = await session.execute(select(LedgerEntry.id).where(LedgerEntry.request_id == request_id))
        return found.first() is not None


async def _principal(rt: Runtime, job: FineTuneJob) -> Principal:
    async with rt.sessions() as session:
        team = await session.get(Team, job.team_id)
    return Principal(
        team_id=job.team_id, team_name=team.name if team else job.team_id, key_id=job.key_id or "",
        key_hash="", expires_at=None,
    )


async def insert_owned(session: AsyncSession, job: FineTuneJob, names: Sequence[str]) -> None:
    """Record the job's team as the owner of these models (a name already owned is left alone)."""
    await session.execute(
        insert_ignore(session.get_bind().dialect.name, OWNED),
        [{"name": name, "team_id": job.team_id, "job_id": job.id, "created_at": utcnow()} for name in names],
    )


async def announce_owned(rt: Runtime, names: Sequence[str]) -> None:
    for name in names:  # every replica drops its cached "nobody owns this model"
        await rt.bus.publish({"type": "model_access_changed", "model": name})


def insert_ignore(dialect: str, table: Table) -> Any:
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()
