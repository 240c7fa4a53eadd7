"""Redis stops under load and comes back: fail-closed refuses cleanly, fail-open reconciles from the ledger."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Proc, wait_until
from tests.reliability.accounting import wait_reconciled
from tests.reliability.conftest import FaultStack, fault_stack
from tests.reliability.load import Call, LoadLoop, during, one_call
from tests.reliability.results import Recorder
from tests.reliability.services import PrivatePostgres, PrivateRedis

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

OUTAGE_S = 4.0
# Short holds, so the reaper frees within seconds those whose settle met the outage.
RESERVATION_TTL_S = "3"


def _outage(stack: FaultStack, redis: PrivateRedis, key: str) -> tuple[list[Call], float, float]:
    """Run load, stop Redis for OUTAGE_S, bring it back; returns (calls, down_at, up_at).

    The load goes on until the counter rebuild that follows Redis's return has run, so charges
    settle while it runs: a rebuild must keep every one of them counted (gate.rebuild_from_ledger).
    """
    rebuilds = stack.farebox.log().count("counters_rebuilt")
    load = LoadLoop(stack.base_url, key).start()
    try:
        load.wait_for(30)
        down_at = time.monotonic()
        redis.stop()
        time.sleep(OUTAGE_S)  # the fault itself: Redis stays away this long
        up_at = time.monotonic()
        redis.start()
        wait_until(lambda: stack.farebox.log().count("counters_rebuilt") > rebuilds, 30, interval_s=0.1,
                   what="the counters rebuilt after the outage")
        served = load.count()
        load.wait_for(served + 20)  # and still charging after the rebuild
    finally:
        calls = load.stop()
    return calls, down_at, up_at


def _serves_again(stack: FaultStack, key: str, n: int = 10) -> list[Call]:
    """n calls after the recovery, half of them streamed: every one served."""
    with httpx.Client(timeout=30) as client:
        calls = [one_call(client, stack.base_url, key, stream=i % 2 == 0) for i in range(n)]
    assert all(c.ok for c in calls), sorted({(c.status, c.code) for c in calls if not c.ok})
    return calls


def _settled_standing(stack: FaultStack, team_id: str, ledger_total: int) -> dict:
    """The budget's standing once holds are released and its counter agrees with the ledger."""
    def agreed() -> dict | None:
        resp = stack.admin.http.get(f"/teams/{team_id}/standing")
        if resp.status_code == 503:  # the store's pool reconnects on its first commands
            assert resp.json()["error"]["code"] == "budget_store_unavailable"
            return None
        [standing] = resp.raise_for_status().json()
        ok = standing["reserved_nano"] == 0 and standing["spent_nano"] == ledger_total
        return standing if ok else None

    return wait_until(agreed, 45, interval_s=0.25, what="counter == ledger and no hold left")



def _after_the_outage(stack: FaultStack, team_id: str, key: str, calls: list[Call]) -> tuple[list[Call], Any, int, dict]:
    """Once Redis is back: counters rebuilt, serving again, and the ledger reconciled with every call."""
    wait_reconciled(stack.ledger, team_id, calls)
    _settled_standing(stack, team_id, stack.ledger.total(team_id))
    after = _serves_again(stack, key)
    rec = wait_reconciled(stack.ledger, team_id, calls + after)
    ledger_total = stack.ledger.total(team_id)
    return after, rec, ledger_total, _settled_standing(stack, team_id, ledger_total)

def test_fail_closed_refuses_cleanly_and_charges_nothing_twice(
    simulator: Proc, log_dir: Path, private_postgres: PrivatePostgres, private_redis_aof: PrivateRedis,
    record_figures: Recorder,
) -> None:
    stack = fault_stack(simulator.base_url, log_dir, private_postgres.url, private_redis_aof.url,
                        farebox_reservation_ttl_s=RESERVATION_TTL_S)
    try:
        team, key = stack.admin.team_with_key()
        stack.admin.budget(team["id"], "1000", "daily")
        calls, down_at, up_at = _outage(stack, private_redis_aof, key)

        outage = during(calls, down_at, up_at)
        refused = [c for c in outage if c.status == 503 and c.code == "budget_store_unavailable"]
        other = [c for c in outage if not c.ok and c not in refused]
        after, rec, ledger_total, standing = _after_the_outage(stack, team["id"], key, calls)
        record_figures(
            fault=f"Redis stopped {OUTAGE_S:.0f} s under load, fail-closed", requests=len(calls) + len(after),
            during=len(outage), refused_during=len(refused), other_failures=len(other), served_after=len(after),
            successes=rec.successes, ledger_rows=rec.rows, missing=rec.missing, duplicates=rec.duplicates,
            cost_difference_nano=rec.cost_difference_nano,
            counter_difference_nano=standing["spent_nano"] - ledger_total, differences=rec.differences,
        )
        assert refused, "no request met the outage"
        assert not other, f"failures other than a clean 503: {sorted({(c.status, c.code) for c in other})}"
        # Refused calls were never forwarded, so they have no ledger row: rows are exactly the successes.
        assert rec.differences == 0 and rec.rows == rec.successes, rec
        assert not any(r["request_id"] in {c.request_id for c in refused} for r in stack.ledger.rows(team["id"]))
    finally:
        stack.farebox.stop()


def test_fail_open_serves_through_and_rebuilds_counters_from_the_ledger(
    simulator: Proc, log_dir: Path, private_postgres: PrivatePostgres, private_redis_aof: PrivateRedis,
    record_figures: Recorder,
) -> None:
    stack = fault_stack(simulator.base_url, log_dir, private_postgres.url, private_redis_aof.url,
                        farebox_fail_open="true", farebox_reservation_ttl_s=RESERVATION_TTL_S)
    try:
        team, key = stack.admin.team_with_key()
        stack.admin.budget(team["id"], "1000", "daily")
        calls, down_at, up_at = _outage(stack, private_redis_aof, key)

        outage = during(calls, down_at, up_at)
        served = [c for c in outage if c.ok]
        failed = [c for c in outage if not c.ok]
        after, rec, ledger_total, standing = _after_the_outage(stack, team["id"], key, calls)
        record_figures(
            fault=f"Redis stopped {OUTAGE_S:.0f} s under load, fail-open", requests=len(calls) + len(after),
            during=len(outage), served_during=len(served), refused_during=len(failed), served_after=len(after),
            successes=rec.successes, ledger_rows=rec.rows, missing=rec.missing, duplicates=rec.duplicates,
            cost_difference_nano=rec.cost_difference_nano,
            counter_difference_nano=standing["spent_nano"] - ledger_total, differences=rec.differences,
        )
        assert served, "fail-open served nothing while Redis was down"
        assert not failed, f"fail-open refused calls: {sorted({(c.status, c.code) for c in failed})}"
        assert rec.differences == 0 and rec.rows == rec.successes, rec
        assert standing["spent_nano"] == ledger_total > 0
    finally:
        stack.farebox.stop()


def test_redis_restarted_empty_gets_its_counters_back_from_the_ledger(
    simulator: Proc, log_dir: Path, private_postgres: PrivatePostgres, private_redis: PrivateRedis,
    record_figures: Recorder,
) -> None:
    """Killed without persistence and idle meanwhile: the counters come back from Postgres, the truth."""
    stack = fault_stack(simulator.base_url, log_dir, private_postgres.url, private_redis.url)
    try:
        team, key = stack.admin.team_with_key()
        stack.admin.budget(team["id"], "1000", "daily")
        load = LoadLoop(stack.base_url, key).start()
        load.wait_for(30)
        calls = load.stop()
        rec = wait_reconciled(stack.ledger, team["id"], calls)
        ledger_total = stack.ledger.total(team["id"])
        private_redis.kill()
        # Idle, so only the maintenance loop (every 5 s) can notice that Redis went away.
        wait_until(lambda: "budget_maintenance_failed" in stack.farebox.log(), 20, interval_s=0.2,
                   what="the outage noticed")
        private_redis.start()
        assert private_redis.client().dbsize() < 5, "the restarted Redis was not empty"
        standing = _settled_standing(stack, team["id"], ledger_total)
        record_figures(
            fault="Redis killed without persistence while idle, restarted empty", requests=len(calls),
            during=0, successes=rec.successes, ledger_rows=rec.rows, missing=rec.missing,
            duplicates=rec.duplicates, counter_difference_nano=standing["spent_nano"] - ledger_total,
            differences=rec.differences,
        )
        assert rec.differences == 0 and rec.rows == rec.successes, rec
    finally:
        stack.farebox.stop()
