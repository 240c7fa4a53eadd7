"""Spend and tokens grouped by team, key, model, base model, kind and time bucket.

Answered from the ledger_daily rollup when its per-day sums are exactly what the report needs,
from the ledger otherwise. Both give the same rows: a missing key or base model is the empty
string in the rollup, so the ledger's NULLs are read as '' too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import BigInteger, Date, DateTime, Table, cast, func, literal_column, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from service.db.models import ApiKey, DailyRollup, LedgerEntry, Team
from service.reports.params import SpendQuery

LEDGER: Table = LedgerEntry.__table__  # type: ignore[assignment]
DAILY: Table = DailyRollup.__table__  # type: ignore[assignment]

REPORT_WORK_MEM = "64MB"
SUMS: tuple[str, ...] = ("requests", "prompt_tokens", "cached_tokens", "completion_tokens", "trained_tokens", "cost_nano")


@dataclass(slots=True)
class SpendRow:
    """One group: its bucket start ('' when not bucketed), dimension values and integer sums."""

    period_start: str
    dims: dict[str, str]
    requests: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    trained_tokens: int
    cost_nano: int

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens + self.trained_tokens


@dataclass(slots=True)
class Totals:
    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    trained_tokens: int = 0
    cost_nano: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens + self.trained_tokens

    @classmethod
    def of(cls, rows: list[SpendRow]) -> Totals:
        """Integer sums of the rows, so the totals are exactly what the rows add up to."""
        return cls(*(sum(getattr(row, name) for row in rows) for name in SUMS))


@dataclass(slots=True)
class SpendReport:
    query: SpendQuery
    source: str  # rollup | ledger
    rows: list[SpendRow]
    totals: Totals
    team_names: dict[str, str] = field(default_factory=dict)
    key_names: dict[str, str] = field(default_factory=dict)


async def spend_report(session: AsyncSession, query: SpendQuery) -> SpendReport:
    """Run the report; totals are the integer sums of the rows, so they add up exactly."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        await tune_for_reports(session)
    statement = _rollup_select(query, dialect) if query.uses_rollup else _ledger_select(query, dialect)
    rows = _rows(query, (await session.execute(statement)).all())
    report = SpendReport(query, "rollup" if query.uses_rollup else "ledger", rows, Totals.of(rows))
    await _names(session, report)
    return report


async def tune_for_reports(session: AsyncSession) -> None:
    """Session settings for one report's transaction on Postgres (SET LOCAL: gone at its end).

    Enough memory to hash-aggregate a large rollup instead of sorting it on disk, and no JIT,
    whose compile time costs more than it saves on queries this short.
    """
    await session.execute(text(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'"))
    await session.execute(text("SET LOCAL jit = off"))


def _rollup_select(query: SpendQuery, dialect: str) -> Any:
    c = DAILY.c
    dims: dict[str, ColumnElement[Any]] = {
        "team": c.team_id, "key": c.key_id, "model": c.model, "base_model": c.base_model, "kind": c.kind,
    }
    sums = [_sum(c[name]).label(name) for name in SUMS]
    bucket = _day_bucket(c.day, query.granularity, dialect)
    where = []
    if query.since is not None:
        where.append(c.day >= query.since.astimezone(timezone.utc).date())
    if query.until is not None:
        where.append(c.day < query.until.astimezone(timezone.utc).date())
    return _grouped(query, dims, bucket, sums, where)


def _ledger_select(query: SpendQuery, dialect: str) -> Any:
    c = LEDGER.c
    dims: dict[str, ColumnElement[Any]] = {
        "team": c.team_id,
        "key": func.coalesce(c.key_id, ""),
        "model": c.model_requested,
        "base_model": func.coalesce(c.base_model, ""),
        "kind": c.kind,
    }
    sums = [func.count().label("requests")] + [_sum(c[name]).label(name) for name in SUMS[1:]]
    bucket = _time_bucket(c.started_at, query.granularity, dialect)
    where = []
    if query.since is not None:
        where.append(c.started_at >= query.since.astimezone(timezone.utc))
    if query.until is not None:
        where.append(c.started_at < query.until.astimezone(timezone.utc))
    if query.status is not None:
        where.append(c.status == query.status)
    if query.endpoint is not None:
        where.append(c.endpoint == query.endpoint)
    return _grouped(query, dims, bucket, sums, where)


def _sum(column: Any) -> ColumnElement[Any]:
    # Postgres sums BIGINT as NUMERIC; back to BIGINT (exact below 2**63 nUSD, $9.2e9) the
    # driver hands over ints rather than Decimals, several times faster for big reports.
    return cast(func.sum(column), BigInteger)


def _grouped(
    query: SpendQuery,
    dims: dict[str, ColumnElement[Any]],
    bucket: ColumnElement[Any] | None,
    sums: list[Any],
    where: list[Any],
) -> Any:
    filters = {"team": query.team_id, "key": query.key_id, "model": query.model,
               "base_model": query.base_model, "kind": query.kind}
    for dim, value in filters.items():
        if value is not None:
            where.append(dims[dim] == value)
    keys = ([bucket.label("period_start")] if bucket is not None else []) + [
        dims[d].label(d) for d in query.group_by
    ]
    statement = select(*keys, *sums).where(*where)
    if keys:
        # GROUP BY 1, 2, ...: each expression once, so its bound parameters cannot differ.
        positions = [literal_column(str(i + 1)) for i in range(len(keys))]
        statement = statement.group_by(*positions).order_by(*positions)
    return statement


def _day_bucket(day: Any, granularity: str, dialect: str) -> ColumnElement[Any] | None:
    """The first day of the bucket a rollup day falls in."""
    if granularity == "none":
        return None
    if granularity == "day":
        return day
    if dialect == "postgresql":
        # Through timestamp, not timestamptz: no time-zone arithmetic per row.
        return cast(func.date_trunc(granularity, cast(day, DateTime(timezone=False))), Date)
    if granularity == "week":  # SQLite: back six days, then forward to Monday = this ISO week's Monday
        return func.date(day, "-6 days", "weekday 1")
    return func.date(day, "start of month")


def _time_bucket(ts: Any, granularity: str, dialect: str) -> ColumnElement[Any] | None:
    """The UTC start of the bucket a ledger timestamp falls in (a date, or a time for hours)."""
    if granularity == "none":
        return None
    if dialect == "postgresql":
        utc = func.timezone("UTC", ts)
        truncated = func.date_trunc(granularity, utc)
        return truncated if granularity == "hour" else cast(truncated, Date)
    # SQLite keeps UTC text (the ledger stores every timestamp in UTC).
    if granularity == "hour":
        return func.strftime("%Y-%m-%d %H:00:00", ts)
    if granularity == "day":
        return func.date(ts)
    if granularity == "week":
        return func.date(ts, "-6 days", "weekday 1")
    return func.date(ts, "start of month")


def _rows(query: SpendQuery, result: Sequence[Any]) -> list[SpendRow]:
    """SpendRows from (bucket?, *dimensions, *sums) tuples; each bucket's text is made once."""
    bucketed = query.granularity != "none"
    group_by = query.group_by
    first = 1 if bucketed else 0
    last = first + len(group_by)
    periods: dict[Any, str] = {}
    rows = []
    for r in result:
        period = ""
        if bucketed:
            period = periods.get(r[0]) or periods.setdefault(r[0], _period_text(r[0], query.granularity))
        # Sums are BIGINT (ints from either driver); None only when no row matched at all.
        sums = [v or 0 for v in r[last:]]
        rows.append(SpendRow(period, dict(zip(group_by, r[first:last])), *sums))
    return rows


def _period_text(value: Any, granularity: str) -> str:
    if granularity == "hour":
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)[:10]


async def _names(session: AsyncSession, report: SpendReport) -> None:
    """Team and key names for the ids in the report, for people reading it."""
    dims = report.query.group_by
    if "team" in dims:
        ids = {row.dims["team"] for row in report.rows}
        if ids:
            result = await session.execute(select(Team.id, Team.name).where(Team.id.in_(ids)))  # type: ignore[attr-defined]
            report.team_names = {tid: name for tid, name in result.all()}
    if "key" in dims:
        ids = {row.dims["key"] for row in report.rows} - {""}
        if ids:
            result = await session.execute(select(ApiKey.id, ApiKey.name).where(ApiKey.id.in_(ids)))  # type: ignore[attr-defined]
            report.key_names = {kid: name for kid, name in result.all()}
