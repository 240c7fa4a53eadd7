"""Liveness and readiness as a Kubernetes probe sees them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from service.db.migrate import upgrade
from tests.harness import FareboxConfig, ROOT, free_port, wait_until


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None


def test_not_ready_until_the_schema_is_migrated(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'farebox.db'}"
    port = free_port()
    config = FareboxConfig(db, "http://127.0.0.1:9/v1", extra_env={"FAREBOX_AUTO_MIGRATE": "false"})
    proc = subprocess.Popen([sys.executable, "-m", "service", "serve"], env=config.env(port), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        live = wait_until(lambda: _get(f"{base}/healthz"), 60, what="liveness")
        assert live.status_code == 200
        ready = _get(f"{base}/readyz")
        assert ready is not None and ready.status_code == 503 and not ready.json()["ready"]
        upgrade(db)  # what the migration Job does
        assert wait_until(lambda: (r := _get(f"{base}/readyz")) is not None and r.status_code == 200, 10, what="ready")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
