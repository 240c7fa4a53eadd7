"""Report fixtures: a migrated database of this package's own (SQLite file or real Postgres).

Reports sum across teams, so they need a ledger no other test writes to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db import migrate
from service.db.engine import make_engine, make_sessions


@pytest.fixture(scope="session")
def reports_pg_url(new_pg_database: Callable[[str], str]) -> str:
    url = new_pg_database("fbt_rep")
    migrate.upgrade(url)
    return url


@pytest.fixture(params=["postgres", "sqlite"])
def reports_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("reports_pg_url")
    url = f"sqlite+aiosqlite:///{tmp_path / 'reports.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture
async def sessions(reports_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(reports_url)
    yield make_sessions(engine)
    await engine.dispose()


async def emptied(sessions: async_sessionmaker[AsyncSession]) -> async_sessionmaker[AsyncSession]:
    from sqlalchemy import delete

    from service.db.models import AlertSent, ApiKey, Budget, DailyRollup, LedgerEntry, Team

    async with sessions() as s, s.begin():
        for model in (AlertSent, DailyRollup, LedgerEntry, Budget, ApiKey, Team):
            await s.execute(delete(model))
    return sessions


@pytest.fixture
async def clean(sessions: async_sessionmaker[AsyncSession]) -> async_sessionmaker[AsyncSession]:
    """This package's database, emptied: every report test sees only the rows it writes."""
    return await emptied(sessions)


@pytest.fixture
async def pg_clean(reports_pg_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """The Postgres one only, emptied (for tests that pair it with Redis)."""
    engine = make_engine(reports_pg_url)
    yield await emptied(make_sessions(engine))
    await engine.dispose()
