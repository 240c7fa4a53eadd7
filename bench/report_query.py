"""Benchmark: finance reports over a 1,000,000-row ledger on real PostgreSQL.

Creates a fresh database, migrates it, fills the ledger in one INSERT ... SELECT over
generate_series and ledger_daily in one INSERT ... SELECT ... GROUP BY (what the ledger
writer would have summed), then times the main report shapes through the service's own code.

    .venv/bin/python bench/report_query.py [--rows 1000000] [--repeat 5] [--keep]
        [--database NAME] [--admin-dsn postgresql://postgres@127.0.0.1:5432/postgres]

--keep leaves the database in place; --database NAME times the reports on such a kept one.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.db import migrate  # noqa: E402
from service.db.engine import make_engine, make_sessions  # noqa: E402
from service.db.models import Team  # noqa: E402
from service.reports.params import SpendQuery, spend_query  # noqa: E402
from service.reports.render import spend_csv  # noqa: E402
from service.reports.spend import spend_report  # noqa: E402
from service.reports.statement import build_statement  # noqa: E402

TEAMS = 20
KEYS_PER_TEAM = 10
DAYS = 90
END = datetime(2026, 12, 1, tzinfo=timezone.utc)
START = END - timedelta(days=DAYS)
# (requested model, base model, input, cached, output nano-USD per token)
MODELS = [
    ("gpt-4o", "gpt-4o", 2500, 1250, 10000),
    ("gpt-4o-mini", "gpt-4o-mini", 150, 75, 600),
    ("gpt-4.1", "gpt-4.1", 2000, 500, 8000),
    ("gpt-4.1-mini", "gpt-4.1-mini", 400, 100, 1600),
    ("gpt-4.1-nano", "gpt-4.1-nano", 100, 25, 400),
    ("text-embedding-3-small", "text-embedding-3-small", 20, None, None),
    ("ft:gpt-4o-mini:acme::a1", "gpt-4o-mini", 300, 150, 1200),
    ("ft:gpt-4.1-mini:acme::b2", "gpt-4.1-mini", 800, 200, 3200),
]


def fill(dsn: str, rows: int) -> None:
    """Teams, keys, `rows` ledger rows spread over DAYS days, and their daily rollup."""
    models = "ARRAY[" + ",".join(f"'{m[0]}'" for m in MODELS) + "]"
    bases = "ARRAY[" + ",".join(f"'{m[1]}'" for m in MODELS) + "]"

    def rates(i: int) -> str:
        return "ARRAY[" + ",".join("NULL" if m[i] is None else str(m[i]) for m in MODELS) + "]::bigint[]"

    seconds = DAYS * 86400
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO teams (id, name, validate_training_files, created_at) "
            "SELECT 'team-' || t, 'Team ' || t, true, now() FROM generate_series(0, %s) t",
            (TEAMS - 1,),
        )
        conn.execute(
            "INSERT INTO api_keys (id, team_id, name, prefix, key_hash, created_at) "
            "SELECT 'key-' || t || '-' || k, 'team-' || t, 'key ' || k, 'fb-', md5(t || '-' || k), now() "
            "FROM generate_series(0, %s) t, generate_series(0, %s) k",
            (TEAMS - 1, KEYS_PER_TEAM - 1),
        )
        # One row per g: team, key and model from g; one request in a hundred is a training job.
        conn.execute(f"""
            INSERT INTO ledger (
                request_id, team_id, key_id, kind, endpoint, model_requested, model_answered, base_model,
                fine_tuned, priced, prompt_tokens, cached_tokens, completion_tokens, total_tokens,
                trained_tokens, cost_nano, input_rate_nano, cached_rate_nano, output_rate_nano,
                training_rate_nano, catalog_version, status, usage_source, http_status,
                started_at, finished_at, recorded_at)
            SELECT
                'req-' || g,
                'team-' || (g % {TEAMS}),
                CASE WHEN g % 17 = 0 THEN NULL ELSE 'key-' || (g % {TEAMS}) || '-' || ((g / {TEAMS}) % {KEYS_PER_TEAM}) END,
                CASE WHEN training THEN 'training' ELSE 'inference' END,
                CASE WHEN training THEN 'fine_tuning.jobs' ELSE 'chat.completions' END,
                model, model, base, model LIKE 'ft:%', true,
                p, c, o, p + o, t,
                CASE WHEN training THEN t::bigint * 25000
                     ELSE (p - c) * ({rates(2)})[m] + c * coalesce(({rates(3)})[m], 0)
                          + o * coalesce(({rates(4)})[m], 0) END,
                CASE WHEN training THEN NULL ELSE ({rates(2)})[m] END,
                CASE WHEN training THEN NULL ELSE ({rates(3)})[m] END,
                CASE WHEN training THEN NULL ELSE ({rates(4)})[m] END,
                CASE WHEN training THEN 25000 END,
                '2025-04-14.1',
                CASE WHEN g % 50 = 0 THEN 'upstream_error' ELSE 'ok' END,
                'upstream', 200,
                ts, ts + interval '800 milliseconds', ts + interval '1 second'
            FROM (
                SELECT g, g % 100 = 0 AS training, 1 + (hashint4(g)::bigint % {len(MODELS)} + {len(MODELS)}) % {len(MODELS)} AS m,
                       timestamptz '{START.isoformat()}' + make_interval(secs => (g::bigint * 7919) % {seconds}) AS ts
                FROM generate_series(1, {int(rows)}) g
            ) s,
            LATERAL (SELECT ({models})[s.m] AS model, ({bases})[s.m] AS base,
                            CASE WHEN training THEN 0 ELSE 50 + (g * 13) % 4000 END AS p,
                            CASE WHEN training THEN 0 ELSE ((g * 13) % 4000) / 3 END AS c,
                            CASE WHEN training THEN 0 ELSE 10 + (g * 31) % 800 END AS o,
                            CASE WHEN training THEN 100000 + (g * 101) % 5000000 ELSE 0 END AS t) v
        """)  # no parameters: psycopg sends the text as is, so % is modulo
        conn.execute("""
            INSERT INTO ledger_daily (day, team_id, key_id, model, base_model, kind, requests,
                                      prompt_tokens, cached_tokens, completion_tokens, trained_tokens, cost_nano)
            SELECT (started_at AT TIME ZONE 'UTC')::date, team_id, coalesce(key_id, ''), model_requested,
                   coalesce(base_model, ''), kind, count(*), sum(prompt_tokens), sum(cached_tokens),
                   sum(completion_tokens), sum(trained_tokens), sum(cost_nano)
            FROM ledger GROUP BY 1, 2, 3, 4, 5, 6
        """)
        conn.execute("VACUUM ANALYZE")


# (name, query, held to the 1 s target): exports of tens of thousands of rows and the forced
# full-ledger scan are timed for comparison only; auto never sends a summary report to the ledger.
SHAPES: list[tuple[str, SpendQuery, bool]] = [
    ("team x model, monthly, 90 days", spend_query(group_by="team,model", granularity="month", since="2026-09-02", until="2026-12-01"), True),
    ("team, daily, all time", spend_query(group_by="team", granularity="day"), True),
    ("one team by model, daily, 30 days (team route)", spend_query(group_by="model", granularity="day", since="2026-11-01", team="team-3"), True),
    ("total, no grouping, all time", spend_query(granularity="none"), True),
    ("[ledger] one team, hourly, 7 days", spend_query(group_by="model", granularity="hour", since="2026-11-24", team="team-3"), True),
    ("[ledger] one team by key, sub-day bounds, 30 days", spend_query(group_by="key", granularity="day", since="2026-11-01T06:00:00Z", team="team-3"), True),
    ("[ledger] status=upstream_error by team, monthly, all", spend_query(group_by="team", granularity="month", status="upstream_error"), True),
    ("[export] key x model x kind, weekly, 90 days", spend_query(group_by="key,model,kind", granularity="week", since="2026-09-02"), False),
    ("[export] all five dims, daily, November", spend_query(group_by="team,key,model,base_model,kind", granularity="day", since="2026-11", until="2026-12"), False),
    ("[ledger forced, comparison] team x model, monthly", spend_query(group_by="team,model", granularity="month", since="2026-09-02", until="2026-12-01", source="ledger"), False),
]


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> tuple[list[float], Any]:
    result = await fn()  # warm: connection, plan cache
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = await fn()
        times.append(time.perf_counter() - t0)
    return times, result


async def run_reports(url: str, repeat: int) -> bool:
    engine = make_engine(url)
    sessions = make_sessions(engine)
    slow = False
    print(f"{'report':<55} {'source':<7} {'rows':>6} {'median ms':>10} {'max ms':>8}")
    try:
        for name, query, target in SHAPES:
            async def run(q: SpendQuery = query) -> Any:
                async with sessions() as s:
                    return await spend_report(s, q)

            times, report = await timed(run, repeat)
            # Held to the median: the machine is shared, and a single run can stall behind others.
            slow |= target and statistics.median(times) >= 1.0
            print(f"{name:<55} {report.source:<7} {len(report.rows):>6} {statistics.median(times) * 1000:>10.1f} {max(times) * 1000:>8.1f}")

        async def statement() -> Any:
            async with sessions() as s:
                team = await s.get(Team, "team-3")
                return await build_statement(s, team, datetime(2026, 11, 1, tzinfo=timezone.utc), END)

        times, st = await timed(statement, repeat)
        slow |= statistics.median(times) >= 1.0
        print(f"{'statement, one team, November':<55} {'ledger':<7} {len(st.lines):>6} {statistics.median(times) * 1000:>10.1f} {max(times) * 1000:>8.1f}")

        async def csv_of_biggest() -> str:
            async with sessions() as s:
                return spend_csv(await spend_report(s, SHAPES[-2][1]))

        times, text = await timed(csv_of_biggest, repeat)
        print(f"{'[export] all five dims, daily, November, as CSV':<55} {'rollup':<7} {text.count(chr(10)) - 2:>6} {statistics.median(times) * 1000:>10.1f} {max(times) * 1000:>8.1f}")

        # The two paths must agree on the bench data too.
        async with sessions() as s:
            a = await spend_report(s, SHAPES[0][1])
            b = await spend_report(s, SHAPES[-1][1])  # the same report, from the ledger
        same = [(r.period_start, r.dims, r.cost_nano, r.requests) for r in a.rows] == [
            (r.period_start, r.dims, r.cost_nano, r.requests) for r in b.rows
        ]
        print(f"rollup and ledger agree: {same}; total {a.totals.cost_nano} nUSD over {a.totals.requests} requests")
        return same and not slow
    finally:
        await engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--database", help="time the reports on this kept, filled database")
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()

    if args.database:
        url = args.admin_dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{args.database}"
        return 0 if asyncio.run(run_reports(url, args.repeat)) else 1
    name = f"fbrepbench_{uuid.uuid4().hex[:10]}"
    dsn = args.admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    url = dsn.replace("postgresql://", "postgresql+asyncpg://")
    with psycopg.connect(args.admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        migrate.upgrade(url)
        t0 = time.perf_counter()
        fill(dsn, args.rows)
        with psycopg.connect(dsn) as conn:
            ledger_rows = conn.execute("SELECT count(*) FROM ledger").fetchone()[0]  # type: ignore[index]
            daily_rows = conn.execute("SELECT count(*) FROM ledger_daily").fetchone()[0]  # type: ignore[index]
        print(f"database {name}: {ledger_rows:,} ledger rows, {daily_rows:,} ledger_daily rows, filled in {time.perf_counter() - t0:.1f} s")
        ok = asyncio.run(run_reports(url, args.repeat))
    finally:
        if not args.keep:
            with psycopg.connect(args.admin_dsn, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            print(f"kept database {name}")
    print("every summary report under 1 s" if ok else "A SUMMARY REPORT TOOK 1 s OR MORE (or the paths disagree)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
