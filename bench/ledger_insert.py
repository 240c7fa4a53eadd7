"""What one ledger batch costs on Postgres: `write_encoded` (insert + daily rollup + commit).

    .venv/bin/python bench/ledger_insert.py [--batches 60] [--size 250]

Creates a fresh database, migrates it, writes `--batches` batches of `--size` distinct charges
(one transaction each, as the ledger writer does, from the charges' outbox encoding) and prints
the median wall time per batch, the writer-side CPU per batch (this process's CPU time: driver
work) and the Postgres backend's CPU per batch (its on-CPU time from /proc/<pid>/schedstat,
summed over the timed batches). The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.db import migrate
from service.db.engine import make_engine, make_sessions
from service.ledger.entries import write_encoded
from service.ledger.event import ChargeEvent

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _events(team: str, n: int) -> list[ChargeEvent]:
    now = datetime.now(timezone.utc)
    return [
        ChargeEvent(
            request_id=f"req_{uuid.uuid4().hex}", team_id=team, kind="inference", status="ok",
            started_at=now - timedelta(milliseconds=900), finished_at=now, cost_nano=1_234_000 + i,
            key_id=f"key_{i % 3}", endpoint="chat.completions", upstream_request_id=f"chatcmpl-{i}",
            model_requested="gpt-4o-mini", model_answered="gpt-4o-mini-2024-07-18", base_model="gpt-4o-mini",
            prompt_tokens=60, completion_tokens=64, total_tokens=124, input_rate_nano=150,
            output_rate_nano=600, catalog_version="2026-11-01", http_status=200,
        )
        for i in range(n)
    ]


def _on_cpu_ns(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/schedstat") as f:
            total += int(f.read().split()[0])
    return total


async def _run(batches: int, size: int) -> tuple[list[float], list[float], float]:
    import asyncpg

    name = f"fbbench_ins_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    engine = make_engine(url)
    try:
        await asyncio.to_thread(migrate.upgrade, url)
        sessions = make_sessions(engine)
        team = f"team_{uuid.uuid4().hex[:8]}"
        walls, cpus = [], []
        backends: list[int] = []
        server_ns = 0
        for i in range(batches + 5):
            docs = [ev.to_bytes() for ev in _events(team, size)]  # as the outbox holds them
            if i == 5:  # the first ones prepare statements and warm the pool
                backends = [r["pid"] for r in await admin.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", name)]
                server_ns = -_on_cpu_ns(backends)
            w0, c0 = time.perf_counter(), time.process_time()
            async with sessions() as session, session.begin():
                assert len(await write_encoded(session, docs)) == size
            if i >= 5:
                walls.append((time.perf_counter() - w0) * 1000)
                cpus.append((time.process_time() - c0) * 1000)
        server_ns += _on_cpu_ns(backends)
        return walls, cpus, server_ns / 1e6 / batches
    finally:
        await engine.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=60)
    p.add_argument("--size", type=int, default=250)
    args = p.parse_args(argv)
    walls, cpus, server_ms = asyncio.run(_run(args.batches, args.size))
    print(
        f"{args.batches} batches of {args.size}: median {statistics.median(walls):.2f} ms wall, "
        f"{statistics.median(cpus):.2f} ms writer CPU per batch "
        f"({1000 * statistics.median(cpus) / args.size:.1f} µs per row), "
        f"Postgres backend CPU {server_ms:.2f} ms per batch ({1000 * server_ms / args.size:.1f} µs per row)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
