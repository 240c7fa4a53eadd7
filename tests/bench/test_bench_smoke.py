"""The benchmark harness (bench/run.py) end to end, small: simulator upstream, aiohttp load, 1 worker.

It proves the harness starts and cleans up its stack, measures every target and mode, checks the
ledger, and writes the JSON the README's figures come from; the figures themselves are not judged.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "bench" / "run.py"
sys.path.insert(0, str(ROOT / "bench"))

import loadgen
import report
import stack


@pytest.mark.slow
def test_harness_measures_every_target_and_checks_the_ledger(
    pg_admin_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "latest.json"
    env = {**os.environ, "FAREBOX_BENCH_LOG_DIR": str(tmp_path)}
    proc = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--upstream",
            "simulator",
            "--loadgen",
            "python",
            "--workers",
            "1",
            "--duration",
            "0.5",
            "--warmup",
            "0.3",
            "--concurrency",
            "1,4",
            "--ttfb-requests",
            "5",
            "--redis-url",
            redis_url,
            "--output",
            str(out),
        ],
        cwd=ROOT,
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, (
        proc.stderr[-3000:] + (tmp_path / "farebox.log").read_text()[-3000:]
    )
    results = json.loads(out.read_text())

    assert set(results) >= {"meta", "runs", "ttfb", "ledger", "memory", "summary"}
    machine = results["meta"]["machine"]
    assert len(machine["calibration_loop_ms"]) == 2 and all(ms > 0 for ms in machine["calibration_loop_ms"])
    assert machine["executable"].startswith(".venv/bin/python") or Path(machine["executable"]).is_absolute()
    seen = {(r["mode"], r["target"], r["connections"]) for r in results["runs"]}
    assert seen == {
        (m, t, c)
        for m in ("chat", "chat_stream")
        for t in ("direct", "floor", "farebox")
        for c in (1, 4)
    }
    for run in results["runs"]:
        # Farebox's runs include the ledger writer catching up, so its CPU is in the figure.
        assert ("ledger_drain_s" in run) == (run["target"] == "farebox")
        assert run["requests"] > 0 and run["non_2xx"] == 0 and run["socket_errors"] == 0, run
        assert run["p50_ms"] <= run["p99_ms"]
        assert (run.get("proxy_cpu_s_per_1k") or 0) >= 0 and ("proxy_cpu_s_per_1k" in run) == (
            run["target"] != "direct"
        )
        if run["target"] != "direct" and run["connections"] == 4:
            # Read from /proc mid-run: the one worker holds the load generator's 4 connections.
            assert run["connections_per_worker"] == [4], run
        else:
            assert "connections_per_worker" not in run

    ledger = results["ledger"]
    # The aiohttp generator waits for its in-flight requests, so the count is exact.
    assert ledger["uncounted_in_flight_max"] == 0
    assert (
        ledger["rows"] == ledger["distinct_request_ids"] == ledger["client_counted_successes"] > 0
    )
    assert ledger["ok"] is True

    summary = results["summary"]
    assert set(summary["added_latency_ms"]) == {"chat", "chat_stream"}
    assert (
        summary["saturation"]["chat"]["concurrency"] == 4
        and summary["saturation"]["chat"]["farebox_rps"] > 0
    )
    assert set(summary["ttfb_ms"]) >= {
        "direct_p50",
        "farebox_p50",
        "delta_p50",
        "delta_p99",
        "floor_delta_p50",
    }
    assert {"added_p50_ms_c1", "farebox_rps_saturation", "ledger_rows_equal_answers"} <= set(
        summary["targets"]
    )
    assert results["memory"]["peak_rss_sum_mb"] >= results["memory"]["rss_after_warmup_mb"] > 0
    assert "| target | value | goal | met |" in proc.stdout
    # Nothing of the run is left behind: its database is dropped and its Redis keys deleted.
    import psycopg
    import redis

    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        assert (
            conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (results["meta"]["database"],)
            ).fetchone()
            is None
        )
    client = redis.Redis.from_url(redis_url)
    try:
        assert not list(
            client.scan_iter(match=f"{results['meta']['redis_namespace']}*", count=1000)
        )
    finally:
        client.close()


def test_missing_tools_print_the_install_command_and_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # an empty PATH: neither nginx nor wrk is found
    proc = subprocess.run(
        [sys.executable, str(RUN), "--output", str(tmp_path / "x.json")],
        cwd=ROOT,
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "apt-get install -y nginx wrk" in proc.stderr
    assert not (tmp_path / "x.json").exists()


def test_nginx_bodies_survive_the_config_token_limit() -> None:
    body = (stack.FIXTURES / "chat_stream.sse").read_bytes()
    assert len(body) > 4096  # longer than one nginx config token may be
    maps, value = stack._nginx_body("b", body)
    assert value == '"' + "".join(f"$b_{i}" for i in range(maps.count("map "))) + '"'
    assert maps.count("map ") == -(-len(body.decode()) // 3000)
    with pytest.raises(ValueError):
        stack._nginx_body("b", b"costs $5")


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert loadgen.percentile(values, 50) == 50.0
    assert loadgen.percentile(values, 99) == 99.0
    assert loadgen.percentile(values, 100) == 100.0
    assert loadgen.percentile([], 50) == 0.0


def test_targets_are_judged_against_the_issue() -> None:
    def run(target: str, c: int, rps: float, p50: float, p99: float) -> dict[str, object]:
        return {
            "mode": "chat",
            "target": target,
            "connections": c,
            "rps": rps,
            "p50_ms": p50,
            "p99_ms": p99,
            "proxy_cpu_s_per_1k": None if target == "direct" else 0.4,
        }

    results = {
        "runs": [
            run("direct", 1, 9000, 0.1, 0.3),
            run("farebox", 1, 900, 0.9, 3.5),
            run("direct", 64, 40000, 1.0, 3.0),
            run("farebox", 64, 2500, 20.0, 40.0),
        ],
        "ttfb": {
            "direct": {"p50_ms": 0.2, "p99_ms": 0.5},
            "farebox": {"p50_ms": 1.0, "p99_ms": 2.0},
        },
        "ledger": {"rows": 10, "ok": True},
    }
    targets = report.summarise(results, [1, 64])["targets"]
    assert targets["added_p50_ms_c1"] == {"value": 0.8, "target": "< 1", "met": True}
    assert targets["added_p99_ms_c1"]["met"] is False  # 3.2 ms
    assert targets["farebox_rps_saturation"]["met"] is True
    assert (
        targets["ttfb_delta_p50_ms"]["value"] == 0.8 and targets["ttfb_delta_p50_ms"]["met"] is True
    )
    assert targets["upstream_floor_ratio"]["value"] == 16.0


def test_a_run_without_concurrency_1_judges_no_latency_target() -> None:
    """A soak at c=64 alone must not report its queueing latency as the c=1 target."""
    runs = [
        {"mode": "chat", "target": t, "connections": 64, "rps": rps, "p50_ms": p50, "p99_ms": p99, "proxy_cpu_s_per_1k": 0.4}
        for t, rps, p50, p99 in (("direct", 40000, 0.2, 0.7), ("farebox", 3600, 17.0, 42.0))
    ]
    targets = report.summarise({"runs": runs, "ledger": {"rows": 1, "ok": True}}, [64])["targets"]
    assert "added_p50_ms_c1" not in targets and "added_p99_ms_c1" not in targets
    assert targets["farebox_rps_saturation"]["met"] is True


@pytest.mark.redis
def test_redis_call_bench_times_both_ways_of_calling(redis_url: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "redis_call.py"), "--calls", "20", "--rounds", "1", "--redis", redis_url],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    timed = dict(re.findall(r"^\s+(\S.*?)\s{2,}([\d.]+) us", proc.stdout, flags=re.MULTILINE))
    assert set(timed) == {"redis-py evalsha", "ScriptLanes.call"}  # each checked its reply too
    assert all(float(us) > 0 for us in timed.values())


@pytest.mark.slow
def test_ab_compares_a_revision_with_the_working_tree_and_leaves_no_worktree(
    pg_admin_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    def worktrees() -> str:
        return subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True, check=True).stdout

    before = worktrees()
    env = {**os.environ, "FAREBOX_BENCH_LOG_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ab.py"), "--base", "HEAD", "--upstream", "simulator",
         "--rounds", "2", "--requests", "10", "--mode", "chat_stream", "--redis-url", redis_url,
         "--base-env", "FAREBOX_LOG_LEVEL=INFO"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line for line in proc.stdout.splitlines() if line.startswith("| ")}
    assert {"added latency p50, ms", "time to first byte over direct, p50, ms", "proxy CPU per request, ms"} <= set(rows)
    assert "lower in" in rows["proxy CPU per request, ms"] and "of 2 rounds" in rows["proxy CPU per request, ms"]
    assert "Calibration loop" in proc.stdout
    # The setting reached the base alone: its log has INFO lines, the tree's (WARNING) none.
    assert "The base ran with FAREBOX_LOG_LEVEL=INFO." in proc.stdout
    assert '"level": "info"' in (tmp_path / "farebox-base.log").read_text()
    assert '"level": "info"' not in (tmp_path / "farebox-tree.log").read_text()
    assert worktrees() == before  # the base's worktree is gone
