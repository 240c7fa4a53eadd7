"""SIGTERM drains: streams in flight finish, their charges reach the ledger, then the process exits 0."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.harness import Admin, FareboxConfig, Ledger, Proc, start_farebox
from tests.reliability.load import Call, one_call
from tests.reliability.results import Recorder

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

STREAMS = 6
CHUNK_DELAY_MS = 150  # 16 chunks: each stream runs about 2.5 s, so all are mid-way at SIGTERM


def test_sigterm_lets_streams_finish_and_flushes_the_ledger(
    simulator: Proc, log_dir: Path, pg_url: str, redis_url: str, redis_namespace: str,
    record_figures: Recorder,
) -> None:
    config = FareboxConfig(pg_url, simulator.base_url, redis_url, redis_namespace,
                           extra_env={"FAREBOX_DRAIN_GRACE_S": "20"})
    farebox = start_farebox(config, log_dir)
    admin = Admin(farebox.base_url, config.admin_token)
    team, key = admin.team_with_key()
    admin.budget(team["id"], "100", "daily")
    first_chunk = threading.Barrier(STREAMS + 1, timeout=60)
    results: list[Call] = []

    def stream() -> None:
        with httpx.Client(timeout=60) as client:
            results.append(one_call(
                client, farebox.base_url, key, stream=True,
                headers={"x-sim-chunk-delay-ms": str(CHUNK_DELAY_MS), "x-sim-completion-tokens": "16"},
                on_first_chunk=first_chunk.wait, max_tokens=16,
            ))

    threads = [threading.Thread(target=stream) for _ in range(STREAMS)]
    for t in threads:
        t.start()
    first_chunk.wait()  # every stream has started answering
    sent_at = time.monotonic()
    farebox.process.send_signal(signal.SIGTERM)
    exit_code = farebox.process.wait(40)
    exited_after = time.monotonic() - sent_at
    for t in threads:
        t.join(10)

    # Read the ledger only now: whatever the process owed it was written before it exited.
    rows = Ledger(pg_url).rows(team["id"])
    completed = [c for c in results if c.ok]
    record_figures(
        fault="SIGTERM with streams in flight", requests=STREAMS, during=STREAMS, completed=len(completed),
        ledger_rows=len(rows), exit_code=exit_code, exited_after_s=round(exited_after, 1),
        differences=abs(len(rows) - len(completed)) + (STREAMS - len(completed)),
    )
    assert exit_code == 0, farebox.log()[-3000:]
    assert len(completed) == STREAMS, results
    assert {r["request_id"] for r in rows} == {c.request_id for c in completed}
    assert all(r["status"] == "ok" and r["completion_tokens"] == 16 for r in rows)
    assert sum(r["cost_nano"] for r in rows) == sum(c.cost_nano for c in completed)


def test_streams_longer_than_the_grace_period_are_cut_and_billed_for_what_was_delivered(
    simulator: Proc, log_dir: Path, pg_url: str, redis_url: str, redis_namespace: str,
    record_figures: Recorder,
) -> None:
    config = FareboxConfig(pg_url, simulator.base_url, redis_url, redis_namespace,
                           extra_env={"FAREBOX_DRAIN_GRACE_S": "2"})
    farebox = start_farebox(config, log_dir)
    admin = Admin(farebox.base_url, config.admin_token)
    team, key = admin.team_with_key()
    admin.budget(team["id"], "100", "daily")
    first_chunk = threading.Barrier(3, timeout=60)
    results: list[Call] = []

    def stream() -> None:
        with httpx.Client(timeout=60) as client:
            results.append(one_call(
                client, farebox.base_url, key, stream=True,
                headers={"x-sim-chunk-delay-ms": "400", "x-sim-completion-tokens": "40"},
                on_first_chunk=first_chunk.wait, max_tokens=40,
            ))

    threads = [threading.Thread(target=stream) for _ in range(2)]
    for t in threads:
        t.start()
    first_chunk.wait()
    sent_at = time.monotonic()
    farebox.process.send_signal(signal.SIGTERM)
    exit_code = farebox.process.wait(40)
    exited_after = time.monotonic() - sent_at
    for t in threads:
        t.join(10)

    rows = Ledger(pg_url).rows(team["id"])
    record_figures(
        fault="SIGTERM with streams longer than the 2 s grace", requests=2, during=2,
        completed=sum(c.ok for c in results), ledger_rows=len(rows), exit_code=exit_code,
        exited_after_s=round(exited_after, 1), differences=abs(len(rows) - 2),
    )
    assert exit_code == 0
    assert exited_after < 15, "the grace period was not enforced"
    assert not any(c.ok for c in results), "a 16 s stream cannot have finished in a 2 s grace"
    assert len(rows) == 2
    for row in rows:
        assert row["status"] in ("client_disconnected", "stream_broken") and 0 < row["completion_tokens"] < 40
        assert row["cost_nano"] > 0 and row["usage_source"] == "tiktoken"
