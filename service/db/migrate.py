"""Schema migrations (Alembic) run from code: the CLI's `farebox migrate` and startup with auto_migrate."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import pool
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

# Found beside the installed package, never relative to the working directory.
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

T = TypeVar("T")

# Alembic keeps its running environment in module globals: one migration at a time per process.
# Across processes (replicas), env.py takes a Postgres advisory lock.
_ALEMBIC_LOCK = threading.Lock()


def alembic_config(database_url: str | None = None) -> Config:
    """An Alembic Config built in code that points at the packaged migrations."""
    cfg = Config()
    # ConfigParser interpolates '%'; the install path must survive that.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if database_url is not None:
        # Passed as an attribute, not an option, so '%' in a password is not interpolated.
        cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate the database up to `revision` (default: the newest)."""
    _outside_loop(lambda: _locked(command.upgrade, alembic_config(database_url), revision))


def downgrade(database_url: str, revision: str = "base") -> None:
    """Migrate the database down to `revision` (default: empty, every table dropped)."""
    _outside_loop(lambda: _locked(command.downgrade, alembic_config(database_url), revision))


def head() -> str | None:
    """The newest revision the packaged migrations define."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current(database_url: str) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        if not Path(url.database).exists():
            return None  # asking must not create an empty database file

    async def read() -> str | None:
        engine = create_async_engine(database_url, poolclass=pool.NullPool)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda sync_conn: MigrationContext.configure(sync_conn).get_current_revision()
                )
        finally:
            await engine.dispose()

    return _outside_loop(lambda: asyncio.run(read()))


async def upgrade_async(database_url: str, revision: str = "head") -> None:
    """upgrade() for async callers (startup), without blocking their event loop."""
    await asyncio.to_thread(upgrade, database_url, revision)


def _locked(fn: Callable[[Config, str], None], cfg: Config, revision: str) -> None:
    with _ALEMBIC_LOCK:
        fn(cfg, revision)


def _outside_loop(fn: Callable[[], T]) -> T:
    """Run fn where asyncio.run is allowed: here, or in a worker thread when a loop is running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool_:
        return pool_.submit(fn).result()
