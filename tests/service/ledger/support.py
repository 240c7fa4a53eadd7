"""Events and ledger read-backs shared by the ledger tests."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db.models import DailyRollup, LedgerEntry
from service.ledger.event import ChargeEvent

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
SUMS = ("requests", "prompt_tokens", "cached_tokens", "completion_tokens", "trained_tokens", "cost_nano")


def teams_of(*ids: str) -> Callable[[], Awaitable[Sequence[str]]]:
    async def team_ids() -> Sequence[str]:
        return ids

    return team_ids


def make_event(team: str, i: int, **overrides: object) -> ChargeEvent:
    """A varied charge: several keys, models, kinds and days, some without key or base model."""
    started = T0 + timedelta(hours=11 * (i % 5), seconds=i)
    fields: dict[str, object] = dict(
        request_id=f"{team}-{i:06d}",
        team_id=team,
        kind="training" if i % 7 == 0 else "inference",
        status="ok",
        started_at=started,
        finished_at=started + timedelta(seconds=2),
        cost_nano=1_000_003 * (i % 13 + 1) + 10**12,  # past 2**31: BIGINT must hold it
        key_id=None if i % 4 == 0 else f"key-{i % 3}",
        endpoint="/v1/chat/completions",
        model_requested=("gpt-4o", "gpt-4o-mini", "ft:gpt-4o-mini:acme::x1")[i % 3],
        base_model=None if i % 3 == 0 else "gpt-4o-mini",
        prompt_tokens=100 + i,
        cached_tokens=i % 10,
        completion_tokens=50 + i % 17,
        total_tokens=150 + i + i % 17,
        trained_tokens=3_000_000_000 + i if i % 7 == 0 else 0,
        catalog_version="2025-03-01",
    )
    fields.update(overrides)
    return ChargeEvent(**fields)  # type: ignore[arg-type]


async def ledger_rows(sessions: async_sessionmaker[AsyncSession], team: str) -> list[LedgerEntry]:
    async with sessions() as s:
        rows = await s.execute(select(LedgerEntry).where(LedgerEntry.team_id == team))
        return list(rows.scalars())


async def rollup_rows(sessions: async_sessionmaker[AsyncSession], team: str) -> dict[tuple, dict[str, int]]:
    async with sessions() as s:
        rows = (await s.execute(select(DailyRollup).where(DailyRollup.team_id == team))).scalars()
        return {
            (r.day, r.key_id, r.model, r.base_model, r.kind): {n: int(getattr(r, n)) for n in SUMS}
            for r in rows
        }


def expected_rollup(rows: Sequence[LedgerEntry]) -> dict[tuple, dict[str, int]]:
    """ledger_daily as it must be: the ledger rows grouped by UTC day, key, model, base model, kind."""
    out: dict[tuple, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SUMS, 0))
    for r in rows:
        started = r.started_at if r.started_at.tzinfo else r.started_at.replace(tzinfo=timezone.utc)
        key = (started.astimezone(timezone.utc).date(), r.key_id or "", r.model_requested, r.base_model or "", r.kind)
        acc = out[key]
        acc["requests"] += 1
        for name in SUMS[1:]:
            acc[name] += int(getattr(r, name))
    return dict(out)


async def assert_exactly_once(
    sessions: async_sessionmaker[AsyncSession], team: str, events: Sequence[ChargeEvent]
) -> list[LedgerEntry]:
    """Every event has one ledger row, nothing else does, and ledger_daily sums the rows."""
    rows = await ledger_rows(sessions, team)
    counts = Counter(r.request_id for r in rows)
    assert sorted(counts) == sorted({e.request_id for e in events})
    assert set(counts.values()) == {1}
    assert sum(int(r.cost_nano) for r in rows) == sum(
        e.cost_nano for e in {e.request_id: e for e in events}.values()
    )
    assert await rollup_rows(sessions, team) == expected_rollup(rows)
    return rows


async def drain(flush: Callable[[], Awaitable[int]]) -> int:
    """Call flush until it handles nothing; returns the total handled."""
    total = 0
    while handled := await flush():
        total += handled
    return total


async def drain_like_the_loop(flush: Callable[[], Awaitable[int]], attempts: int = 100) -> int:
    """drain, retrying what the writer's loop treats as an outage (SQLite's "database is locked"
    when two writers collide): the loop backs off and tries again, and so does this."""
    from sqlalchemy.exc import OperationalError

    total = 0
    for _ in range(attempts):
        try:
            while handled := await flush():
                total += handled
            return total
        except OperationalError as exc:
            if "database is locked" not in str(exc):
                raise
            await asyncio.sleep(0.05)
    raise AssertionError(f"still locked after {attempts} attempts")


async def poll(condition: Callable[[], object], timeout_s: float = 10.0) -> None:
    """Wait until condition() (sync or async) is true."""
    deadline = time.monotonic() + timeout_s
    while not await _value(condition()):
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def _value(result: object) -> object:
    return await result if inspect.isawaitable(result) else result
