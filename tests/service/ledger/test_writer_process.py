"""The dedicated ledger-writer process: `farebox serve` runs one beside its workers (Redis), keeps it
alive, stops it last; `farebox ledger-writer` does the same job on its own (FAREBOX_LEDGER_WRITER=external).
Real serve processes, the official SDK, real Redis and Postgres."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from pydantic import ValidationError

from service.settings import Settings
from tests.harness import ROOT, Admin, FareboxConfig, Ledger, Proc, start_farebox, wait_until

pytestmark = pytest.mark.timeout(180)


def _children(pid: int) -> list[tuple[int, str]]:
    out = subprocess.run(["ps", "-ww", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True, check=False).stdout
    return [(int(line.split(None, 1)[0]), line.split(None, 1)[1]) for line in out.splitlines() if line.strip()]


def _writer_pid(farebox: Proc) -> int | None:
    """The writer is the first process serve spawns (before uvicorn's workers)."""
    spawned = sorted(pid for pid, args in _children(farebox.process.pid) if "spawn_main" in args)
    return spawned[0] if spawned else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _pending_gauge(farebox: Proc) -> float:
    text = httpx.get(f"{farebox.base_url}/metrics", timeout=10).text
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith("farebox_ledger_pending_events "))


def _chat(base_url: str, key: str, n: int) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)
    for _ in range(n):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=5)


@pytest.fixture
def config(new_pg_database: Callable[[str], str], redis_url: str, simulator: Proc) -> FareboxConfig:
    return FareboxConfig(new_pg_database("fbt_writer"), simulator.base_url, redis_url, f"fbt{uuid.uuid4().hex[:10]}")


@dataclass
class Served:
    farebox: Proc
    ledger: Ledger
    team_id: str
    key: str
    writer: int


@pytest.fixture
def served(config: FareboxConfig, log_dir: Path) -> Iterator[Served]:
    """`farebox serve` with Redis (the default writer process), one team and its key."""
    farebox = start_farebox(config, log_dir)
    try:
        team, key = Admin(farebox.base_url, config.admin_token).team_with_key()
        writer = _writer_pid(farebox)
        assert writer is not None, "serve runs no writer process"
        yield Served(farebox, Ledger(config.database_url), team["id"], key, writer)
    finally:
        farebox.stop()


def _policies(pid: int) -> set[int]:
    """The scheduling policy of each of the process's threads."""
    return {os.sched_getscheduler(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


def test_serve_runs_one_writer_restarts_it_and_stops_it_last(served: Served) -> None:
    farebox, ledger, team = served.farebox, served.ledger, served.team_id
    _chat(farebox.base_url, served.key, 5)
    ledger.wait_rows(team, 5)
    # The writer takes only CPU time no request wants; serve and its workers keep the normal policy.
    assert _policies(served.writer) == {os.SCHED_IDLE}
    others = [farebox.process.pid] + [pid for pid, _ in _children(farebox.process.pid) if pid != served.writer]
    assert all(_policies(pid) == {os.SCHED_OTHER} for pid in others)

    # A writer that dies is started again; what was settled meanwhile waits in the outbox.
    os.kill(served.writer, signal.SIGKILL)
    _chat(farebox.base_url, served.key, 5)
    restarted = wait_until(
        lambda: (pid := _writer_pid(farebox)) not in (None, served.writer) and _alive(pid) and pid,
        30, what="a new writer",
    )
    assert len(ledger.wait_rows(team, 10)) == 10
    assert "ledger_writer_exited" in farebox.log()
    assert _policies(restarted) == {os.SCHED_IDLE}

    # SIGTERM: the workers drain, then the writer writes what they settled, then exits.
    _chat(farebox.base_url, served.key, 3)
    assert farebox.stop(signal.SIGTERM) == 0
    assert not _alive(restarted)
    rows = ledger.rows(team)
    assert len(rows) == 13 and len({r["request_id"] for r in rows}) == 13


def test_ctrl_c_leaves_the_writer_to_finish_after_the_workers(served: Served) -> None:
    """Ctrl-C in a terminal reaches every process of the group: the writer must not stop first."""
    os.kill(served.writer, signal.SIGINT)
    _chat(served.farebox.base_url, served.key, 3)
    time.sleep(0.5)
    assert _alive(served.writer)  # ignored: serve stops it, after the workers
    assert len(served.ledger.wait_rows(served.team_id, 3)) == 3
    assert served.farebox.stop(signal.SIGINT) == 0
    assert not _alive(served.writer)


def test_an_orphaned_writer_drains_and_exits(served: Served) -> None:
    _chat(served.farebox.base_url, served.key, 4)
    served.farebox.kill()  # SIGKILL to serve alone (workers=1: it is the only worker)
    wait_until(lambda: not _alive(served.writer), 15, what="the orphaned writer to exit")
    assert len(served.ledger.wait_rows(served.team_id, 4, timeout_s=10)) == 4


def test_external_mode_leaves_the_outbox_to_farebox_ledger_writer(config: FareboxConfig, log_dir: Path) -> None:
    config.extra_env["FAREBOX_LEDGER_WRITER"] = "external"
    farebox = start_farebox(config, log_dir)
    writer: subprocess.Popen[bytes] | None = None
    try:
        admin, ledger = Admin(farebox.base_url, config.admin_token), Ledger(config.database_url)
        team, key = admin.team_with_key()
        assert not [args for _, args in _children(farebox.process.pid) if "spawn_main" in args]
        _chat(farebox.base_url, key, 6)
        time.sleep(1.0)  # 50 of the test config's flush intervals
        assert ledger.rows(team["id"]) == []  # settled into the outbox, written by nobody yet
        # The backlog gauge counts the outbox whichever process drains it (the alerts rely on it).
        assert _pending_gauge(farebox) == 6

        with open(log_dir / "ledger-writer.log", "ab") as log:
            writer = subprocess.Popen(
                [sys.executable, "-m", "service", "ledger-writer"], env=config.env(0), cwd=ROOT,
                stdout=log, stderr=subprocess.STDOUT,
            )
        assert len(ledger.wait_rows(team["id"], 6)) == 6
        wait_until(lambda: _pending_gauge(farebox) == 0, 10, what="the backlog gauge back at 0")
        writer.send_signal(signal.SIGTERM)
        assert writer.wait(30) == 0
    finally:
        if writer is not None and writer.poll() is None:
            writer.kill()
        farebox.stop()


def test_workers_drain_the_outbox_themselves_when_it_falls_far_behind(config: FareboxConfig, log_dir: Path) -> None:
    """No writer at all (external, none running): below FAREBOX_LEDGER_HELP_BACKLOG the charges
    wait in the outbox; above it the workers write them, and stop once it is back under."""
    config.extra_env.update({"FAREBOX_LEDGER_WRITER": "external", "FAREBOX_LEDGER_HELP_BACKLOG": "5"})
    farebox = start_farebox(config, log_dir)
    try:
        admin, ledger = Admin(farebox.base_url, config.admin_token), Ledger(config.database_url)
        team, key = admin.team_with_key()
        _chat(farebox.base_url, key, 5)
        time.sleep(2.5)  # more than two of the workers' one-second looks at the backlog
        assert ledger.rows(team["id"]) == []
        assert _pending_gauge(farebox) == 5

        _chat(farebox.base_url, key, 3)  # 8 > 5: far behind
        assert len(ledger.wait_rows(team["id"], 8)) == 8
        wait_until(lambda: _pending_gauge(farebox) == 0, 10, what="the backlog gauge back at 0")
        assert "ledger outbox far behind; this worker drains it too" in farebox.log()
        wait_until(lambda: "ledger outbox caught up" in farebox.log(), 10, what="the workers to stop draining")

        _chat(farebox.base_url, key, 2)  # back under the threshold: left to the writer again
        time.sleep(2.5)
        assert len(ledger.rows(team["id"])) == 8
        assert _pending_gauge(farebox) == 2
    finally:
        farebox.stop()


def test_process_or_external_writer_without_redis_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAREBOX_REDIS_URL", raising=False)
    for mode in ("process", "external"):
        with pytest.raises(ValidationError, match="needs FAREBOX_REDIS_URL"):
            Settings(ledger_writer=mode)
    assert Settings(ledger_writer="auto").ledger_writer_inline  # the in-process store drains in-process
    assert not Settings(ledger_writer="auto").ledger_writer_process
    assert Settings(ledger_writer="auto", redis_url="redis://x").ledger_writer_process


@pytest.mark.parametrize("command", ["serve", "ledger-writer"])
def test_the_commands_refuse_a_writer_without_redis_in_one_clear_line(command: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAREBOX_")}
    env.update(FAREBOX_LEDGER_WRITER="process", FAREBOX_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'f.db'}")
    done = subprocess.run(
        [sys.executable, "-m", "service", command], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "needs FAREBOX_REDIS_URL" in " ".join(done.stdout.split()) and "Traceback" not in done.stderr
