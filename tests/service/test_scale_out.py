"""Scale-out: two Farebox processes on different ports share one Redis and one Postgres and
behave as one: budgets, alerts, job watching and the ledger."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import httpx
import openai
import pytest

from pricing import Usage, count_chat_messages, price, resolve_model
from pricing.money import format_usd
from tests.harness import Admin, FareboxConfig, Ledger, Proc, start_farebox, start_simulator, wait_until
from tests.service.alerts.receiver import Receiver
from tests.service.finetune.data import write_training_file

pytestmark = pytest.mark.timeout(240)

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "One replica or two?"}]
MAX_TOKENS = 30
K = 5
JOBS = 4


class Replicas:
    def __init__(self, procs: list[Proc], config: FareboxConfig) -> None:
        self.procs = procs
        self.config = config
        self.admin = Admin(procs[0].base_url, config.admin_token)
        self.ledger = Ledger(config.database_url)

    def v1(self, i: int) -> str:
        return f"{self.procs[i % len(self.procs)].base_url}/v1"


@pytest.fixture(scope="module")
def replicas(new_pg_database: Callable[[str], str], redis_url: str, log_dir: Path) -> Iterator[Replicas]:
    # A database and simulator of their own: these replicas' watchers follow only these jobs.
    simulator = start_simulator(log_dir, "--job-phase-s", "0.3")
    polls = {"FAREBOX_JOB_POLL_INTERVAL_S": "0.1", "FAREBOX_JOB_POLL_MAX_INTERVAL_S": "0.5"}
    config = FareboxConfig(
        new_pg_database("fbt_scale"), simulator.base_url, redis_url, f"fbt{uuid.uuid4().hex[:10]}", extra_env=polls
    )
    with ThreadPoolExecutor(2) as pool:  # both start and migrate at once
        procs = list(pool.map(lambda _: start_farebox(config, log_dir), range(2)))
    yield Replicas(procs, config)
    for proc in procs:
        proc.stop()
    simulator.stop()


def _exact_cost() -> int:
    rates = resolve_model(MODEL).rates(datetime.now(timezone.utc))
    return price(Usage(prompt_tokens=count_chat_messages(MESSAGES, MODEL), completion_tokens=MAX_TOKENS), rates).total_nano


async def test_two_replicas_act_as_one(replicas: Replicas, tmp_path: Path) -> None:
    receiver = await Receiver().start()
    try:
        cost = _exact_cost()
        team = replicas.admin.team(webhook_url=receiver.url("team"))
        key = replicas.admin.key(team["id"])["key"]
        replicas.admin.budget(team["id"], format_usd(K * cost), "daily", kind="inference", name="inference")
        replicas.admin.budget(team["id"], "100", "monthly", kind="training", name="training")

        # Budgets: 20 x K concurrent requests over both replicas; exactly K fit.
        body = {"model": MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS}
        headers = {"Authorization": f"Bearer {key}", "x-sim-completion-tokens": str(MAX_TOKENS), "x-sim-latency-ms": "30"}
        async with httpx.AsyncClient(timeout=60) as http:
            answers = await asyncio.gather(
                *(http.post(f"{replicas.v1(i)}/chat/completions", json=body, headers=headers) for i in range(20 * K))
            )
        statuses = [a.status_code for a in answers]
        assert statuses.count(200) == K and statuses.count(429) == 19 * K

        # Job watching: jobs created through either replica, each settled exactly once.
        jobs = []
        for i in range(JOBS):
            client = openai.OpenAI(base_url=replicas.v1(i), api_key=key, max_retries=0)
            with write_training_file(tmp_path / f"train-{i}.jsonl", count=20 + i).open("rb") as handle:
                uploaded = client.files.create(file=handle, purpose="fine-tune")
            jobs.append(client.fine_tuning.jobs.create(training_file=uploaded.id, model="gpt-4o-mini", hyperparameters={"n_epochs": 2}))

        def training_rows() -> list[dict]:
            return [r for r in replicas.ledger.rows(team["id"]) if r["kind"] == "training"]

        wait_until(lambda: len(training_rows()) >= JOBS, 90, what="every job settled")
        rows = training_rows()
        assert sorted(r["job_id"] for r in rows) == sorted(j.id for j in jobs), "a job was charged twice or not at all"
        for row in rows:
            upstream = openai.OpenAI(base_url=replicas.v1(0), api_key=key, max_retries=0).fine_tuning.jobs.retrieve(row["job_id"])
            assert upstream.status == "succeeded" and row["trained_tokens"] == upstream.trained_tokens
            assert row["cost_nano"] == upstream.trained_tokens * row["training_rate_nano"]

        # Alerts: the inference budget went to exactly 100 %: one POST per threshold.
        bodies = await receiver.wait_for("team", 3)

        def recorded() -> list[dict]:
            alerts = replicas.admin.http.get("/alerts", params={"team": team["id"]}).raise_for_status().json()["data"]
            return alerts if alerts and all(a["status"] == "delivered" for a in alerts) else []

        alerts = wait_until(recorded, 20, what="alerts recorded as delivered")
        assert sorted(a["threshold"] for a in alerts) == [50, 80, 100]
        assert all(a["attempts"] == 1 for a in alerts)
        assert len(receiver.bodies("team")) == 3  # every alert claimed once, so no replica sends again
        assert sorted(b["threshold_percent"] for b in bodies) == [50, 80, 100]

        # The ledger: one row per charge, nothing twice, the exact total.
        ledger = replicas.ledger.rows(team["id"])
        assert len({r["request_id"] for r in ledger}) == len(ledger) == K + JOBS
        inference = [r for r in ledger if r["kind"] == "inference"]
        assert sum(r["cost_nano"] for r in inference) == K * cost
        standing = {s["name"]: s for s in replicas.admin.standing(team["id"])}
        assert standing["inference"]["spent_nano"] == K * cost
        assert standing["training"]["spent_nano"] == sum(r["cost_nano"] for r in rows)
        assert standing["training"]["reserved_nano"] == 0
    finally:
        await receiver.stop()
