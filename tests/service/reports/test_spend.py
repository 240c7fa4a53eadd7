"""Spend reports against known ledger rows: every grouping and bucket, both paths, exact totals."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from decimal import Decimal
from itertools import combinations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from pricing.money import format_usd
from service.errors import InvalidRequest
from service.ledger.event import ChargeEvent
from service.ledger.queries import total_cost
from service.reports.params import DIMENSIONS, SpendQuery, spend_query
from service.reports.render import spend_csv, spend_json
from service.reports.spend import SpendReport, spend_report
from tests.service.reports.support import expected, known_events, seed

Sessions = async_sessionmaker[AsyncSession]
UTC = timezone.utc
SUMS = ("requests", "prompt_tokens", "cached_tokens", "completion_tokens", "trained_tokens", "cost_nano")


def as_dict(report: SpendReport) -> dict[tuple, dict[str, int]]:
    return {
        (row.period_start, *(row.dims[d] for d in report.query.group_by)): {n: getattr(row, n) for n in SUMS}
        for row in report.rows
    }


async def run(sessions: Sessions, query: SpendQuery) -> SpendReport:
    async with sessions() as s:
        return await spend_report(s, query)


async def test_every_grouping_and_bucket_matches_the_ledger_on_both_paths(clean: Sessions) -> None:
    events = known_events()
    await seed(clean, events)
    pairs = [("team", "model"), ("key", "kind"), ("model", "base_model"), ("team", "key")]
    groupings = [(), *combinations(DIMENSIONS, 1), *pairs, DIMENSIONS]
    checked = 0
    for group_by in groupings:
        for granularity in ("day", "week", "month", "none"):
            q = SpendQuery(group_by=group_by, granularity=granularity)
            rollup = await run(clean, SpendQuery(group_by=group_by, granularity=granularity, source="rollup"))
            ledger = await run(clean, SpendQuery(group_by=group_by, granularity=granularity, source="ledger"))
            assert (rollup.source, ledger.source) == ("rollup", "ledger")
            want = expected(events, q)
            assert as_dict(rollup) == want, (group_by, granularity)
            assert as_dict(ledger) == want, (group_by, granularity)
            # Totals are the integer sums of the rows, and of the whole ledger.
            for report in (rollup, ledger):
                for name in SUMS:
                    assert getattr(report.totals, name) == sum(getattr(r, name) for r in report.rows)
                assert report.totals.cost_nano == sum(e.cost_nano for e in events)
            checked += 1
    assert checked == len(groupings) * 4
    async with clean() as s:
        assert await total_cost(s) == sum(e.cost_nano for e in events)


async def test_a_range_and_filters_answer_from_the_rollup_when_it_can(clean: Sessions) -> None:
    events = known_events()
    await seed(clean, events)
    q = spend_query(group_by="team,model", granularity="month", since="2026-11-01", until="2026-12-01")
    assert q.uses_rollup
    report = await run(clean, q)
    assert report.source == "rollup"
    assert as_dict(report) == expected(events, q)
    # Only November: the first moment (30 Oct) and the last (1 Dec) are outside.
    assert {row.period_start for row in report.rows} == {"2026-11-01"}
    assert report.totals.requests == len([e for e in events if e.started_at.month == 11])

    filtered = spend_query(group_by="key", granularity="week", team="team-a", kind="inference", model="gpt-4o-mini")
    report = await run(clean, filtered)
    assert report.source == "rollup"
    assert as_dict(report) == expected(events, filtered)
    assert {row.period_start for row in report.rows} == {"2026-10-26", "2026-11-02", "2026-11-09", "2026-11-30"}


async def test_sub_day_bounds_hours_and_status_answer_from_the_ledger(clean: Sessions) -> None:
    events = known_events()
    await seed(clean, events)
    shapes = [
        spend_query(group_by="team", granularity="day", since="2026-11-01T12:00:00Z", until="2026-11-30T23:59:59.999999"),
        spend_query(group_by="model", granularity="hour", since="2026-11-01", until="2026-11-02"),
        spend_query(group_by="kind", granularity="month", status="upstream_error"),
    ]
    for q in shapes:
        assert not q.rollup_answers
        report = await run(clean, q)
        assert report.source == "ledger"
        assert as_dict(report) == expected(events, q)
        assert report.rows
    hourly = await run(clean, shapes[1])
    assert {row.period_start for row in hourly.rows} == {"2026-11-01T00:00:00Z", "2026-11-01T13:00:00Z"}
    # The half-open end leaves out the charge at 23:59:59.999999 exactly.
    day_range = await run(clean, shapes[0])
    assert "2026-11-30" not in {row.period_start for row in day_range.rows}
    with pytest.raises(InvalidRequest):
        spend_query(granularity="hour", source="rollup")


async def test_json_carries_exact_usd_strings_and_names(clean: Sessions) -> None:
    events = known_events()
    await seed(clean, events)
    body = spend_json(await run(clean, spend_query(group_by="team,key", granularity="month")))
    assert body["source"] == "rollup" and body["currency"] == "USD"
    for row in body["rows"]:
        assert row["cost_usd"] == format_usd(row["cost_nano"])
        assert row["team_name"] == f"{row['team_id']} name"
        assert row["key_name"] == (f"{row['key_id']} label" if row["key_id"] else None)
    assert sum(Decimal(r["cost_usd"]) for r in body["rows"]) == Decimal(body["totals"]["cost_usd"])
    assert body["totals"]["cost_nano"] == sum(e.cost_nano for e in events)
    assert body["totals"]["tokens"] == sum(e.prompt_tokens + e.completion_tokens + e.trained_tokens for e in events)


async def test_csv_rows_add_up_to_the_total_line_and_never_run_as_formulas(clean: Sessions) -> None:
    events = known_events()
    hostile = ChargeEvent(
        request_id="r-hostile", team_id="team-a", kind="inference", status="ok",
        started_at=datetime(2026, 11, 3, tzinfo=UTC), finished_at=datetime(2026, 11, 3, tzinfo=UTC),
        cost_nano=1, model_requested='=HYPERLINK("http://x","y")', prompt_tokens=1,
    )
    await seed(clean, [*events, hostile])
    text = spend_csv(await run(clean, spend_query(group_by="team,model", granularity="month")))
    lines = list(csv.reader(io.StringIO(text)))
    header, rows, total = lines[0], lines[1:-1], lines[-1]
    assert header == [
        "period_start", "team_id", "team_name", "model", "requests", "prompt_tokens", "cached_tokens",
        "completion_tokens", "trained_tokens", "tokens", "cost_usd", "cost_nano",
    ]
    assert total[0] == "TOTAL" and total[1:4] == ["", "", ""]
    col = header.index
    assert sum(Decimal(r[col("cost_usd")]) for r in rows) == Decimal(total[col("cost_usd")])
    assert sum(int(r[col("cost_nano")]) for r in rows) == int(total[col("cost_nano")]) == sum(e.cost_nano for e in events) + 1
    assert sum(int(r[col("requests")]) for r in rows) == int(total[col("requests")]) == len(events) + 1
    assert all(len(r[col("cost_usd")].split(".")[1]) == 9 for r in rows)
    assert "'=HYPERLINK(\"http://x\",\"y\")" in [r[col("model")] for r in rows]


async def test_an_ungrouped_report_is_one_line_and_empty_ranges_are_zero(clean: Sessions) -> None:
    events = known_events()
    await seed(clean, events)
    text = spend_csv(await run(clean, spend_query(granularity="none")))
    lines = list(csv.reader(io.StringIO(text)))
    assert len(lines) == 2 and int(lines[1][-1]) == sum(e.cost_nano for e in events)
    for source in ("rollup", "ledger"):
        empty = await run(clean, spend_query(granularity="none", since="2030-01-01", source=source))
        assert [(r.requests, r.cost_nano) for r in empty.rows] == [(0, 0)]
        grouped = await run(clean, spend_query(group_by="team", since="2030-01-01", source=source))
        assert grouped.rows == [] and grouped.totals.cost_nano == 0


def test_bad_parameters_are_refused_with_the_parameter_named() -> None:
    for kwargs, param in (
        ({"group_by": "team,colour"}, "group_by"),
        ({"group_by": "team,team"}, "group_by"),
        ({"granularity": "fortnight"}, "granularity"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-11-02", "until": "2026-11-01"}, "until"),
        ({"kind": "vision"}, "kind"),
        ({"source": "cache"}, "source"),
    ):
        with pytest.raises(InvalidRequest) as info:
            spend_query(**kwargs)
        assert info.value.param == param
    q = spend_query(since="2026-11", until="2026-11-05T10:00:00+02:00")
    assert q.since == datetime(2026, 11, 1, tzinfo=UTC)
    assert q.until == datetime(2026, 11, 5, 8, tzinfo=UTC)
