"""Ledger reads: one request's rows, total spend, and what a budget rule has spent in a period."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

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
    assert columns - set(EVENT_FIELDS) == {"id", "recorded_at"}
