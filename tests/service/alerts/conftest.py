"""Alert fixtures: a Postgres database of this package's own, sessions on it, a webhook receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db import migrate
from service.db.engine import make_engine, make_sessions
from tests.service.alerts.receiver import Receiver


@pytest.fixture(scope="session")
def alerts_pg_url(new_pg_database: Callable[[str], str]) -> str:
    url = new_pg_database("fbt_alert")
    migrate.upgrade(url)
    return url


async def _emptied_sessions(url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    from sqlalchemy import delete

    from service.db.models import AlertSent

    engine = make_engine(url)
    sessions = make_sessions(engine)
    async with sessions() as s, s.begin():
        await s.execute(delete(AlertSent))
    yield sessions
    await engine.dispose()


@pytest.fixture
async def sessions(alerts_pg_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the alerts database with its alerts table emptied (dispatchers see only this test's)."""
    async for sessions in _emptied_sessions(alerts_pg_url):
        yield sessions


@pytest.fixture(params=["postgres", "sqlite"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The alerts Postgres database, or a fresh SQLite file (the embedded default)."""
    if request.param == "postgres":
        return request.getfixturevalue("alerts_pg_url")
    url = f"sqlite+aiosqlite:///{tmp_path / 'alerts.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture
async def any_sessions(any_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    async for sessions in _emptied_sessions(any_url):
        yield sessions


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()
