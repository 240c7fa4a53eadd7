"""A team's monthly statement: every model and kind with its tokens, the rates charged and the cost."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Table, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from pricing.money import format_usd, nano_per_token_to_usd_per_1k
from service.db.models import LedgerEntry, Team
from service.reports.render import write_csv
from service.reports.spend import tune_for_reports

LEDGER: Table = LedgerEntry.__table__  # type: ignore[assignment]
RATE_COLUMNS: tuple[str, ...] = ("input_rate_nano", "cached_rate_nano", "output_rate_nano", "training_rate_nano")


@dataclass(frozen=True, slots=True)
class StatementLine:
    """The charges of one model and kind at one set of rates (rates change with the catalog)."""

    kind: str
    model: str
    base_model: str
    input_rate_nano: int | None
    cached_rate_nano: int | None
    output_rate_nano: int | None
    training_rate_nano: int | None
    requests: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    trained_tokens: int
    cost_nano: int


@dataclass(frozen=True, slots=True)
class Statement:
    team_id: str
    team_name: str
    month: str  # 2026-11
    period_start: datetime
    period_end: datetime
    generated_at: datetime
    lines: tuple[StatementLine, ...]

    @property
    def total_nano(self) -> int:
        return sum(line.cost_nano for line in self.lines)

    def subtotal_nano(self, kind: str) -> int:
        return sum(line.cost_nano for line in self.lines if line.kind == kind)

    def total(self, field: str) -> int:
        return sum(getattr(line, field) for line in self.lines)


async def build_statement(session: AsyncSession, team: Team, start: datetime, end: datetime) -> Statement:
    """Group the team's ledger rows started in [start, end) by kind, model, base model and rates."""
    if session.get_bind().dialect.name == "postgresql":
        await tune_for_reports(session)
    c = LEDGER.c
    keys = [c.kind, c.model_requested, func.coalesce(c.base_model, "")] + [c[n] for n in RATE_COLUMNS]
    query = (
        select(
            *keys,
            func.count(),
            func.sum(c.prompt_tokens),
            func.sum(c.cached_tokens),
            func.sum(c.completion_tokens),
            func.sum(c.trained_tokens),
            func.sum(c.cost_nano),
        )
        .where(c.team_id == team.id, c.started_at >= start, c.started_at < end)
        # By position: the COALESCE's bound '' would otherwise differ between SELECT and GROUP BY.
        .group_by(*[literal_column(str(i + 1)) for i in range(len(keys))])
    )
    lines = [_line(r) for r in (await session.execute(query)).all()]
    lines.sort(key=lambda ln: (ln.kind, ln.model, ln.base_model, [v if v is not None else -1 for v in _rates(ln)]))
    return Statement(
        team_id=team.id,
        team_name=team.name,
        month=start.strftime("%Y-%m"),
        period_start=start,
        period_end=end,
        generated_at=datetime.now(timezone.utc),
        lines=tuple(lines),
    )


def _rates(line: StatementLine) -> tuple[int | None, ...]:
    return tuple(getattr(line, n) for n in RATE_COLUMNS)


def _line(r: Any) -> StatementLine:
    kind, model, base, in_rate, cached_rate, out_rate, train_rate, *sums = tuple(r)
    requests, prompt, cached, completion, trained, cost = (int(v or 0) for v in sums)
    return StatementLine(
        kind, model, base,
        *(int(v) if v is not None else None for v in (in_rate, cached_rate, out_rate, train_rate)),
        requests, prompt, cached, completion, trained, cost,
    )


def rate_per_1k(nano_per_token: int | None) -> str:
    """A per-token nano rate as USD per 1K tokens ('' when the charge had no such rate)."""
    return "" if nano_per_token is None else nano_per_token_to_usd_per_1k(nano_per_token)


CSV_COLUMNS: tuple[str, ...] = (
    "month", "team_id", "team_name", "kind", "model", "base_model", "requests",
    "prompt_tokens", "cached_tokens", "completion_tokens", "trained_tokens",
    "input_usd_per_1k", "cached_usd_per_1k", "output_usd_per_1k", "training_usd_per_1k",
    "cost_usd", "cost_nano",
)


def statement_csv(st: Statement) -> str:
    """One line per model, kind and rate set, then a TOTAL line (its cost is the exact sum)."""
    rows: list[list[Any]] = []
    for ln in st.lines:
        rows.append([
            st.month, st.team_id, st.team_name, ln.kind, ln.model, ln.base_model, ln.requests,
            ln.prompt_tokens, ln.cached_tokens, ln.completion_tokens, ln.trained_tokens,
            *(rate_per_1k(r) for r in _rates(ln)), format_usd(ln.cost_nano), ln.cost_nano,
        ])
    rows.append([
        st.month, st.team_id, st.team_name, "TOTAL", "", "", st.total("requests"),
        st.total("prompt_tokens"), st.total("cached_tokens"), st.total("completion_tokens"),
        st.total("trained_tokens"), "", "", "", "", format_usd(st.total_nano), st.total_nano,
    ])
    return write_csv(CSV_COLUMNS, rows)
