"""Two in-process Farebox runtimes sharing one database (and, on Redis, one budget store)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from service.db import migrate
from service.runtime import Runtime
from service.settings import Settings
from tests.conftest import PG_HOST, PG_PORT


@pytest.fixture(scope="module")
def unit_pg_url(pg_admin_dsn: str) -> Iterator[str]:
    """A database no Farebox process watches, so only these tests claim its jobs."""
    import psycopg

    name = f"fbt_ftu_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{name}"
    migrate.upgrade(url)
    yield url
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["memory", "redis"])
async def runtimes(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Runtime, Runtime]]:
    """On Redis, two replicas; on the in-process store the second has a fresh one, as a restarted
    embedded Farebox does."""
    if request.param == "memory":
        url = f"sqlite+aiosqlite:///{tmp_path / 'farebox.db'}"
        migrate.upgrade(url)
        settings = Settings(database_url=url, upstream_url="http://127.0.0.1:9/v1")
    else:
        settings = Settings(
            database_url=request.getfixturevalue("unit_pg_url"), redis_url=request.getfixturevalue("redis_url"),
            redis_namespace=request.getfixturevalue("redis_namespace"), upstream_url="http://127.0.0.1:9/v1",
        )
    first, second = Runtime(settings), Runtime(settings)
    await first.start()
    await second.start()
    yield first, second
    for rt in (first, second):
        await rt.stop()
    if first.redis is None:
        return
    import redis.asyncio as redis

    client = redis.Redis.from_url(settings.redis_url)
    async for key in client.scan_iter(match=f"{settings.redis_namespace}*", count=1000):
        await client.delete(key)
    await client.aclose()
