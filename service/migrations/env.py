"""Alembic environment for Farebox: SQLModel metadata, async URLs, batch mode so SQLite can alter."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import service.db.models  # noqa: F401  (registers every table on SQLModel.metadata)

config = context.config
# pg_advisory_xact_lock key ("farebox!" as a big-endian int64) held while migrating.
MIGRATION_LOCK_KEY = 7377303444378318881
target_metadata = SQLModel.metadata

# Only the developer CLI (alembic -c service/alembic.ini) configures logging here; the
# service builds its Config in code, without a file, and keeps its own logging.
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    """The URL the caller put in the Config, then `-x url=...`, then FAREBOX_DATABASE_URL."""
    url = (
        config.attributes.get("database_url")
        or context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
    )
    if url:
        return url
    from service.settings import Settings

    return Settings().database_url


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        # Batch operations let SQLite "alter" tables by copy-and-move; Postgres runs them as ALTERs.
        render_as_batch=True,
        compare_type=True,
        **kwargs,
    )


def _run_offline() -> None:
    _configure(url=_database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Replicas starting together with auto_migrate: one migrates, the others wait for
            # its commit and then find nothing left to do.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()


async def _run_async(url: str) -> None:
    # The async driver (asyncpg / aiosqlite) is the one the service ships with, so migrations
    # need no second driver; alembic itself runs on the sync facade inside run_sync.
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_sync)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    _run_offline()
else:
    # migrate.py guarantees no event loop is running in this thread.
    asyncio.run(_run_async(_database_url()))
