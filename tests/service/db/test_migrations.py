"""The Alembic migrations build exactly the schema of service/db/models.py, on Postgres and SQLite."""

from __future__ import annotations

import concurrent.futures
import glob
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, pool, text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlmodel import SQLModel

import service.db.models  # noqa: F401  (registers the tables)
from service.budgets.store import OutboxPosition
from service.db import migrate
from service.db.models import Budget
from service.ledger.queries import spent_by_budget

ROOT = Path(__file__).resolve().parents[3]
TABLES = {
    "teams", "api_keys", "budgets", "ledger", "ledger_daily", "files",
    "fine_tuning_jobs", "owned_models", "model_shares", "alerts",
}


@pytest.fixture
def fresh_pg(pg_admin_dsn: str) -> Iterator[str]:
    """A Postgres database of this test's own: migrations go down to base here, never in pg_url."""
    name = f"fbt_migr_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_admin_dsn.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def schema_report(url: str) -> tuple[list[object], dict[str, object]]:
    """Alembic's differences between the database and the models, and facts read from the database."""

    def read(sync_conn):  # type: ignore[no-untyped-def]
        diffs = compare_metadata(
            MigrationContext.configure(sync_conn, opts={"compare_type": True}), SQLModel.metadata
        )
        insp = inspect(sync_conn)
        tables = set(insp.get_table_names()) - {"alembic_version"}
        facts: dict[str, object] = {"tables": tables}
        if "ledger" in tables:
            cols = {c["name"]: c for c in insp.get_columns("ledger")}
            facts["ledger_types"] = {n: type(cols[n]["type"]).__name__ for n in ("id", "cost_nano", "trained_tokens", "started_at")}
            facts["ledger_unique"] = [u["column_names"] for u in insp.get_unique_constraints("ledger")]
            facts["ledger_indexes"] = sorted(
                (i["name"], tuple(i["column_names"]))
                for i in insp.get_indexes("ledger")
                if not i.get("duplicates_constraint")  # Postgres lists a unique constraint's index too
            )
            facts["budget_models"] = type({c["name"]: c for c in insp.get_columns("budgets")}["models"]["type"]).__name__
            facts["daily_pk"] = insp.get_pk_constraint("ledger_daily")["constrained_columns"]
            facts["alerts_unique"] = [u["column_names"] for u in insp.get_unique_constraints("alerts")]
        return diffs, facts

    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(read)
    finally:
        await engine.dispose()


async def test_postgres_upgrades_to_the_models_and_downgrades_to_nothing(fresh_pg: str) -> None:
    assert migrate.current(fresh_pg) is None
    migrate.upgrade(fresh_pg)
    assert migrate.current(fresh_pg) == migrate.head() == "0002"

    diffs, facts = await schema_report(fresh_pg)
    assert diffs == []
    assert facts["tables"] == TABLES
    assert facts["ledger_types"] == {
        "id": "BIGINT", "cost_nano": "BIGINT", "trained_tokens": "BIGINT", "started_at": "TIMESTAMP",
    }
    assert facts["ledger_unique"] == [["request_id"]]
    assert facts["ledger_indexes"] == [
        ("ix_ledger_job", ("job_id",)),
        ("ix_ledger_started", ("started_at",)),
        ("ix_ledger_team_started", ("team_id", "started_at")),
    ]
    assert facts["budget_models"] == "JSON"
    assert facts["daily_pk"] == ["day", "team_id", "key_id", "model", "base_model", "kind"]
    assert facts["alerts_unique"] == [["budget_id", "period_start", "threshold"]]

    engine = create_async_engine(fresh_pg, poolclass=pool.NullPool)
    try:
        async with engine.connect() as conn:
            tz = (await conn.execute(text(
                "SELECT data_type FROM information_schema.columns "
                "WHERE table_name = 'ledger' AND column_name = 'started_at'"
            ))).scalar_one()
            seq = (await conn.execute(text("SELECT pg_get_serial_sequence('ledger', 'id')"))).scalar_one()
    finally:
        await engine.dispose()
    assert tz == "timestamp with time zone"
    assert seq == "public.ledger_id_seq"

    migrate.upgrade(fresh_pg)  # already at head: nothing to do, nothing fails
    migrate.downgrade(fresh_pg, "base")
    assert migrate.current(fresh_pg) is None
    assert (await schema_report(fresh_pg))[1]["tables"] == set()


async def test_sqlite_upgrades_to_the_models_and_downgrades_to_nothing(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'farebox.db'}"
    assert migrate.current(url) is None
    assert not (tmp_path / "farebox.db").exists()  # asking did not create the file

    migrate.upgrade(url)  # called inside this test's running event loop
    assert migrate.current(url) == migrate.head()
    diffs, facts = await schema_report(url)
    assert diffs == []
    assert facts["tables"] == TABLES
    assert facts["ledger_unique"] == [["request_id"]]
    assert facts["budget_models"] == "JSON"

    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as conn:
            # The id is SQLite's rowid (INTEGER PRIMARY KEY), assigned on insert.
            ddl = (await conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'ledger'"))).scalar_one()
            await conn.execute(text(
                "INSERT INTO ledger (request_id, team_id, kind, endpoint, model_requested, fine_tuned, "
                "priced, prompt_tokens, cached_tokens, completion_tokens, total_tokens, trained_tokens, "
                "cost_nano, catalog_version, status, usage_source, started_at, finished_at, recorded_at) "
                "VALUES ('r1', 't', 'inference', '', 'm', 0, 1, 0, 0, 0, 0, 0, 9007199254740993, '', 'ok', "
                "'upstream', '2025-01-01', '2025-01-01', '2025-01-01')"
            ))
            row = (await conn.execute(text("SELECT id, cost_nano FROM ledger"))).one()
    finally:
        await engine.dispose()
    assert "id INTEGER NOT NULL" in ddl and "PRIMARY KEY (id)" in ddl
    assert tuple(row) == (1, 2**53 + 1)  # exact past a double's precision

    migrate.downgrade(url)
    assert migrate.current(url) is None
    assert (await schema_report(url))[1]["tables"] == set()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_0002_keeps_existing_ledger_rows_and_counts_them_in_every_rebuild(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Rows written before outbox positions were recorded have none: a rebuild always counts them."""
    url = request.getfixturevalue("fresh_pg") if backend == "postgres" else f"sqlite+aiosqlite:///{tmp_path / 'up.db'}"
    migrate.upgrade(url, "0001")
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO ledger (request_id, team_id, kind, endpoint, model_requested, fine_tuned, "
                "priced, prompt_tokens, cached_tokens, completion_tokens, total_tokens, trained_tokens, "
                "cost_nano, catalog_version, status, usage_source, started_at, finished_at, recorded_at) "
                "VALUES ('r1', 't', 'inference', '', 'm', false, true, 0, 0, 0, 0, 0, 12345, '', 'ok', "
                "'upstream', '2025-01-01 00:00:00+00', '2025-01-01 00:00:00+00', '2025-01-01 00:00:00+00')"
            ))
        migrate.upgrade(url)
        assert migrate.current(url) == "0002"
        async with engine.connect() as conn:
            row = (await conn.execute(text("SELECT outbox_ms, outbox_seq, cost_nano FROM ledger"))).one()
        async with async_sessionmaker(engine)() as session:
            spent = await spent_by_budget(
                session, Budget(id="b", team_id="t", limit_nano=1, period="total"), None, None,
                OutboxPosition(0, 0),
            )
    finally:
        await engine.dispose()
    assert tuple(row) == (None, None, 12345)
    assert spent == 12345
    migrate.downgrade(url, "0001")
    assert migrate.current(url) == "0001"


def test_migrations_do_not_depend_on_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no event loop in this (sync) test: the direct path
    url = f"sqlite+aiosqlite:///{tmp_path / 'cwd.db'}"
    migrate.upgrade(url)
    assert migrate.current(url) == migrate.head()
    assert migrate.MIGRATIONS_DIR == ROOT / "service" / "migrations"
    assert list(elsewhere.iterdir()) == []


async def test_upgrade_async_does_not_need_a_free_thread(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'async.db'}"
    await migrate.upgrade_async(url)
    assert migrate.current(url) == migrate.head()


def test_the_package_ships_every_migration_file() -> None:
    """pyproject's package-data globs must cover env.py, the template and every revision."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["service"]
    service_dir = ROOT / "service"
    shipped = {
        path for pattern in patterns
        for path in glob.glob(pattern, root_dir=service_dir, recursive=True)
        if (service_dir / path).is_file()
    }
    needed = {
        str(p.relative_to(service_dir)) for p in (service_dir / "migrations").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert {"migrations/env.py", "migrations/script.py.mako", "migrations/versions/0001_initial_schema.py"} <= needed
    assert needed <= shipped


def test_replicas_migrating_at_once_all_succeed(fresh_pg: str) -> None:
    """Replicas starting together with auto_migrate race; the advisory lock makes them take turns."""
    code = "import sys; from service.db import migrate; migrate.upgrade(sys.argv[1])"
    replicas = [
        subprocess.Popen([sys.executable, "-c", code, fresh_pg], cwd=ROOT, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    for replica in replicas:
        _, err = replica.communicate(timeout=60)
        assert replica.returncode == 0, err.decode()
    assert migrate.current(fresh_pg) == migrate.head()


def test_threads_of_one_process_take_turns(tmp_path: Path) -> None:
    """Alembic's environment is process-global; concurrent calls in one process must not interleave."""
    urls = [f"sqlite+aiosqlite:///{tmp_path / f'{n}.db'}" for n in range(4)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool_:
        list(pool_.map(migrate.upgrade, urls))
    assert [migrate.current(url) for url in urls] == [migrate.head()] * 4
