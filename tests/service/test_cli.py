"""The `farebox` CLI: the admin operations straight on the database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service import cli as cli_module
from service.cli import app
from service.db.migrate import upgrade


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[CliRunner, Path]:
    db = tmp_path / "farebox.db"
    url = f"sqlite+aiosqlite:///{db}"
    upgrade(url)
    for name in ("FAREBOX_REDIS_URL", "FAREBOX_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FAREBOX_DATABASE_URL", url)
    monkeypatch.setenv("COLUMNS", "200")
    # The CLI's console was made at import, when COLUMNS may not have been set yet (under xdist
    # it was not): wide enough that rich never cuts a table cell.
    monkeypatch.setattr(cli_module.console, "width", 200)
    return CliRunner(), db


def _ok(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_teams_keys_and_budgets_from_the_cli(cli: tuple[CliRunner, Path]) -> None:
    runner, db = cli
    assert "team research created" in _ok(runner, "teams", "create", "research")
    assert "research" in _ok(runner, "teams", "list")

    out = _ok(runner, "keys", "create", "research", "--name", "notebook")
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("fbk_") and len(secret) > 40
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT id, key_hash, prefix FROM api_keys").fetchall()
    assert len(stored) == 1 and secret not in str(stored) and stored[0][2] == secret[:12]
    key_id = stored[0][0]

    assert "budget" in _ok(runner, "budgets", "set", "research", "--limit", "50", "--period", "daily", "--name", "day")
    _ok(runner, "budgets", "set", "research", "--limit", "12.5", "--period", "monthly", "--kind", "training")
    listing = _ok(runner, "budgets", "list", "research")
    assert "50.000000000" in listing and "12.500000000" in listing and "training" in listing
    standing = _ok(runner, "budgets", "standing", "research")
    assert "day" in standing and "0.000000000" in standing

    assert "2 counters of 1 teams rebuilt from the ledger" in _ok(runner, "counters", "rebuild")

    assert "revoked" in _ok(runner, "keys", "revoke", key_id)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT revoked_at FROM api_keys").fetchone()[0] is not None


def test_cli_errors_are_clear_and_exit_non_zero(cli: tuple[CliRunner, Path]) -> None:
    runner, _ = cli
    result = runner.invoke(app, ["keys", "create", "nobody"])
    assert result.exit_code == 1 and "No team 'nobody'" in result.output
    _ok(runner, "teams", "create", "dup")
    result = runner.invoke(app, ["teams", "create", "dup"])
    assert result.exit_code == 1 and "already exists" in result.output
    result = runner.invoke(app, ["budgets", "set", "dup", "--limit", "0.0000000001", "--period", "daily"])
    assert result.exit_code != 0
