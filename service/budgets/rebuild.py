"""Rebuilding one team's budget counters from the ledger, exact while charges keep settling.

One atomic store call (a snapshot) reads the team's counters and the outbox position reached.
Every charge counted then sits at or before that position: in the ledger, or still in the
outbox (not yet written, or refused by the database). Each counter moves by (those charges) -
(spent read); charges settled later sit after the position, and stay counted as they are.
Ledger rows with no position (charges written straight to the ledger, never counted) count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.budgets.policy import rule_from_budget
from service.budgets.store import BudgetCounter, BudgetStore, CounterSnapshot
from service.db.models import Budget
from service.ledger.entries import as_utc
from service.ledger.event import ChargeEvent
from service.ledger.queries import requests_in_ledger, spent_by_budget

log = structlog.get_logger(__name__)

# Outbox entries up to a snapshot's position that a rebuild reads; past this the team waits.
PENDING_MAX = 100_000


@dataclass(frozen=True, slots=True)
class RebuildResult:
    """Counters moved, teams rebuilt, and the teams left as they were (to be tried again)."""

    counters: int
    teams: int
    skipped: tuple[str, ...] = ()


async def rebuild_team(
    store: BudgetStore,
    sessions: async_sessionmaker[AsyncSession],
    budgets: Sequence[Budget],
    snapshot: CounterSnapshot,
) -> int | None:
    """Move the snapshot's counters to the true spend up to its position; None leaves them as they were."""
    pending = await store.outbox_until(snapshot.team_id, snapshot.through, PENDING_MAX)
    if pending is None:
        log.warning("counter_rebuild_outbox_too_long", team_id=snapshot.team_id, limit=PENDING_MAX)
        return None
    charges: list[ChargeEvent] = []
    for position, raw in pending:
        try:
            charges.append(ChargeEvent.from_bytes(raw))
        except Exception:  # a charge nobody can read: its cost is unknown, so nothing may move
            log.error("counter_rebuild_unreadable_outbox_entry", team_id=snapshot.team_id, entry_id=str(position))
            return None
    async with sessions() as session:
        # Which pending charges the ledger has and the ledger's sums, read at one instant: a
        # charge written in between would otherwise count twice.
        if session.get_bind().dialect.name == "postgresql":
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        else:  # SQLite (WAL): the driver begins no transaction for reads; one read transaction
            await session.execute(text("BEGIN"))
        # A pending charge whose request has a ledger row is in the sums already: written from
        # this entry, or straight to the ledger when its settle ran but did not answer (then
        # writing the entry will change nothing).
        written = await requests_in_ledger(session, snapshot.team_id, [c.request_id for c in charges])
        unwritten = [charge for charge in charges if charge.request_id not in written]
        deltas = []
        for budget, counter, spent in zip(budgets, snapshot.counters, snapshot.spent, strict=True):
            in_ledger = await spent_by_budget(
                session, budget, counter.period_start, counter.period_end, snapshot.through
            )
            deltas.append(in_ledger + _counted(budget, counter, unwritten) - spent)
    return await store.adjust_spent(snapshot, deltas)


def _counted(budget: Budget, counter: BudgetCounter, charges: Sequence[ChargeEvent]) -> int:
    """What these charges add to this budget's counter: the filters spent_by_budget applies."""
    rule = rule_from_budget(budget)
    return sum(
        c.cost_nano
        for c in charges
        if rule.applies_to(key_id=c.key_id, model=c.model_requested, base_model=c.base_model, kind=c.kind)
        and _within(as_utc(c.started_at), counter.period_start, counter.period_end)
    )


def _within(at: datetime, start: datetime | None, end: datetime | None) -> bool:
    return (start is None or at >= as_utc(start)) and (end is None or at < as_utc(end))
