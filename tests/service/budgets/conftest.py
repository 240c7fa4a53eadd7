"""A budget store fixture that runs each behavioural test on the memory and the Redis store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.budgets.memory_store import MemoryBudgetStore
from service.budgets.redis_store import RedisBudgetStore
from tests.service.budgets.builders import delete_namespace

CLAIM_IDLE_S = 0.2


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Each store under test; the Redis one lives in this test's own namespace."""
    if request.param == "memory":
        yield MemoryBudgetStore(claim_idle_s=CLAIM_IDLE_S)
        return
    url = request.getfixturevalue("redis_url")
    namespace = request.getfixturevalue("redis_namespace")
    redis_store = RedisBudgetStore.from_url(url, namespace, claim_idle_s=CLAIM_IDLE_S)
    yield redis_store
    await delete_namespace(redis_store.client, namespace)
    await redis_store.close()
