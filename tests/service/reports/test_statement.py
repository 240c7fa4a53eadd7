"""The monthly statement: lines per model, kind and rate set; CSV totals; escaped, printable HTML."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db.models import Team
from service.ledger.entries import write_events
from service.ledger.event import ChargeEvent
from service.reports.params import parse_month
from service.reports.statement import Statement, build_statement, statement_csv
from service.reports.statement_html import statement_html
from tests.service.reports.support import known_events, seed

Sessions = async_sessionmaker[AsyncSession]
UTC = timezone.utc


async def statement_for(sessions: Sessions, team_id: str, month: str) -> Statement:
    start, end = parse_month(month)
    async with sessions() as s:
        team = await s.get(Team, team_id)
        assert team is not None
        return await build_statement(s, team, start, end)


def charge(i: int, model: str, *, input_rate: int, output_rate: int, at: datetime, **kw: object) -> ChargeEvent:
    fields: dict[str, object] = dict(
        request_id=f"st-{i}", team_id="team-a", kind="inference", status="ok", started_at=at, finished_at=at,
        model_requested=model, base_model=model, prompt_tokens=1000 * i, completion_tokens=100 * i,
        input_rate_nano=input_rate, output_rate_nano=output_rate, cached_rate_nano=input_rate // 2,
        cost_nano=1000 * i * input_rate + 100 * i * output_rate, key_id="key-a1",
    )
    fields.update(kw)
    return ChargeEvent(**fields)  # type: ignore[arg-type]


async def test_lines_per_model_kind_and_rates_sum_to_the_ledger(clean: Sessions) -> None:
    events = known_events()
    nov = datetime(2026, 11, 20, tzinfo=UTC)
    repriced = [
        charge(1, "gpt-4o", input_rate=2_500, output_rate=10_000, at=nov),
        charge(2, "gpt-4o", input_rate=2_000, output_rate=8_000, at=nov + timedelta(hours=1)),
        charge(3, "gpt-4o", input_rate=2_000, output_rate=8_000, at=nov + timedelta(hours=2)),
    ]
    await seed(clean, events)
    async with clean() as s, s.begin():
        await write_events(s, repriced)
    st = await statement_for(clean, "team-a", "2026-11")
    in_month = [e for e in [*events, *repriced] if e.team_id == "team-a" and e.started_at.month == 11 and e.started_at.year == 2026]
    assert st.total_nano == sum(e.cost_nano for e in in_month)
    assert sum(ln.requests for ln in st.lines) == len(in_month)
    assert {(ln.kind, ln.model) for ln in st.lines} == {(e.kind, e.model_requested) for e in in_month}
    # The repriced gpt-4o charges are a line of their own at the rates they were charged.
    cheap = [ln for ln in st.lines if ln.model == "gpt-4o" and ln.input_rate_nano == 2_000]
    assert len(cheap) == 1
    assert (cheap[0].requests, cheap[0].prompt_tokens, cheap[0].completion_tokens) == (2, 5000, 500)
    assert cheap[0].cost_nano == repriced[1].cost_nano + repriced[2].cost_nano
    training = [ln for ln in st.lines if ln.kind == "training"]
    assert training and all(ln.training_rate_nano == 25_000 and ln.input_rate_nano is None for ln in training)
    assert st.subtotal_nano("training") + st.subtotal_nano("inference") == st.total_nano


async def test_csv_has_rates_per_1k_and_an_exact_total(clean: Sessions) -> None:
    await seed(clean, known_events())
    async with clean() as s, s.begin():
        await write_events(s, [charge(1, "gpt-4o", input_rate=2_500, output_rate=10_000, at=datetime(2026, 11, 20, tzinfo=UTC))])
    st = await statement_for(clean, "team-a", "2026-11")
    rows = list(csv.DictReader(io.StringIO(statement_csv(st))))
    lines, total = rows[:-1], rows[-1]
    assert total["kind"] == "TOTAL" and int(total["cost_nano"]) == st.total_nano
    assert sum(Decimal(r["cost_usd"]) for r in lines) == Decimal(total["cost_usd"])
    assert sum(int(r["requests"]) for r in lines) == int(total["requests"])
    assert all(r["month"] == "2026-11" and r["team_name"] == "team-a name" for r in rows)
    gpt4o = [r for r in lines if r["model"] == "gpt-4o" and r["kind"] == "inference"]
    # 2,500 nano-USD per token is $0.0025 per 1K tokens ($2.50 per 1M), as the catalog publishes it.
    assert {(r["input_usd_per_1k"], r["output_usd_per_1k"], r["cached_usd_per_1k"]) for r in gpt4o} == {("0.0025", "0.01", "0.00125")}
    assert {r["training_usd_per_1k"] for r in lines if r["kind"] == "training"} == {"0.025"}


async def test_html_escapes_ledger_values_and_prints_well(clean: Sessions) -> None:
    async with clean() as s, s.begin():
        s.add(Team(id="team-x", name="Ops & <Finance>"))
        await s.flush()
        await write_events(s, [charge(
            7, "<script>alert(1)</script>", input_rate=150, output_rate=600,
            at=datetime(2026, 11, 2, tzinfo=UTC), team_id="team-x", key_id=None,
        )])
    st = await statement_for(clean, "team-x", "2026-11")
    html = statement_html(st)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Ops &amp; &lt;Finance&gt;" in html
    assert "@page" in html and "@media print" in html and "<thead>" in html
    assert st.total_nano == 7000 * 150 + 700 * 600
    assert "USD 0.001470000" in html  # the total with all nine places
    empty = statement_html(await statement_for(clean, "team-x", "2026-10"))
    assert "No charges in this month." in empty and "USD 0.000000000" in empty
