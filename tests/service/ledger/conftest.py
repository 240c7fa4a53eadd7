"""Ledger fixtures: a migrated database on SQLite (temp file) and on the real Postgres."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db import migrate
from service.db.engine import make_engine, make_sessions


@pytest.fixture(scope="session")
def migrated_pg_url(pg_url: str) -> str:
    migrate.upgrade(pg_url)
    return pg_url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("migrated_pg_url")
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(db_url)
    yield make_sessions(engine)
    await engine.dispose()


@pytest.fixture
def team() -> str:
    """A team id no other test uses: the Postgres database is shared by the whole session."""
    return f"team-{uuid.uuid4().hex[:12]}"
