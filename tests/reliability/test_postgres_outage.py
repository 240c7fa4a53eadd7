"""PostgreSQL stops for 30 s under steady load: the proxy keeps serving and the ledger loses nothing."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.harness import Proc, wait_until
from tests.reliability.accounting import wait_reconciled
from tests.reliability.conftest import fault_stack
from tests.reliability.load import LoadLoop, during
from tests.reliability.results import Recorder
from tests.reliability.services import PrivatePostgres, PrivateRedis

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

OUTAGE_S = 30.0


def test_postgres_down_for_30_s_under_load(
    simulator: Proc, log_dir: Path, private_postgres: PrivatePostgres, private_redis: PrivateRedis,
    record_figures: Recorder,
) -> None:
    stack = fault_stack(simulator.base_url, log_dir, private_postgres.url, private_redis.url)
    try:
        team, key = stack.admin.team_with_key()
        stack.admin.budget(team["id"], "1000", "daily")
        load = LoadLoop(stack.base_url, key).start()
        load.wait_for(25)

        down_at = time.monotonic()
        private_postgres.stop()
        # The replica stays in its load balancer: it serves from Redis, charges wait in the outbox.
        ready = wait_until(lambda: (r := httpx.get(f"{stack.base_url}/readyz", timeout=5)).json().get("degraded") and r,
                           15, what="readiness to report the database away")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        assert ready.json()["checks"]["database"].startswith("error")
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))  # the fault: the database stays away
        private_postgres.start()
        up_at = time.monotonic()

        assert wait_until(lambda: "degraded" not in httpx.get(f"{stack.base_url}/readyz", timeout=5).json(), 30,
                          what="readiness without the degraded flag once the database is back")
        served_before_recovery = load.count()
        load.wait_for(served_before_recovery + 25)
        calls = load.stop()

        outage = during(calls, down_at, up_at)
        served = [c for c in outage if c.ok]
        refused = [c for c in outage if not c.ok]
        rec = wait_reconciled(stack.ledger, team["id"], calls)
        wait_until(lambda: stack.admin.standing(team["id"])[0]["reserved_nano"] == 0, 30, what="no hold left")
        [standing] = stack.admin.standing(team["id"])
        ledger_total = stack.ledger.total(team["id"])
        record_figures(
            fault=f"PostgreSQL stopped {OUTAGE_S:.0f} s under load", requests=len(calls),
            during=len(outage), served_during=len(served), refused_during=len(refused),
            successes=rec.successes, ledger_rows=rec.rows, missing=rec.missing, duplicates=rec.duplicates,
            cost_difference_nano=rec.cost_difference_nano,
            counter_difference_nano=standing["spent_nano"] - ledger_total, differences=rec.differences,
        )
        assert served, "the proxy served nothing while the database was down"
        assert not refused, f"calls failed during the outage: {sorted({(c.status, c.code) for c in refused})}"
        assert rec.differences == 0, rec
        assert rec.rows == rec.successes, rec
        assert standing["spent_nano"] == ledger_total
    finally:
        stack.farebox.stop()
