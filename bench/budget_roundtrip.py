"""Micro-benchmark: what a reserve+settle pair costs a request on the real Redis.

Compares, per request, no budget call at all, one PING (a bare round trip, for scale) and
the reserve+settle pair over three budgets, at concurrency 1 and 64; counts the round
trips by counting socket writes. Usage:
    .venv/bin/python bench/budget_roundtrip.py [--url redis://127.0.0.1:6379/0] [-n 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import redis.asyncio as redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.budgets.redis_store import RedisBudgetStore  # noqa: E402
from service.budgets.store import BudgetCounter, Reservation  # noqa: E402
from service.ledger.event import ChargeEvent  # noqa: E402

TEAM = "bench-team"


class CountingConnection(redis.Connection):
    """Counts socket writes: one per command or pipeline sent, so one per round trip."""

    writes = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.writes += 1
        await super().send_packed_command(command, check_health)


def budgets() -> tuple[BudgetCounter, ...]:
    limit = 2**53 - 1  # never denies: the benchmark measures the happy path
    return tuple(
        BudgetCounter(name, TEAM, name, limit, "total", None, None)
        for name in ("team", "key", "model")
    )


async def run(
    label: str, step: Callable[[int], Awaitable[None]], n: int, concurrency: int
) -> dict[str, Any]:
    latencies: list[float] = []
    next_index = iter(range(n))

    async def worker() -> None:
        for i in next_index:
            t0 = time.perf_counter()
            await step(i)
            latencies.append(time.perf_counter() - t0)

    writes_before = CountingConnection.writes
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "label": label,
        "concurrency": concurrency,
        "round_trips": (CountingConnection.writes - writes_before) / n,
        "mean_us": statistics.fmean(latencies) * 1e6,
        "p50_us": latencies[len(latencies) // 2] * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
        "rps": n / wall,
    }


async def main(url: str, n: int, levels: list[int]) -> None:
    namespace = f"fbbench{uuid.uuid4().hex[:8]}"
    pool = redis.ConnectionPool.from_url(
        url, connection_class=CountingConnection, max_connections=max(levels)
    )
    client = redis.Redis(connection_pool=pool)
    store = RedisBudgetStore(client, namespace)
    counters = budgets()
    now = datetime.now(timezone.utc)
    run_id = 0

    async def nothing(i: int) -> None:
        return None

    async def ping(i: int) -> None:
        await client.ping()

    async def reserve_settle(i: int) -> None:
        request_id = f"{run_id}-{i}"
        res = Reservation(request_id, TEAM, 50_000, counters, 900)
        await store.reserve(res)
        event = ChargeEvent(
            request_id=request_id,
            team_id=TEAM,
            kind="inference",
            status="ok",
            started_at=now,
            finished_at=now,
            cost_nano=31_250,
            model_requested="gpt-4o-mini",
            prompt_tokens=120,
            completion_tokens=40,
        )
        await store.settle(res, event)

    try:
        await asyncio.gather(*(client.ping() for _ in range(max(levels))))  # open the pool
        await reserve_settle(-1)  # load the scripts
        rows = []
        for concurrency in levels:
            run_id += 1
            rows.append(await run("no budget call", nothing, n, concurrency))
            rows.append(await run("PING", ping, n, concurrency))
            rows.append(await run("reserve+settle", reserve_settle, n, concurrency))
            # Keep the outbox from growing across levels; the ledger writer would ack these.
            await client.delete(store.outbox_key(TEAM))
    finally:
        async for key in client.scan_iter(match=f"{namespace}*", count=1000):
            await client.delete(key)
        await client.aclose()

    print(f"{n} requests per row, 3 budgets per reservation, Redis at {url}")
    header = (
        f"{'call per request':<16} {'conc':>4} {'RTT/req':>7} {'mean us':>9}"
        f" {'p50 us':>8} {'p99 us':>8} {'req/s':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['label']:<16} {r['concurrency']:>4} {r['round_trips']:>7.2f} {r['mean_us']:>9.1f}"
            f" {r['p50_us']:>8.1f} {r['p99_us']:>8.1f} {r['rps']:>9.0f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("-n", "--iterations", type=int, default=5000)
    parser.add_argument("-c", "--concurrency", type=int, nargs="+", default=[1, 64])
    args = parser.parse_args()
    asyncio.run(main(args.url, args.iterations, args.concurrency))
