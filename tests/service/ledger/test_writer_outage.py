"""The writer against a real Postgres that stops accepting connections and comes back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy.exc import DBAPIError

from service.db import migrate
from service.db.engine import make_engine, make_sessions
from service.ledger.writer import LedgerWriter
from tests.service.ledger.fake_outbox import FakeOutbox
from tests.service.ledger.support import assert_exactly_once, ledger_rows, make_event, poll, teams_of

pytestmark = pytest.mark.postgres


class Database:
    """A Postgres database of this test's own, which the test can close to connections and reopen."""

    def __init__(self, admin_dsn: str, name: str) -> None:
        self.admin_dsn, self.name = admin_dsn, name
        self.url = admin_dsn.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + f"/{name}"

    def _admin(self, *statements: str) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)

    def go_down(self) -> None:
        self._admin(
            f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false',
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{self.name}' AND pid <> pg_backend_pid()",
        )

    def come_back(self) -> None:
        self._admin(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')


@pytest.fixture
def database(pg_admin_dsn: str) -> Iterator[Database]:
    db = Database(pg_admin_dsn, f"fbt_ledger_{uuid.uuid4().hex[:10]}")
    db._admin(f'CREATE DATABASE "{db.name}"')
    try:
        migrate.upgrade(db.url)
        yield db
    finally:
        db._admin(
            f'ALTER DATABASE "{db.name}" ALLOW_CONNECTIONS true',
            f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)',
        )


async def test_events_written_while_the_database_is_down_arrive_exactly_once(database: Database) -> None:
    team = f"team-{uuid.uuid4().hex[:12]}"
    engine = make_engine(database.url)
    sessions = make_sessions(engine)
    store = FakeOutbox()
    writer = LedgerWriter(
        store,
        sessions,
        team_ids=teams_of(team),
        batch_size=50,
        flush_interval_s=0.01,
        backoff_initial_s=0.02,
        backoff_max_s=0.2,
    )
    try:
        before = [make_event(team, i) for i in range(100)]
        for ev in before:
            store.append(ev)
        await writer.start()
        await poll(lambda: store.pending == 0)

        database.go_down()
        during = [make_event(team, i) for i in range(100, 400)]
        for ev in during:
            store.append(ev)
        direct = [make_event(team, i) for i in range(400, 420)]
        for ev in direct:
            writer.submit_direct(ev)
        with pytest.raises(DBAPIError):
            await writer.write_direct([make_event(team, 999)])  # the caller is told, and keeps it
        await poll(lambda: writer.consecutive_failures >= 3)
        assert store.pending == 300  # nothing acked while nothing could be committed
        assert writer.pending_estimate >= 20

        database.come_back()
        await poll(lambda: store.pending == 0 and writer.pending_estimate == 0, timeout_s=20)
        assert await writer.stop() == 0
        await assert_exactly_once(sessions, team, before + during + direct)
    finally:
        await writer.stop(drain=False)
        await engine.dispose()


async def test_stop_while_the_database_is_down_loses_nothing(database: Database) -> None:
    team = f"team-{uuid.uuid4().hex[:12]}"
    store = FakeOutbox(redeliver_after_s=0.0)
    events = [make_event(team, i) for i in range(120)]
    for ev in events:
        store.append(ev)
    engine = make_engine(database.url)
    sessions = make_sessions(engine)
    try:
        database.go_down()
        dying = LedgerWriter(store, sessions, team_ids=teams_of(team), batch_size=50,
                             backoff_initial_s=0.02, backoff_max_s=0.1)
        await dying.start()
        left = await dying.stop(drain=True, timeout_s=0.5)
        assert left == 50  # the batch it held; the outbox still has every entry
        assert store.pending == 120

        database.come_back()
        successor = LedgerWriter(store, sessions, team_ids=teams_of(team), batch_size=50)
        await successor.start()
        assert await successor.stop(drain=True, timeout_s=20) == 0
        assert store.pending == 0
        assert len(await ledger_rows(sessions, team)) == 120
        await assert_exactly_once(sessions, team, events)
    finally:
        await engine.dispose()
