"""What reading the outbox of many idle teams costs: one ledger-writer read, as the writer does it
several times a second.

    .venv/bin/python bench/outbox_read.py [--teams 1000] [--reads 20]

Creates `--teams` empty team outboxes (with their consumer groups) under a fresh namespace of the
local Redis, reads them `--reads` times through `RedisBudgetStore.read_outbox`, and prints the
wall time per read on the client and the time Redis spent on the XAUTOCLAIM and XREADGROUP
commands per read (`INFO commandstats`, reset first: other clients of the same Redis add to
it). The namespace's keys are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis.asyncio as redis

from service.budgets.redis_store import RedisBudgetStore


async def _run(url: str, teams: int, reads: int) -> tuple[float, float]:
    client = redis.Redis.from_url(url)
    namespace = f"fbbench_outbox_{uuid.uuid4().hex[:8]}"
    store = RedisBudgetStore(client, namespace)
    team_ids = [f"team{i:05d}" for i in range(teams)]
    try:
        await store.read_outbox(team_ids, 500)  # creates the groups and scans each team once
        await client.config_resetstat()
        started = time.perf_counter()
        for _ in range(reads):
            assert await store.read_outbox(team_ids, 500) == []
        wall_ms = (time.perf_counter() - started) * 1000 / reads
        stats = await client.info("commandstats")
        busy_us = sum(v["usec"] for k, v in stats.items() if k in ("cmdstat_xautoclaim", "cmdstat_xreadgroup"))
        return wall_ms, busy_us / 1000 / reads
    finally:
        keys = [key async for key in client.scan_iter(f"{namespace}:*")]
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start : start + 500])
        await client.aclose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teams", type=int, default=1000)
    p.add_argument("--reads", type=int, default=20)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = p.parse_args(argv)
    wall_ms, busy_ms = asyncio.run(_run(args.redis_url, args.teams, args.reads))
    print(f"{args.teams:,} idle teams, {args.reads} reads: {wall_ms:.1f} ms per read on the client, "
          f"Redis busy {busy_ms:.2f} ms per read")
    return 0


if __name__ == "__main__":
    sys.exit(main())
