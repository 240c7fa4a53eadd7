"""The README's first command: `farebox demo` starts everything and shows it working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import free_port


@pytest.mark.timeout(180)
def test_demo_walkthrough_runs_on_a_bare_machine(tmp_path: Path) -> None:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("FAREBOX_")}
    env["COLUMNS"] = "200"
    result = subprocess.run(
        [sys.executable, "-m", "service", "demo", "--exit", "--port", str(free_port())],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=170,
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr[-3000:] + out[-3000:]
    assert "forwarding to the simulated upstream" in out
    assert "chat.completions  ->" in out and "streamed chat" in out and "embeddings" in out
    assert "429 budget_exceeded" in out and "demo daily" in out
    assert "api_key=\"fbk_" in out
    # The embedded default: a SQLite ledger in the working directory, nothing else needed.
    assert (tmp_path / "var" / "demo" / "farebox.db").exists()
