"""Idempotent ledger writes: insert charges once per request id and roll exactly those into ledger_daily."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import String, Table, TypeDecorator, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from service.budgets.store import OutboxPosition
from service.db.models import DailyRollup, LedgerEntry
from service.ledger.event import ChargeEvent

LEDGER: Table = LedgerEntry.__table__  # type: ignore[assignment]
DAILY: Table = DailyRollup.__table__  # type: ignore[assignment]

ROLLUP_KEY = ("day", "team_id", "key_id", "model", "base_model", "kind")
ROLLUP_SUMS = (
    "requests",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "trained_tokens",
    "cost_nano",
)

RollupKey = tuple[date, str, str, str, str, str]

# Every field of a charge is a ledger column of the same name.
EVENT_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ChargeEvent))
# Where the charge sat in the outbox: known to the writer, not part of the charge itself.
POSITION_FIELDS = ("outbox_ms", "outbox_seq")


def as_utc(ts: datetime) -> datetime:
    """The same instant in UTC; naive timestamps are taken to be UTC already."""
    # SQLite keeps no offset, so every stored timestamp is UTC or comparisons would be wrong.
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


def ledger_row(event: ChargeEvent, recorded_at: datetime, position: OutboxPosition | None = None) -> dict[str, Any]:
    """The ledger row (column -> value) an event becomes."""
    # Shallow on purpose: dataclasses.asdict deep-copies every value and was most of a batch's time.
    row = {name: getattr(event, name) for name in EVENT_FIELDS}
    row["started_at"] = as_utc(event.started_at)
    row["finished_at"] = as_utc(event.finished_at)
    row["recorded_at"] = recorded_at
    row["outbox_ms"] = position.ms if position is not None else None
    row["outbox_seq"] = position.seq if position is not None else None
    return row


def rollup_key(event: ChargeEvent) -> RollupKey:
    """The ledger_daily row an event is summed into: its UTC day, team, key, model, base model, kind."""
    return (
        as_utc(event.started_at).date(),
        event.team_id,
        event.key_id or "",
        event.model_requested,
        event.base_model or "",
        event.kind,
    )


def rollup_rows(events: Sequence[ChargeEvent]) -> list[dict[str, Any]]:
    """The per-day sums of these events, one row per rollup key, in key order."""
    sums: dict[RollupKey, list[int]] = {}
    for ev in events:
        acc = sums.setdefault(rollup_key(ev), [0] * len(ROLLUP_SUMS))
        acc[0] += 1
        acc[1] += ev.prompt_tokens
        acc[2] += ev.cached_tokens
        acc[3] += ev.completion_tokens
        acc[4] += ev.trained_tokens
        acc[5] += ev.cost_nano
    return [
        dict(zip(ROLLUP_KEY, key, strict=True)) | dict(zip(ROLLUP_SUMS, sums[key], strict=True))
        for key in sorted(sums)
    ]


def _insert(dialect: str, table: Table) -> Any:
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"the ledger supports PostgreSQL and SQLite, not {dialect!r}")


async def write_events(
    session: AsyncSession,
    events: Sequence[ChargeEvent],
    positions: Sequence[OutboxPosition | None] | None = None,
) -> list[str]:
    """Insert the events the ledger lacks and add exactly those to ledger_daily; returns their request ids.

    Runs in the caller's transaction and does not commit, so a caller can add its own rows atomically.
    positions[i], when given, is where events[i] sits in its team's outbox.
    """
    return await write_encoded(session, [ev.to_bytes() for ev in events], positions)


async def write_encoded(
    session: AsyncSession,
    docs: Sequence[bytes],
    positions: Sequence[OutboxPosition | None] | None = None,
) -> list[str]:
    """write_events for charges as ChargeEvent.to_bytes encoded them (an outbox's entries).

    On Postgres the bytes go to the database as they are, one JSON array for the whole batch
    (each outbox position spliced in as two more members); a document that is not a charge
    makes the statement fail, as a bad row would. If the same request id comes twice, its
    first document is the one written.
    """
    if not docs:
        return []
    if positions is not None and len(positions) != len(docs):
        raise ValueError("one outbox position (or None) per document")
    recorded_at = datetime.now(timezone.utc)
    if session.get_bind().dialect.name == "postgresql":
        if positions is not None:
            docs = [_with_position(doc, pos) for doc, pos in zip(docs, positions, strict=True)]
        batch = b"[" + b",".join(docs) + b"]"
        result = await session.execute(_PG_WRITE, {"events": batch.decode(), "recorded_at": recorded_at})
        return list(result.scalars())
    events = [ChargeEvent.from_bytes(doc) for doc in docs]
    return await _write_rows(session, events, positions or [None] * len(events), recorded_at)


def _with_position(doc: bytes, position: OutboxPosition | None) -> bytes:
    """The charge's JSON object with outbox_ms and outbox_seq added (unchanged without a position)."""
    if position is None or not doc.endswith(b"}"):  # not an object: the statement refuses it anyway
        return doc
    return b'%s,"outbox_ms":%d,"outbox_seq":%d}' % (doc[:-1], position.ms, position.seq)


async def _write_rows(
    session: AsyncSession,
    events: Sequence[ChargeEvent],
    positions: Sequence[OutboxPosition | None],
    recorded_at: datetime,
) -> list[str]:
    """The SQLite path: SQLAlchemy inserts in power-of-two chunks, then the rollup upsert."""
    by_id: dict[str, tuple[ChargeEvent, OutboxPosition | None]] = {}
    for ev, pos in zip(events, positions, strict=True):
        by_id.setdefault(ev.request_id, (ev, pos))
    dialect = session.get_bind().dialect.name
    # Sorted by request id (and the rollup by key) so concurrent writers take their row locks
    # in one order and cannot deadlock one another.
    rows = [ledger_row(by_id[rid][0], recorded_at, by_id[rid][1]) for rid in sorted(by_id)]
    insert_ledger = (
        _insert(dialect, LEDGER)
        .on_conflict_do_nothing(index_elements=[LEDGER.c.request_id])
        .returning(LEDGER.c.request_id)
    )
    inserted: list[str] = []
    for chunk in _fixed_size_chunks(rows):
        inserted.extend((await session.execute(insert_ledger, chunk)).scalars())
    if not inserted:
        return []

    # Only rows this statement inserted reach the rollup: a redelivered event changes nothing.
    insert_daily = _insert(dialect, DAILY)
    upsert_daily = insert_daily.on_conflict_do_update(
        index_elements=[DAILY.c[name] for name in ROLLUP_KEY],
        set_={name: DAILY.c[name] + insert_daily.excluded[name] for name in ROLLUP_SUMS},
    )
    for chunk in _fixed_size_chunks(rollup_rows([by_id[rid][0] for rid in inserted])):
        await session.execute(upsert_daily, chunk)
    return inserted


def _pg_types(table: Table, names: Sequence[str]) -> list[str]:
    """Each column's Postgres type, strings as TEXT: the INSERT's own assignment to a VARCHAR(n)
    column then refuses a value too long for it (an explicit cast would silently cut it)."""
    dialect = postgresql.dialect()
    out = []
    for name in names:
        column_type = table.c[name].type
        if isinstance(column_type, TypeDecorator):
            column_type = column_type.load_dialect_impl(dialect)
        out.append("TEXT" if isinstance(column_type, String) else str(column_type.compile(dialect=dialect)))
    return out


def _postgres_write_sql() -> str:
    """One statement: insert the batch (a JSON array of events), then sum exactly the rows it
    inserted into ledger_daily. Any batch size is the same prepared statement; nothing is
    rendered or encoded per row on the client."""
    columns = EVENT_FIELDS + POSITION_FIELDS
    fields = ", ".join(f"{n} {t}" for n, t in zip(columns, _pg_types(LEDGER, columns), strict=True))
    sums = ", ".join(f"sum({n})" for n in ROLLUP_SUMS[1:])
    updates = ", ".join(f"{n} = {DAILY.name}.{n} + excluded.{n}" for n in ROLLUP_SUMS)
    return (
        f"WITH ins AS (INSERT INTO {LEDGER.name} ({', '.join(columns)}, recorded_at) "
        f"SELECT {', '.join(columns)}, CAST(:recorded_at AS TIMESTAMP WITH TIME ZONE) "
        f"FROM ROWS FROM (json_to_recordset(CAST(:events AS JSON)) AS ({fields})) "
        f"WITH ORDINALITY AS e({', '.join(columns)}, ord) ORDER BY request_id, ord "
        "ON CONFLICT (request_id) DO NOTHING RETURNING *), "
        f"daily AS (INSERT INTO {DAILY.name} ({', '.join(ROLLUP_KEY + ROLLUP_SUMS)}) "
        "SELECT (started_at AT TIME ZONE 'UTC')::date, team_id, coalesce(key_id, ''), model_requested, "
        f"coalesce(base_model, ''), kind, count(*), {sums} FROM ins GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6 "
        f"ON CONFLICT ({', '.join(ROLLUP_KEY)}) DO UPDATE SET {updates}) "
        "SELECT request_id FROM ins"
    )


_PG_WRITE = text(_postgres_write_sql())


def _fixed_size_chunks(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split into power-of-two chunks (largest first), for the SQLite path.

    Every distinct row count renders a distinct multi-row INSERT that the driver caches per
    connection; with at most ~10 sizes that cache stays small and a long-running writer's memory
    stays flat. (Postgres takes a whole batch as one parameter: see _write_postgres.)
    """
    chunks, start = [], 0
    while start < len(rows):
        size = 1 << ((len(rows) - start).bit_length() - 1)
        chunks.append(rows[start : start + size])
        start += size
    return chunks
