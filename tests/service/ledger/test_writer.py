"""The ledger writer on SQLite and on the real Postgres: every charge once, rollup counted once."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from service.budgets.store import OutboxEntry
from service.db import migrate
from service.db.engine import make_engine, make_sessions
from service.db.models import DailyRollup, LedgerEntry, Team
from service.ledger.writer import LedgerWriter, TeamIdsFromDb, write_events
from tests.service.ledger.fake_outbox import FakeOutbox
from tests.service.ledger.support import (
    assert_exactly_once,
    drain,
    drain_like_the_loop,
    ledger_rows,
    make_event,
    poll,
    rollup_rows,
    teams_of,
)

Sessions = async_sessionmaker[AsyncSession]


def writer_for(store: FakeOutbox, sessions: Sessions, team: str, **kwargs: object) -> LedgerWriter:
    kwargs.setdefault("batch_size", 40)
    return LedgerWriter(store, sessions, team_ids=teams_of(team), **kwargs)  # type: ignore[arg-type]


async def test_events_are_written_once_with_their_rollup(sessions: Sessions, team: str) -> None:
    events = [make_event(team, i) for i in range(100)]
    store = FakeOutbox()
    for ev in events:
        store.append(ev)
    written: list[str] = []  # request ids, as on_written reports them
    writer = writer_for(store, sessions, team, on_written=written.extend)

    assert await drain(writer.flush_once) == 100
    assert store.pending == 0
    assert sorted(written) == sorted(e.request_id for e in events)
    rows = await assert_exactly_once(sessions, team, events)

    row = next(r for r in rows if r.request_id == events[14].request_id)
    assert (row.kind, row.trained_tokens, row.cost_nano) == ("training", 3_000_000_014, 10**12 + 2_000_006)
    assert (row.key_id, row.model_requested, row.base_model) == ("key-2", "ft:gpt-4o-mini:acme::x1", "gpt-4o-mini")
    # Events start over five UTC days; each day has its own rollup rows.
    assert len({key[0] for key in await rollup_rows(sessions, team)}) == 3


async def test_rollup_day_is_the_utc_day_of_started_at(sessions: Sessions, team: str) -> None:
    new_york = timezone(timedelta(hours=-5))
    late_evening = datetime(2025, 3, 1, 21, 30, tzinfo=new_york)  # 02:30 UTC on 2 March
    event = make_event(team, 1, started_at=late_evening, finished_at=late_evening, key_id=None, base_model=None)

    async with sessions() as s, s.begin():
        assert await write_events(s, [event]) == [event.request_id]

    rollup = await rollup_rows(sessions, team)
    assert list(rollup) == [(datetime(2025, 3, 2).date(), "", "gpt-4o-mini", "", "inference")]
    (row,) = await ledger_rows(sessions, team)
    stored = row.started_at if row.started_at.tzinfo else row.started_at.replace(tzinfo=timezone.utc)
    assert stored == late_evening


async def test_redelivered_events_change_nothing(sessions: Sessions, team: str) -> None:
    events = [make_event(team, i) for i in range(30)]
    store = FakeOutbox()
    for ev in events:
        store.append(ev)
    written: list[str] = []  # request ids, as on_written reports them
    writer = writer_for(store, sessions, team, on_written=written.extend)
    await drain(writer.flush_once)
    before = await rollup_rows(sessions, team)

    # The same charges arrive again under new entry ids, twice in one batch for some.
    for ev in events + events[:10]:
        store.append(ev)
    assert await drain(writer.flush_once) == 40

    assert store.pending == 0  # acked even though nothing was inserted
    assert len(written) == 30
    await assert_exactly_once(sessions, team, events)
    assert await rollup_rows(sessions, team) == before


async def test_two_writers_racing_on_the_same_events(db_url: str, sessions: Sessions, team: str) -> None:
    events = [make_event(team, i) for i in range(300)]
    stores = (FakeOutbox(), FakeOutbox())
    for ev in events:
        stores[0].append(ev)
    for ev in reversed(events):  # the other replica meets them in the opposite order
        stores[1].append(ev)
    other_engine = make_engine(db_url)  # a second replica has its own connections
    try:
        writers = (
            writer_for(stores[0], sessions, team, batch_size=25),
            writer_for(stores[1], make_sessions(other_engine), team, batch_size=25),
        )
        handled = await asyncio.gather(*(drain_like_the_loop(w.flush_once) for w in writers))
    finally:
        await other_engine.dispose()

    assert handled == [300, 300]
    assert stores[0].pending == stores[1].pending == 0
    await assert_exactly_once(sessions, team, events)


async def test_crash_between_write_and_ack_is_redelivered_once(sessions: Sessions, team: str) -> None:
    events = [make_event(team, i) for i in range(50)]
    store = FakeOutbox(redeliver_after_s=0.0)
    entries = [store.append(ev) for ev in events]

    crashed = writer_for(store, sessions, team, batch_size=50)
    store.fail_acks = 1  # committed, then the process died before the ack reached the store
    with pytest.raises(ConnectionError):
        await crashed.flush_once()
    await assert_exactly_once(sessions, team, events)
    assert store.pending == 50
    assert all(store.deliveries(e.entry_id) == 1 for e in entries)

    # Another replica picks the abandoned entries up.
    survivor = writer_for(store, sessions, team, batch_size=50)
    assert await drain(survivor.flush_once) == 50
    assert store.pending == 0
    await assert_exactly_once(sessions, team, events)


async def test_failed_ack_is_retried_by_the_same_writer(sessions: Sessions, team: str) -> None:
    events = [make_event(team, i) for i in range(10)]
    store = FakeOutbox()  # no redelivery: the writer itself must keep and retry what it read
    for ev in events:
        store.append(ev)
    writer = writer_for(store, sessions, team)
    store.fail_acks = 1
    with pytest.raises(ConnectionError):
        await writer.flush_once()
    assert writer.pending_estimate == 10

    assert await writer.flush_once() == 10
    assert store.pending == 0 and writer.pending_estimate == 0
    await assert_exactly_once(sessions, team, events)


async def test_ten_thousand_events_in_batches(db_url: str, sessions: Sessions, team: str) -> None:
    events = [make_event(team, i) for i in range(10_000)]
    store = FakeOutbox()
    for ev in events:
        store.append(ev)
    writer = writer_for(store, sessions, team, batch_size=500)

    began = time.perf_counter()
    assert await drain(writer.flush_once) == 10_000
    elapsed = time.perf_counter() - began

    rate = 10_000 / elapsed
    print(f"\nledger writer on {db_url.split(':')[0]}: 10000 rows in {elapsed:.2f} s = {rate:,.0f} rows/s")
    assert store.pending == 0
    await assert_exactly_once(sessions, team, events)
    assert elapsed < 30, f"10,000 rows took {elapsed:.1f} s"


async def test_write_direct_is_idempotent_and_submit_direct_is_written_by_the_loop(
    sessions: Sessions, team: str
) -> None:
    written: list[str] = []  # request ids, as on_written reports them
    writer = writer_for(FakeOutbox(), sessions, team, on_written=written.extend, flush_interval_s=0.01)
    first = [make_event(team, i) for i in range(5)]
    assert sorted(await writer.write_direct(first)) == sorted(e.request_id for e in first)
    assert await writer.write_direct(first) == []

    await writer.start()
    queued = [make_event(team, i) for i in range(3, 12)]  # three of them already written
    for ev in queued:
        writer.submit_direct(ev)

    async def all_written() -> bool:
        return len(await ledger_rows(sessions, team)) == 12 and writer.pending_estimate == 0

    await poll(all_written)
    assert await writer.stop() == 0
    assert len(written) == 12
    await assert_exactly_once(sessions, team, first + queued)


async def test_stop_with_drain_writes_what_is_pending(sessions: Sessions, team: str) -> None:
    store = FakeOutbox()
    writer = writer_for(store, sessions, team, batch_size=20, flush_interval_s=3600)
    await writer.start()
    await poll(lambda: store.reads >= 1)  # the loop has read once and is asleep
    events = [make_event(team, i) for i in range(70)]
    for ev in events:
        store.append(ev)

    assert await writer.stop(drain=True, timeout_s=20) == 0
    assert store.pending == 0
    await assert_exactly_once(sessions, team, events)


async def test_stop_without_drain_leaves_events_in_the_outbox(sessions: Sessions, team: str) -> None:
    store = FakeOutbox()
    writer = writer_for(store, sessions, team, flush_interval_s=3600)
    await writer.start()
    await poll(lambda: store.reads >= 1)
    for i in range(5):
        store.append(make_event(team, i))

    assert await writer.stop(drain=False) == 0
    assert store.pending == 5  # not written, and not lost: the next writer takes them
    assert await ledger_rows(sessions, team) == []


async def test_an_event_the_database_refuses_does_not_block_the_rest(sessions: Sessions, team: str) -> None:
    good = [make_event(team, i) for i in range(6)]
    bad = make_event(team, 99, status=None)  # NOT NULL violation: bad data, not an outage
    store = FakeOutbox()
    for ev in good[:3] + [bad] + good[3:]:
        store.append(ev)
    writer = writer_for(store, sessions, team)

    assert await writer.flush_once() == 7
    assert writer.rejected == 1
    assert store.pending == 1  # left unacked in the outbox for a person to repair, never dropped
    await assert_exactly_once(sessions, team, good)


async def test_a_value_too_long_for_its_column_is_refused_never_cut(
    sessions: Sessions, team: str, db_url: str
) -> None:
    long_name = "ft:gpt-4o-mini:acme:" + "x" * 300  # the column holds 256 characters
    good = [make_event(team, i) for i in range(3)]
    store = FakeOutbox()
    for ev in [*good, make_event(team, 50, model_requested=long_name)]:
        store.append(ev)
    writer = writer_for(store, sessions, team)

    assert await writer.flush_once() == 4
    stored = {r.model_requested for r in await ledger_rows(sessions, team)}
    assert not any(name.startswith("ft:gpt-4o-mini:acme:x") and name != long_name for name in stored)
    if db_url.startswith("postgresql"):  # Postgres enforces the length; SQLite keeps the whole value
        assert writer.rejected == 1 and store.pending == 1 and long_name not in stored
        await assert_exactly_once(sessions, team, good)
    else:
        assert writer.rejected == 0 and long_name in stored


async def test_an_outbox_entry_that_is_not_a_charge_is_refused_and_the_rest_written(
    sessions: Sessions, team: str
) -> None:
    """The writer hands the outbox's bytes to the database undecoded; a damaged entry fails the
    batch as a bad row would, and is isolated: left unacked, logged, never blocking the others."""
    good = [make_event(team, i) for i in range(4)]
    store = FakeOutbox()
    for ev in good[:2]:
        store.append(ev)
    damaged = OutboxEntry("999-0", team, b'{"request_id": "cut off')
    store.put(damaged)
    for ev in good[2:]:
        store.append(ev)
    writer = writer_for(store, sessions, team)

    assert await writer.flush_once() == 5
    assert writer.rejected == 1 and store.pending == 1
    await assert_exactly_once(sessions, team, good)
    # Delivered again, it is refused again; nothing else is written twice.
    store.redeliver_after_s = 0
    await writer.flush_once()
    await assert_exactly_once(sessions, team, good)


async def test_postgres_batches_of_any_size_share_one_statement(migrated_pg_url: str, team: str) -> None:
    """A batch travels as one JSON parameter: no per-size SQL, so the prepared-statement cache stays flat."""
    engine = make_engine(migrated_pg_url, pool_size=1)
    sessions = make_sessions(engine)
    seen: set[str] = set()

    from sqlalchemy import event as sa_event

    sa_event.listen(engine.sync_engine, "before_cursor_execute", lambda *a: seen.add(a[2]))
    try:
        start = 0
        for size in (1, 2, 3, 7, 40, 129, 500):
            async with sessions() as s, s.begin():
                events = [make_event(team, i) for i in range(start, start + size)]
                assert len(await write_events(s, events)) == size
            start += size
        writes = {sql for sql in seen if "INSERT INTO" in sql.upper()}
        assert len(writes) == 1  # the ledger insert with its rollup upsert, whatever the batch size
        assert len(await ledger_rows(sessions, team)) == start
    finally:
        await engine.dispose()


async def test_write_events_joins_the_callers_transaction(sessions: Sessions, team: str) -> None:
    event = make_event(team, 1, kind="training", job_id="ftjob-1")
    async with sessions() as s:
        assert await write_events(s, [event]) == [event.request_id]
        await s.rollback()
    assert await ledger_rows(sessions, team) == []
    assert await rollup_rows(sessions, team) == {}

    async with sessions() as s, s.begin():
        assert await write_events(s, [event, event]) == [event.request_id]
    async with sessions() as s, s.begin():
        assert await write_events(s, [event]) == []
    await assert_exactly_once(sessions, team, [event])


async def test_team_ids_from_the_teams_table(sessions: Sessions, team: str) -> None:
    async with sessions() as s, s.begin():
        s.add(Team(id=team, name=f"name-{team}"))
    cached = TeamIdsFromDb(sessions, ttl_s=3600)
    fresh = TeamIdsFromDb(sessions, ttl_s=0)
    assert team in await cached() and team in await fresh()

    async with sessions() as s, s.begin():
        s.add(Team(id=f"{team}-2", name=f"name-{team}-2"))
    assert f"{team}-2" not in await cached()
    assert f"{team}-2" in await fresh()

    # The default writer finds its teams on its own.
    store = FakeOutbox()
    store.append(make_event(team, 1))
    assert await LedgerWriter(store, sessions, batch_size=10).flush_once() == 1
    assert store.pending == 0


async def test_store_outage_is_retried_by_the_loop(sessions: Sessions, team: str) -> None:
    store = FakeOutbox()
    events = [make_event(team, i) for i in range(15)]
    for ev in events:
        store.append(ev)
    store.fail_reads = 3
    writer = writer_for(store, sessions, team, backoff_initial_s=0.01, backoff_max_s=0.05)
    await writer.start()
    await poll(lambda: store.pending == 0)
    await writer.stop()
    assert store.reads >= 4
    await assert_exactly_once(sessions, team, events)


async def test_counts_in_sql_match(sessions: Sessions, team: str) -> None:
    """The rollup and the ledger agree when summed by the database itself."""
    store = FakeOutbox()
    for i in range(64):
        store.append(make_event(team, i))
    await drain(writer_for(store, sessions, team).flush_once)
    async with sessions() as s:
        ledger = (
            await s.execute(
                select(func.count(), func.sum(LedgerEntry.cost_nano), func.sum(LedgerEntry.trained_tokens))
                .where(LedgerEntry.team_id == team)
            )
        ).one()
        daily = (
            await s.execute(
                select(func.sum(DailyRollup.requests), func.sum(DailyRollup.cost_nano), func.sum(DailyRollup.trained_tokens))
                .where(DailyRollup.team_id == team)
            )
        ).one()
    assert [int(v) for v in ledger] == [int(v) for v in daily]
    assert int(ledger[1]) == sum(make_event(team, i).cost_nano for i in range(64))


async def test_a_locked_sqlite_database_is_an_outage_not_bad_data(tmp_path: Path, team: str) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'locked.db'}"
    migrate.upgrade(url)
    engine = create_async_engine(url, connect_args={"timeout": 0.1})  # give up on the lock quickly
    blocker = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    try:
        sessions = make_sessions(engine)
        store = FakeOutbox()
        events = [make_event(team, i) for i in range(8)]
        for ev in events:
            store.append(ev)
        writer = writer_for(store, sessions, team)

        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(OperationalError):
            await writer.flush_once()
        assert writer.rejected == 0 and writer.pending_estimate == 8 and store.pending == 8

        blocker.execute("ROLLBACK")
        assert await writer.flush_once() == 8
        assert store.pending == 0
        await assert_exactly_once(sessions, team, events)
    finally:
        blocker.close()
        await engine.dispose()
