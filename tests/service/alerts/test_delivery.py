"""Claiming and delivering alerts on real Postgres, with several replicas racing."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.alerts.claims import claim
from service.alerts.dispatcher import Dispatcher, DispatchConfig
from service.alerts.service import AlertService
from service.alerts.thresholds import Crossing
from service.alerts.webhook import WebhookPoster
from service.budgets.policy import BudgetRule
from service.budgets.store import BudgetCounter, CounterState, SettleResult
from service.db.engine import make_engine, make_sessions
from service.db.models import AlertSent, Budget, Team
from tests.service.alerts.receiver import Receiver

Sessions = async_sessionmaker[AsyncSession]
START = datetime(2026, 11, 1, tzinfo=timezone.utc)
END = datetime(2026, 12, 1, tzinfo=timezone.utc)
FAST = DispatchConfig(retry_initial_s=0.05, retry_max_s=0.2, poll_s=0.05, lease_s=30)


async def make_team(
    sessions: Sessions, webhook: str | None, limit_nano: int = 1_000_000, thresholds: tuple[int, ...] | None = None
) -> tuple[str, str]:
    team_id, budget_id = f"t-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    async with sessions() as s, s.begin():
        s.add(Team(id=team_id, name=team_id, webhook_url=webhook))
        await s.flush()
        s.add(Budget(id=budget_id, team_id=team_id, name="cap", limit_nano=limit_nano, period="monthly",
                     thresholds=list(thresholds) if thresholds else None))
    return team_id, budget_id


async def alerts_of(sessions: Sessions, team_id: str) -> list[AlertSent]:
    async with sessions() as s:
        rows = await s.execute(select(AlertSent).where(AlertSent.team_id == team_id).order_by(AlertSent.threshold))
        return list(rows.scalars())


@contextlib.asynccontextmanager
async def dispatching(sessions: Sessions, config: DispatchConfig = FAST) -> AsyncIterator[Dispatcher]:
    poster = WebhookPoster(timeout_s=5)
    await poster.start()
    dispatcher = Dispatcher(sessions, poster, config)
    task = asyncio.create_task(dispatcher.run())
    try:
        yield dispatcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await poster.close()


async def poll(predicate: Any, timeout_s: float = 15.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not (value := await predicate()):
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)
    return value


async def test_replicas_racing_to_claim_one_crossing_insert_one_alert(sessions: Sessions, alerts_pg_url: str) -> None:
    team_id, budget_id = await make_team(sessions, None)
    crossing = Crossing(budget_id, team_id, START, 80, 800_000, 1_000_000)
    engines = [make_engine(alerts_pg_url, pool_size=1) for _ in range(6)]
    try:
        async def one_replica(engine: Any) -> list[int]:
            async with make_sessions(engine)() as s, s.begin():
                return await claim(s, [crossing, crossing])

        results = await asyncio.gather(*(one_replica(e) for e in engines))
    finally:
        for engine in engines:
            await engine.dispose()
    assert sorted(len(ids) for ids in results) == [0, 0, 0, 0, 0, 1]
    rows = await alerts_of(sessions, team_id)
    assert [(r.id, r.threshold, r.status, r.attempts) for r in rows] == [(results_id(results), 80, "pending", 0)]


def results_id(results: list[list[int]]) -> int:
    return next(i for ids in results for i in ids)


async def test_a_receiver_that_fails_twice_gets_the_alert_on_the_third_attempt(any_sessions: Sessions, receiver: Receiver) -> None:
    sessions = any_sessions
    receiver.fail_first["flaky"] = 2
    team_id, budget_id = await make_team(sessions, receiver.url("flaky"))
    async with sessions() as s, s.begin():
        [alert_id] = await claim(s, [Crossing(budget_id, team_id, START, 50, 500_001, 1_000_000)])
    async with dispatching(sessions):
        [body] = await receiver.wait_for("flaky", 1)
        await poll(lambda: _delivered(sessions, team_id))
    assert body["alert_id"] == alert_id and body["threshold_percent"] == 50
    assert (body["spent_usd"], body["limit_usd"]) == ("0.000500001", "0.001000000")
    assert (body["period_start"], body["period_end"]) == ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z")
    assert len(receiver.failed) == 2
    [row] = await alerts_of(sessions, team_id)
    assert (row.status, row.attempts, row.next_attempt_at) == ("delivered", 3, None)
    assert row.last_error is not None and row.last_error.startswith("HTTP 500")
    assert row.delivered_at is not None


async def _delivered(sessions: Sessions, team_id: str) -> bool:
    rows = await alerts_of(sessions, team_id)
    return bool(rows) and all(r.status == "delivered" for r in rows)


async def test_two_dispatchers_deliver_each_alert_exactly_once(sessions: Sessions, alerts_pg_url: str, receiver: Receiver) -> None:
    teams = [await make_team(sessions, receiver.url("race")) for _ in range(4)]
    async with sessions() as s, s.begin():
        ids = await claim(s, [Crossing(b, t, START, pct, pct * 10_000, 1_000_000) for t, b in teams for pct in (50, 80)])
    assert len(ids) == 8
    other = make_engine(alerts_pg_url)
    try:
        async with dispatching(sessions), dispatching(make_sessions(other)):
            bodies = await receiver.wait_for("race", 8)
            await asyncio.gather(*(poll(lambda t=t: _delivered(sessions, t)) for t, _ in teams))
            await asyncio.sleep(0.3)  # several more polls of both: nothing is sent again
    finally:
        await other.dispose()
    assert Counter(b["alert_id"] for b in receiver.bodies("race")) == Counter(ids)
    assert len(bodies) == 8
    for team_id, _ in teams:
        assert [(r.status, r.attempts) for r in await alerts_of(sessions, team_id)] == [("delivered", 1)] * 2


async def test_a_team_without_a_webhook_is_recorded_as_such(any_sessions: Sessions) -> None:
    sessions = any_sessions
    team_id, budget_id = await make_team(sessions, None)
    async with sessions() as s, s.begin():
        await claim(s, [Crossing(budget_id, team_id, START, 100, 10**6, 10**6)])
    async with dispatching(sessions):
        rows = await poll(lambda: _statuses(sessions, team_id, "no_webhook"))
    assert [(r.status, r.attempts, r.next_attempt_at) for r in rows] == [("no_webhook", 0, None)]


async def _statuses(sessions: Sessions, team_id: str, status: str) -> list[AlertSent] | None:
    rows = await alerts_of(sessions, team_id)
    return rows if rows and all(r.status == status for r in rows) else None


class Replica:
    """An AlertService as one Farebox replica holds it, with its budgets and counters faked."""

    def __init__(self, sessions: Sessions, rule: BudgetRule, spent: list[int]) -> None:
        self.tasks: list[asyncio.Future[Any]] = []
        self.sent: list[tuple[str, dict]] = []
        counter = rule.counter(START)

        async def rules(team_id: str) -> list[BudgetRule]:
            return [rule] if team_id == rule.team_id else []

        async def standing(counters: list[BudgetCounter]) -> list[CounterState]:
            return [CounterState(c, spent[0] if c.budget_id == rule.id else 0, 0) for c in counters]

        async def post(url: str, body: dict) -> None:
            self.sent.append((url, body))

        def spawn(coro: Awaitable[Any]) -> asyncio.Future[Any]:
            task = asyncio.ensure_future(coro)
            self.tasks.append(task)
            return task

        self.service = AlertService(
            sessions, rules=rules, standing=standing, spawn=spawn, post=post,
            default_thresholds=(50, 80, 100),
        )
        self.counter = counter

    def settle(self, before: int, after: int) -> None:
        self.service.on_settle(None, None, SettleResult(
            True, (CounterState(self.counter, before, 0),), (CounterState(self.counter, after, 0),)
        ))

    async def settled(self) -> None:
        await asyncio.gather(*self.tasks)
        self.tasks.clear()


@pytest.mark.parametrize("thresholds", [None, (25, 100)])
async def test_hook_and_sweep_on_two_replicas_claim_each_threshold_once(
    any_sessions: Sessions, thresholds: tuple[int, ...] | None
) -> None:
    sessions = any_sessions
    team_id, budget_id = await make_team(sessions, None, limit_nano=1_000, thresholds=thresholds)
    rule = BudgetRule(budget_id, team_id, 1_000, "monthly", name="cap", thresholds=thresholds)
    spent = [0]
    a, b = Replica(sessions, rule, spent), Replica(sessions, rule, spent)
    # The first settle on a replica loads the team's thresholds in a task; later ones are pure arithmetic.
    a.settle(0, 100)
    b.settle(0, 100)
    await a.settled()
    await b.settled()
    assert await alerts_of(sessions, team_id) == []
    for replica in (a, b):  # both saw the same crossing (a retried settle reports it twice)
        replica.settle(100, 850)
    await a.settled()
    await b.settled()
    want = [50, 80] if thresholds is None else [25]
    assert [r.threshold for r in await alerts_of(sessions, team_id)] == want
    # A process died before claiming 100 %: the sweep of either replica finds it, once.
    spent[0] = 1_000
    at = START + timedelta(days=3)
    created = [await a.service.sweep(at), await b.service.sweep(at), await a.service.sweep(at)]
    assert created == [1, 0, 0]
    rows = await alerts_of(sessions, team_id)
    assert [r.threshold for r in rows] == [*want, 100]
    assert {r.period_start.astimezone(timezone.utc) for r in rows} == {START}
    assert all(r.budget_id == budget_id and r.limit_nano == 1_000 for r in rows)
