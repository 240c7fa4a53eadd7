"""Property: whatever the ledger writer did before, during and after a rebuild, the counter ends
at the true spend (service/budgets/rebuild.py on the in-process store and SQLite)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.budgets import rebuild
from service.budgets.memory_store import MemoryBudgetStore
from service.budgets.policy import rule_from_budget
from service.budgets.store import OutboxPosition, Reservation
from service.db import migrate
from service.db.engine import make_engine, make_sessions
from service.db.models import Budget
from service.ledger.entries import write_encoded
from service.ledger.event import ChargeEvent

# An operation: ("settle", cost) | ("write", n): the writer commits and acks the n oldest entries
# | ("write_unacked", n): it commits them and dies before acking | ("direct", n): the n oldest
# pending charges settled before the snapshot are written straight to the ledger, with no
# position, as when a settle ran in Redis but its answer was lost and the proxy charged the
# ledger directly (fail-open). (Such a charge settled after the snapshot is counted twice until
# the next rebuild: docs/faults.md, known limits.)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("settle"), st.integers(0, 10**12)),
        st.tuples(st.sampled_from(["write", "write_unacked", "direct"]), st.integers(1, 4)),
    ),
    max_size=12,
)


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('rebuild') / 'ledger.db'}"
    migrate.upgrade(url)
    return url


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=OPS, between=OPS, inside=OPS, after=OPS, wrong=st.integers(0, 10**13))
def test_a_rebuild_leaves_the_counter_at_the_true_spend(
    db_url: str, before: list, between: list, inside: list, after: list, wrong: int
) -> None:
    asyncio.run(_scenario(db_url, before, between, inside, after, wrong))


async def _scenario(db_url: str, before: list, between: list, inside: list, after: list, wrong: int) -> None:
    team = f"team-{uuid.uuid4().hex[:12]}"
    store = MemoryBudgetStore()
    engine = make_engine(db_url)
    sessions = make_sessions(engine)
    budget = Budget(id=f"b-{team}", team_id=team, limit_nano=2**53 - 1, period="total")
    counter = rule_from_budget(budget).counter(datetime.now(timezone.utc))
    spent: list[int] = []
    unacked: set[str] = set()
    cutoff = [OutboxPosition(2**62, 0)]  # until the snapshot: any entry

    async def run(ops: list) -> None:
        for op, n in ops:
            if op == "settle":
                request_id = f"r-{uuid.uuid4().hex[:16]}"
                reservation = Reservation(request_id, team, 0, (counter,), 60)
                now = datetime.now(timezone.utc)
                await store.settle(reservation, ChargeEvent(
                    request_id=request_id, team_id=team, kind="inference", status="ok",
                    started_at=now, finished_at=now, cost_nano=n, model_requested="gpt-4o-mini",
                ))
                spent.append(n)
                continue
            entries = [e for e in await store.read_outbox([team], 1000) if e.entry_id not in unacked]
            if op == "direct":
                entries = [e for e in entries if OutboxPosition.parse(e.entry_id) <= cutoff[0]]
            entries = entries[:n]
            positions = [None if op == "direct" else OutboxPosition.parse(e.entry_id) for e in entries]
            async with sessions() as session, session.begin():
                await write_encoded(session, [e.raw for e in entries], positions)
            if op == "direct":  # the outbox entry stays, to be written (a no-op) by the writer later
                continue
            if op == "write":
                await store.ack_outbox(entries)
            else:
                unacked.update(e.entry_id for e in entries)

    try:
        await run(before)
        await store.set_spent(counter, wrong)  # a counter gone wrong (a Redis that lost it)
        snapshot = await store.snapshot(team, [counter])
        cutoff[0] = snapshot.through
        await run(between)
        # The writer acts again between the rebuild's read of the outbox and its ledger reads.
        real = rebuild.requests_in_ledger

        async def writer_meanwhile(*args: object) -> set[str]:
            await run(inside)
            return await real(*args)  # type: ignore[arg-type]

        rebuild.requests_in_ledger = writer_meanwhile  # type: ignore[assignment]
        try:
            assert await rebuild.rebuild_team(store, sessions, [budget], snapshot) == 1
        finally:
            rebuild.requests_in_ledger = real
        await run(after)
        (state,) = await store.standing([counter])
        assert state.spent_nano == sum(spent)
    finally:
        await engine.dispose()
