"""Real processes for end-to-end tests: the simulated upstream and Farebox servers.

Each runs as its own OS process (as in production), is polled until it answers, and is
stopped with SIGTERM (or killed, for fault tests). Logs go to files the tests can scan.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout_s: float = 30.0, interval_s: float = 0.05, what: str = "condition") -> Any:
    """Poll until predicate() is truthy; returns its value or fails after timeout_s."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last value: {last!r})")


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL, timeout_s=10)


def _start(name: str, args: list[str], env: dict[str, str], ready: Callable[[], bool], log_dir: Path, timeout_s: float = 60.0) -> subprocess.Popen[bytes]:
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log_path.read_text(errors='replace')[-4000:]}")
        if ready():
            return process
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{name} was not ready in {timeout_s} s:\n{log_path.read_text(errors='replace')[-4000:]}")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def start_simulator(log_dir: Path, *extra: str) -> Proc:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = _start(
        f"simulator-{port}",
        [sys.executable, "-m", "service.simulator", "--host", "127.0.0.1", "--port", str(port), *extra],
        dict(os.environ),
        lambda: _answers(f"{base}/v1/_sim/stats"),
        log_dir,
    )
    return Proc(f"simulator-{port}", process, f"{base}/v1", log_dir / f"simulator-{port}.log")


@dataclass
class FareboxConfig:
    database_url: str
    upstream_url: str
    redis_url: str | None = None
    redis_namespace: str | None = None
    admin_token: str = field(default_factory=lambda: "adm_" + uuid.uuid4().hex)
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self, port: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAREBOX_")}
        env.update(
            FAREBOX_DATABASE_URL=self.database_url,
            FAREBOX_UPSTREAM_URL=self.upstream_url,
            FAREBOX_ADMIN_TOKEN=self.admin_token,
            FAREBOX_PORT=str(port),
            FAREBOX_HOST="127.0.0.1",
            FAREBOX_LOG_LEVEL="INFO",
            FAREBOX_LEDGER_FLUSH_INTERVAL_S="0.02",
        )
        if self.redis_url:
            env["FAREBOX_REDIS_URL"] = self.redis_url
        if self.redis_namespace:
            env["FAREBOX_REDIS_NAMESPACE"] = self.redis_namespace
        env.update(self.extra_env)
        return env


def start_farebox(config: FareboxConfig, log_dir: Path, port: int | None = None) -> Proc:
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    process = _start(
        f"farebox-{port}",
        [sys.executable, "-m", "service", "serve"],
        config.env(port),
        lambda: _answers(f"{base}/readyz"),
        log_dir,
    )
    return Proc(f"farebox-{port}", process, base, log_dir / f"farebox-{port}.log")


class Admin:
    """The admin API, as a platform engineer's script would use it."""

    def __init__(self, base_url: str, token: str) -> None:
        self.http = httpx.Client(base_url=f"{base_url}/admin", headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def team(self, name: str | None = None, **fields: Any) -> dict[str, Any]:
        body = {"name": name or f"team-{uuid.uuid4().hex[:10]}", **fields}
        return self.http.post("/teams", json=body).raise_for_status().json()

    def key(self, team_id: str, **fields: Any) -> dict[str, Any]:
        return self.http.post(f"/teams/{team_id}/keys", json=fields).raise_for_status().json()

    def budget(self, team_id: str, limit_usd: str, period: str = "daily", **fields: Any) -> dict[str, Any]:
        body = {"limit_usd": limit_usd, "period": period, **fields}
        return self.http.post(f"/teams/{team_id}/budgets", json=body).raise_for_status().json()

    def standing(self, team_id: str) -> list[dict[str, Any]]:
        return self.http.get(f"/teams/{team_id}/standing").raise_for_status().json()

    def team_with_key(self, **team_fields: Any) -> tuple[dict[str, Any], str]:
        team = self.team(**team_fields)
        return team, self.key(team["id"])["key"]


class Ledger:
    """Reads the ledger straight from the database, as finance would."""

    def __init__(self, database_url: str) -> None:
        sync_url = database_url.replace("+asyncpg", "+psycopg").replace("+aiosqlite", "")
        self.engine = sa.create_engine(sync_url)

    def rows(self, team_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            result = conn.execute(sa.text("SELECT * FROM ledger WHERE team_id = :t ORDER BY id"), {"t": team_id})
            return [dict(r._mapping) for r in result]

    def wait_rows(self, team_id: str, count: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Poll until the team has at least `count` rows (the writer flushes asynchronously)."""
        wait_until(lambda: len(self.rows(team_id)) >= count, timeout_s, what=f"{count} ledger rows for {team_id}")
        return self.rows(team_id)

    def total(self, team_id: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT COALESCE(SUM(cost_nano), 0) FROM ledger WHERE team_id = :t"), {"t": team_id}).scalar_one())
