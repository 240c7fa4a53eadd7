"""Reconciliation on real Postgres and Redis: counters against the ledger, mismatches flagged."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.budgets.policy import rule_from_budget
from service.budgets.redis_store import RedisBudgetStore
from service.db.models import Budget, Team
from service.ledger.entries import write_events
from service.ledger.event import ChargeEvent
from service.reports.reconcile import reconcile, reconciliation_json

Sessions = async_sessionmaker[AsyncSession]


def event(i: int, cost: int, model: str, at: datetime, kind: str = "inference") -> ChargeEvent:
    return ChargeEvent(
        request_id=f"rc-{i}", team_id="team-r", kind=kind, status="ok", started_at=at, finished_at=at,
        cost_nano=cost, model_requested=model, base_model=model, key_id="key-r",
    )


async def test_a_counter_that_differs_from_the_ledger_is_flagged(
    pg_clean: Sessions, redis_client: Any, redis_namespace: str
) -> None:
    now = datetime.now(timezone.utc)
    budgets = [
        Budget(id="b-month", team_id="team-r", name="all", limit_nano=100 * 10**9, period="monthly"),
        Budget(id="b-day-4o", team_id="team-r", name="4o daily", limit_nano=10**9, period="daily",
               models=["gpt-4o"], kind="inference"),
        Budget(id="b-total", team_id="team-r", name="ever", limit_nano=10**12, period="total"),
    ]
    async with pg_clean() as s, s.begin():
        s.add(Team(id="team-r", name="recon"))
        await s.flush()
        s.add_all(budgets)
        await write_events(s, [
            event(1, 1_000_000_007, "gpt-4o", now),
            event(2, 20_000_000_011, "gpt-4o-mini", now),
            event(3, 300_000_000_013, "gpt-4o", now - timedelta(days=400)),  # only the total budget's period
        ])
    store = RedisBudgetStore(redis_client, redis_namespace)
    counters = {b.id: rule_from_budget(b).counter(now) for b in budgets}
    await store.set_spent(counters["b-month"], 21_000_000_018)
    await store.set_spent(counters["b-day-4o"], 1_000_000_007 + 5)  # counted 5 nUSD the ledger lacks
    await store.set_spent(counters["b-total"], 321_000_000_031)

    rec = await reconcile(pg_clean, store, team_id="team-r", at=now)
    by_id = {line.budget.budget_id: line for line in rec.lines}
    assert rec.mismatches == 1
    assert by_id["b-day-4o"].difference_nano == 5 and not by_id["b-day-4o"].matches
    assert by_id["b-day-4o"].ledger_nano == 1_000_000_007
    assert by_id["b-month"].matches and by_id["b-month"].ledger_nano == 21_000_000_018
    assert by_id["b-total"].matches and by_id["b-total"].ledger_nano == 321_000_000_031
    body = reconciliation_json(rec)
    flagged = [b for b in body["budgets"] if b["status"] == "mismatch"]
    assert [(b["budget_id"], b["difference_usd"], b["difference_nano"]) for b in flagged] == [("b-day-4o", "0.000000005", 5)]
    assert {b["budget_id"]: b["period_start"] for b in body["budgets"]}["b-total"] is None


async def test_the_outbox_is_drained_between_reading_counters_and_summing_the_ledger(
    pg_clean: Sessions, redis_client: Any, redis_namespace: str
) -> None:
    now = datetime.now(timezone.utc)
    budget = Budget(id="b-m", team_id="team-r", name="m", limit_nano=10**12, period="monthly")
    async with pg_clean() as s, s.begin():
        s.add(Team(id="team-r", name="recon"))
        await s.flush()
        s.add(budget)
        await write_events(s, [event(1, 700, "gpt-4o", now)])
    store = RedisBudgetStore(redis_client, redis_namespace)
    # The counter already holds a settled charge the writer has not put in the ledger yet.
    await store.set_spent(rule_from_budget(budget).counter(now), 700 + 300)

    async def drain() -> int:
        async with pg_clean() as s, s.begin():
            return len(await write_events(s, [event(2, 300, "gpt-4o", now)]))

    undrained = await reconcile(pg_clean, store, team_id="team-r", at=now)
    assert undrained.mismatches == 1 and undrained.lines[0].difference_nano == 300
    drained = await reconcile(pg_clean, store, team_id="team-r", drain=drain, at=now)
    assert drained.drained == 1 and drained.mismatches == 0
