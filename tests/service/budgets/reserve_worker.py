"""A separate OS process racing for one Redis budget: run by test_redis_store.

Usage: python -m tests.service.budgets.reserve_worker URL NAMESPACE PREFIX COUNT AMOUNT LIMIT
Prints "ready", waits until the key NAMESPACE:go exists, reserves COUNT requests at once,
then prints the JSON list of request ids that were held.
"""

from __future__ import annotations

import asyncio
import sys

import orjson

from service.budgets.redis_store import RedisBudgetStore
from tests.service.budgets.builders import counter, reservation


async def race(url: str, namespace: str, prefix: str, count: int, amount: int, limit: int) -> None:
    store = RedisBudgetStore.from_url(url, namespace)
    budget = counter(limit_nano=limit)
    batch = [reservation(f"{prefix}{i}", amount, budget) for i in range(count)]
    await store.ping()
    print("ready", flush=True)
    while not await store.client.exists(f"{namespace}:go"):
        await asyncio.sleep(0.002)
    outcomes = await asyncio.gather(*(store.reserve(r) for r in batch))
    held = [r.request_id for r, outcome in zip(batch, outcomes, strict=True) if outcome is None]
    print(orjson.dumps(held).decode(), flush=True)
    await store.close()


if __name__ == "__main__":
    url, namespace, prefix, count, amount, limit = sys.argv[1:7]
    asyncio.run(race(url, namespace, prefix, int(count), int(amount), int(limit)))
