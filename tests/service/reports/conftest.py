"""Report fixtures: a migrated database of this package's own (SQLite file or real Postgres).

Reports sum across teams, so they need a ledger no other test writes to.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db import migrate
from service.db.engine import make_engine, make_sessions


@pytest.fixture(scope="session")
def reports_pg_url(pg_admin_dsn: str) -> Iterator[str]:
    name = f"fbt_rep_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = pg_admin_dsn.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + f"/{name}"
    migrate.upgrade(url)
    yield url
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
