"""End to end: two Farebox processes share Postgres and Redis and serve one team through the SDK;
its webhook receives exactly one POST per threshold, and a failing webhook gets it on the 3rd try."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from pricing.money import format_usd
from tests.harness import Admin, FareboxConfig, Ledger, Proc, start_farebox
from tests.service.alerts.receiver import Receiver

PROMPT = [{"role": "user", "content": "Say something about budgets."}]


class TwoReplicas:
    def __init__(self, procs: list[Proc], config: FareboxConfig) -> None:
        self.procs = procs
        self.config = config
        self.admin = Admin(procs[0].base_url, config.admin_token)
        self.ledger = Ledger(config.database_url)

    def client(self, i: int, key: str) -> AsyncOpenAI:
        return AsyncOpenAI(base_url=f"{self.procs[i % 2].base_url}/v1", api_key=key, max_retries=0)

    async def chat(self, i: int, key: str) -> Any:
        # max_tokens equal to the simulator's natural answer: the charge is exactly the reservation.
        async with self.client(i, key) as client:
            return await client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, max_tokens=16)

    async def alerts(self, team_id: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.procs[1].base_url, headers={"Authorization": f"Bearer {self.config.admin_token}"}) as http:
            response = await http.get("/admin/alerts", params={"team": team_id})
            response.raise_for_status()
            return response.json()["data"]


@pytest.fixture(scope="module")
def replicas(simulator: Proc, log_dir: Path, alerts_pg_url: str, redis_url: str) -> Iterator[TwoReplicas]:
    config = FareboxConfig(alerts_pg_url, simulator.base_url, redis_url, f"fbt{uuid.uuid4().hex[:10]}")
    with ThreadPoolExecutor(2) as pool:  # both start (and migrate, racing) at once
        procs = list(pool.map(lambda _: start_farebox(config, log_dir), range(2)))
    replicas = TwoReplicas(procs, config)
    yield replicas
    for proc in procs:
        proc.process.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.stop()
    replicas.ledger.engine.dispose()


async def one_request_cost(replicas: TwoReplicas) -> int:
    team, key = replicas.admin.team_with_key()
    await replicas.chat(0, key)
    [row] = await asyncio.to_thread(replicas.ledger.wait_rows, team["id"], 1)
    assert row["completion_tokens"] == 16 and row["cost_nano"] > 0
    return int(row["cost_nano"])


async def test_each_threshold_is_posted_exactly_once_across_two_replicas(replicas: TwoReplicas, receiver: Receiver) -> None:
    cost = await one_request_cost(replicas)
    team, key = replicas.admin.team_with_key(webhook_url=receiver.url("team"))
    budget = replicas.admin.budget(team["id"], format_usd(10 * cost), period="total", name="launch")
    # Ten requests fill the budget exactly; they alternate between the replicas, two at a time.
    for i in range(0, 10, 2):
        await asyncio.gather(replicas.chat(i, key), replicas.chat(i + 1, key))
    bodies = await receiver.wait_for("team", 3)
    rows = await _wait_delivered(replicas, team["id"], 3)

    assert sorted(b["threshold_percent"] for b in bodies) == [50, 80, 100]
    assert Counter(b["alert_id"] for b in bodies) == Counter(r["id"] for r in rows)
    for body in bodies:
        assert body["team"] == {"id": team["id"], "name": team["name"]}
        assert body["budget"] == {"id": budget["id"], "name": "launch", "period": "total"}
        assert body["limit_usd"] == format_usd(10 * cost)
        assert body["spent_nano"] * 100 >= body["threshold_percent"] * 10 * cost
        assert body["period_start"] is None and body["period_end"] is None
    assert [(r["status"], r["attempts"], r["period_start"]) for r in rows] == [("delivered", 1, "1970-01-01T00:00:00Z")] * 3
    # The budget is full: the next request is refused and no further alert follows.
    with pytest.raises(openai.RateLimitError) as refused:
        await replicas.chat(0, key)
    assert refused.value.code == "budget_exceeded"
    await asyncio.sleep(0.5)
    assert len(receiver.bodies("team")) == 3 and receiver.failed == []


async def test_a_webhook_failing_twice_gets_each_alert_on_the_third_attempt(replicas: TwoReplicas, receiver: Receiver) -> None:
    receiver.fail_first["flaky"] = 2
    cost = await one_request_cost(replicas)
    team, key = replicas.admin.team_with_key(webhook_url=receiver.url("flaky"))
    replicas.admin.budget(team["id"], format_usd(cost), period="daily")
    await replicas.chat(1, key)  # one request takes the budget from 0 to 100 %: three thresholds at once
    bodies = await receiver.wait_for("flaky", 3)
    rows = await _wait_delivered(replicas, team["id"], 3)
    assert sorted(b["threshold_percent"] for b in bodies) == [50, 80, 100]
    assert len(receiver.failed) == 6
    assert [r["attempts"] for r in rows] == [3, 3, 3]
    assert all(r["last_error"].startswith("HTTP 500") for r in rows)
    assert all(r["period_start"].endswith("T00:00:00Z") for r in rows)


async def _wait_delivered(replicas: TwoReplicas, team_id: str, count: int) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        rows = await replicas.alerts(team_id)
        if len(rows) >= count and all(r["status"] == "delivered" for r in rows):
            return rows
        assert loop.time() < deadline, rows
        await asyncio.sleep(0.05)
