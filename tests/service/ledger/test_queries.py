"""Ledger reads: one request's rows, total spend, and what a budget rule has spent in a period."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.budgets.store import OutboxPosition
from service.db.models import Budget, LedgerEntry
from service.ledger.entries import EVENT_FIELDS
from service.ledger.queries import entries_for_request, spent_by_budget, total_cost
from service.ledger.writer import write_events
from tests.service.ledger.support import make_event

Sessions = async_sessionmaker[AsyncSession]
DAY = datetime(2025, 5, 10, tzinfo=timezone.utc)


def charge(team: str, n: int, cost: int, **kw: object):  # type: ignore[no-untyped-def]
    at = kw.pop("at", DAY + timedelta(hours=1))
    kw.setdefault("kind", "inference")
    return make_event(team, n, cost_nano=cost, started_at=at, finished_at=at, **kw)


async def seed(sessions: Sessions, team: str) -> None:
    other = team + "-other"
    events = [
        charge(team, 1, 1, key_id="k1", model_requested="gpt-4o", base_model=None, kind="inference"),
        charge(team, 2, 10, key_id="k2", model_requested="gpt-4o-mini", base_model=None, kind="inference"),
        charge(team, 3, 100, key_id="k1", model_requested="ft:gpt-4o-mini:acme::1",
               base_model="gpt-4o-mini", kind="inference"),
        charge(team, 4, 1_000, key_id=None, model_requested="gpt-4o-mini", base_model="gpt-4o-mini",
               kind="training"),
        # Outside the day: one just before it, one exactly at its end (periods are half-open).
        charge(team, 5, 10_000, key_id="k1", model_requested="gpt-4o", base_model=None,
               at=DAY - timedelta(microseconds=1)),
        charge(team, 6, 100_000, key_id="k1", model_requested="gpt-4o", base_model=None,
               at=DAY + timedelta(days=1)),
        # Same instant as the first, written with another offset.
        charge(team, 7, 1_000_000, key_id="k1", model_requested="gpt-4o", base_model=None,
               at=(DAY + timedelta(hours=23)).astimezone(timezone(timedelta(hours=9)))),
        charge(other, 8, 10**15, key_id="k1", model_requested="gpt-4o", base_model=None),
    ]
    async with sessions() as s, s.begin():
        await write_events(s, events)


def rule(team: str, **kw: object) -> Budget:
    return Budget(id="b", team_id=team, limit_nano=1, period="daily", **kw)


async def test_spent_by_budget_matches_team_key_models_kind_and_period(sessions: Sessions, team: str) -> None:
    await seed(sessions, team)
    end = DAY + timedelta(days=1)
    async with sessions() as s:
        assert await spent_by_budget(s, rule(team), DAY, end) == 1_001_111
        assert await spent_by_budget(s, rule(team, key_id="k1"), DAY, end) == 1_000_101
        assert await spent_by_budget(s, rule(team, kind="training"), DAY, end) == 1_000
        # A model matches the requested name or the base model of a fine-tuned one.
        assert await spent_by_budget(s, rule(team, models=["gpt-4o-mini"]), DAY, end) == 1_110
        assert await spent_by_budget(s, rule(team, models=["gpt-4o-mini"], kind="inference"), DAY, end) == 110
        assert await spent_by_budget(s, rule(team, models=[]), DAY, end) == 1_001_111
        assert await spent_by_budget(s, rule(team, models=["gpt-4o"], key_id="k1"), None, None) == 1_110_001
        assert await spent_by_budget(s, rule(team, key_id="nobody"), DAY, end) == 0


async def test_total_cost_and_entries_for_request(sessions: Sessions, team: str) -> None:
    await seed(sessions, team)
    async with sessions() as s:
        assert await total_cost(s, team_id=team) == 1_111_111
        assert await total_cost(s, team_id=team, since=DAY) == 1_101_111
        assert await total_cost(s, team_id=team, since=DAY, until=DAY + timedelta(days=1)) == 1_001_111
        local = timezone(timedelta(hours=-7))
        assert await total_cost(s, team_id=team, until=DAY.astimezone(local)) == 10_000
        assert await total_cost(s, team_id=team + "-nobody") == 0
        assert await total_cost(s) >= 1_111_111 + 10**15

        (row,) = await entries_for_request(s, f"{team}-000003")
        assert isinstance(row, LedgerEntry)
        assert (row.cost_nano, row.base_model, row.key_id) == (100, "gpt-4o-mini", "k1")
        assert await entries_for_request(s, "no-such-request") == []


def test_every_event_field_is_a_ledger_column() -> None:
    columns = set(LedgerEntry.__table__.columns.keys())  # type: ignore[attr-defined]
    assert set(EVENT_FIELDS) <= columns
    assert columns - set(EVENT_FIELDS) == {"id", "recorded_at", "outbox_ms", "outbox_seq"}


async def test_spent_through_an_outbox_position_counts_rows_up_to_it_and_every_direct_row(
    sessions: Sessions, team: str
) -> None:
    at = DAY + timedelta(hours=2)
    events = [charge(team, n, cost, at=at) for n, cost in enumerate((1, 10, 100, 1_000, 10_000), start=1)]
    positions = [
        OutboxPosition(1_700_000_000_000, 0),
        OutboxPosition(1_700_000_000_000, 1),
        OutboxPosition(1_700_000_000_001, 0),
        None,  # written straight to the ledger (fail-open): always counts
        OutboxPosition(1_700_000_000_002, 7),
    ]
    async with sessions() as s, s.begin():
        assert len(await write_events(s, events, positions)) == 5
    end = DAY + timedelta(days=1)
    async with sessions() as s:
        rows = {r.request_id: (r.outbox_ms, r.outbox_seq) for r in await ledger_of(s, team)}
        assert rows[f"{team}-000002"] == (1_700_000_000_000, 1) and rows[f"{team}-000004"] == (None, None)
        spent = [
            await spent_by_budget(s, rule(team), DAY, end, through)
            for through in (
                OutboxPosition(1_699_999_999_999, OutboxPosition.MAX_SEQ),
                OutboxPosition(1_700_000_000_000, 0),
                OutboxPosition(1_700_000_000_000, OutboxPosition.MAX_SEQ),
                OutboxPosition(1_700_000_000_002, 6),
                OutboxPosition(1_700_000_000_002, 7),
            )
        ]
        assert spent == [1_000, 1_001, 1_011, 1_111, 11_111]
        assert await spent_by_budget(s, rule(team), DAY, end) == 11_111


async def test_a_position_is_kept_only_by_the_write_that_inserted_the_row(sessions: Sessions, team: str) -> None:
    event = charge(team, 1, 5)
    async with sessions() as s, s.begin():
        await write_events(s, [event])  # a direct write first (fine-tuning settles this way too)
    async with sessions() as s, s.begin():
        assert await write_events(s, [event], [OutboxPosition(9, 9)]) == []
    async with sessions() as s:
        (row,) = await ledger_of(s, team)
        assert (row.outbox_ms, row.outbox_seq) == (None, None)


async def ledger_of(s: AsyncSession, team: str) -> list[LedgerEntry]:
    rows = await s.execute(select(LedgerEntry).where(LedgerEntry.team_id == team))  # type: ignore[arg-type]
    return list(rows.scalars())
