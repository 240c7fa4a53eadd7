"""The processes a benchmark run needs: a fixed-answer upstream, Farebox, its database and namespace.

Everything here is started fresh for one run and removed afterwards: the nginx prefix, the
Postgres database, the Redis keys under the run's namespace, the metrics directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from procstat import tree

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
FIXTURES = BENCH / "fixtures"
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DIRECT_KEY = "sk-bench-direct"
STREAM_HEADER = "X-Bench-Stream"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(
    check,
    timeout_s: float,
    what: str,
    process: subprocess.Popen | None = None,
    log: Path | None = None,
) -> None:  # type: ignore[no-untyped-def]
    """Poll check() until it is true; fail early if the process it waits for died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{tail}")
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} was not ready after {timeout_s:.0f} s")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _processes(workers: int) -> int:
    """uvicorn serves in its own process for one worker, and spawns them beside a supervisor for more."""
    return 1 + workers if workers > 1 else 1


def _stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class Upstream:
    """A running fixed-answer upstream: direct_url for measurements, metered_url for Farebox."""

    kind: str
    version: str
    process: subprocess.Popen
    direct_url: str
    metered_url: str
    workdir: Path
    metered_log: Path | None = None

    def answered(self) -> int | None:
        """Successful answers the metered server gave (nginx only; None when it cannot say)."""
        if self.metered_log is None:
            return None
        # nginx flushes its buffered log on USR1 (reopen), so the count is complete.
        self.process.send_signal(signal.SIGUSR1)
        time.sleep(0.3)
        with open(self.metered_log, "rb") as f:
            return sum(1 for line in f if line.startswith(b"2"))

    def stop(self) -> None:
        _stop(self.process)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _nginx_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def _nginx_body(name: str, body: bytes) -> tuple[str, str]:
    """Map definitions holding body in parts, and the value that joins them.

    nginx caps one config token at 4 KB, so a longer answer is split over several variables;
    maps are constants evaluated only when used, so this costs a request nothing.
    """
    text = body.decode()
    if "$" in text:
        raise ValueError("an nginx return body cannot hold '$' (it would be read as a variable)")
    parts = [text[i : i + 3000] for i in range(0, len(text), 3000)]
    maps = "\n".join(
        f'    map "" ${name}_{i} {{ default {_nginx_string(part)}; }}'
        for i, part in enumerate(parts)
    )
    return maps, '"' + "".join(f"${name}_{i}" for i in range(len(parts))) + '"'


def _nginx_http_blocks() -> tuple[str, str]:
    """The map definitions (http context) and the locations every server repeats."""
    chat_maps, chat = _nginx_body("bench_chat", (FIXTURES / "chat_completion.json").read_bytes())
    sse_maps, stream = _nginx_body("bench_sse", (FIXTURES / "chat_stream.sse").read_bytes())
    locations = f"""
        location = /v1/chat/completions {{
            if ($http_x_bench_stream) {{ rewrite ^ /_bench/stream last; }}
            default_type application/json;
            add_header x-request-id req_bench_fixed;
            return 200 {chat};
        }}
        location = /_bench/stream {{
            internal;
            default_type text/event-stream;
            add_header x-request-id req_bench_fixed;
            add_header cache-control no-cache;
            return 200 {stream};
        }}
        location / {{
            return 404;
        }}"""
    return chat_maps + "\n" + sse_maps, locations


def start_nginx() -> Upstream:
    prefix = Path(tempfile.mkdtemp(prefix="farebox-bench-nginx-"))
    (prefix / "tmp").mkdir()
    direct, metered = free_port(), free_port()
    conf = (BENCH / "nginx.conf.template").read_text()
    maps, locations = _nginx_http_blocks()
    conf = (
        conf.replace("@PREFIX@", str(prefix))
        .replace("@DIRECT_PORT@", str(direct))
        .replace("@METERED_PORT@", str(metered))
        .replace("@MAPS@", maps)
        .replace("@LOCATIONS@", locations)
    )
    (prefix / "nginx.conf").write_text(conf)
    log = prefix / "error.log"
    version = subprocess.run(
        ["nginx", "-v"], capture_output=True, text=True, check=False
    ).stderr.strip()
    process = subprocess.Popen(
        ["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    wait_for(lambda: _port_open(direct) and _port_open(metered), 15, "nginx", process, log)
    return Upstream(
        "nginx",
        version,
        process,
        f"http://127.0.0.1:{direct}/v1",
        f"http://127.0.0.1:{metered}/v1",
        prefix,
        metered_log=prefix / "metered.log",
    )


def start_simulator() -> Upstream:
    """Farebox's own simulated OpenAI API in --fast mode (one process serves both roles)."""
    workdir = Path(tempfile.mkdtemp(prefix="farebox-bench-sim-"))
    port = free_port()
    log = workdir / "simulator.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service.simulator",
                "--fast",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    wait_for(lambda: _answers(f"{url}/_sim/stats"), 60, "simulator", process, log)
    return Upstream("simulator", "service.simulator --fast", process, url, url, workdir)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


class Database:
    """A fresh Postgres database for one run, dropped (with its connections) at the end."""

    def __init__(self) -> None:
        self.name = f"fbbench_{uuid.uuid4().hex[:12]}"
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{self.name}"

    def create(self) -> Database:
        import psycopg

        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        return self

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def ledger_counts(self, team_id: str) -> dict[str, int]:
        """Rows, distinct request ids and rows per status for one team."""
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{self.name}") as conn:
            rows, distinct = conn.execute(
                "SELECT count(*), count(DISTINCT request_id) FROM ledger WHERE team_id = %s",
                (team_id,),
            ).fetchone()
            by_status = dict(
                conn.execute(
                    "SELECT status, count(*) FROM ledger WHERE team_id = %s GROUP BY status",
                    (team_id,),
                ).fetchall()
            )
        return {
            "rows": rows,
            "distinct_request_ids": distinct,
            **{f"status_{k}": v for k, v in by_status.items()},
        }


def drop_namespace(redis_url: str, namespace: str) -> int:
    """Delete every Redis key of the run's namespace (never anything else)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    deleted = 0
    try:
        batch = []
        for key in client.scan_iter(match=f"{namespace}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += client.delete(*batch)
                batch = []
        if batch:
            deleted += client.delete(*batch)
    finally:
        client.close()
    return deleted


@dataclass
class Farebox:
    """`python -m service serve` in production configuration, and the key it was set up with."""

    process: subprocess.Popen
    base_url: str
    admin_token: str
    log: Path
    metrics_dir: Path
    namespace: str = ""
    team_id: str = ""
    key: str = ""
    budgets: list[str] = field(default_factory=list)

    @property
    def v1(self) -> str:
        return f"{self.base_url}/v1"

    def setup_team(self, limit_usd: str = "5000000") -> None:
        """One team, one key, a team budget and a key budget far too large to ever refuse."""
        with httpx.Client(
            base_url=f"{self.base_url}/admin",
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=30,
        ) as http:

            def post(path: str, body: dict[str, object]) -> dict[str, object]:
                response = http.post(path, json=body)
                if response.status_code >= 400:
                    raise RuntimeError(
                        f"POST /admin{path} answered {response.status_code}: {response.text}"
                    )
                return response.json()

            self.team_id = str(post("/teams", {"name": f"bench-{uuid.uuid4().hex[:8]}"})["id"])
            key = post(f"/teams/{self.team_id}/keys", {})
            self.key = str(key["key"])
            for body in (
                {"limit_usd": limit_usd, "period": "monthly"},
                {"limit_usd": limit_usd, "period": "daily", "key_id": key["id"]},
            ):
                self.budgets.append(str(post(f"/teams/{self.team_id}/budgets", body)["id"]))

    def stop(self) -> int:
        _stop(self.process, timeout_s=60)
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        return self.process.returncode


@dataclass
class FloorRelay:
    """bench/floor_relay.py running: the bare relay Farebox's overhead is compared with."""

    process: subprocess.Popen
    v1: str
    namespace: str

    def stop(self) -> None:
        _stop(self.process)


def start_floor(
    upstream_url: str, redis_url: str, namespace: str, workers: int, log_dir: Path
) -> FloorRelay:
    port = free_port()
    log = log_dir / "floor_relay.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                str(BENCH / "floor_relay.py"),
                "--port",
                str(port),
                "--upstream",
                upstream_url,
                "--redis",
                redis_url,
                "--namespace",
                namespace,
                "--workers",
                str(workers),
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    relay = FloorRelay(process, f"http://127.0.0.1:{port}/v1", namespace)
    try:
        wait_for(lambda: _port_open(port), 60, "floor relay", process, log)
        wait_for(
            lambda: len(tree(process.pid)) >= _processes(workers),
            60,
            "floor relay workers",
            process,
            log,
        )
    except BaseException:
        relay.stop()
        raise
    return relay


def start_farebox(
    upstream_url: str,
    database_url: str,
    redis_url: str,
    namespace: str,
    workers: int,
    log_dir: Path,
    extra_env: dict[str, str] | None = None,
    *,
    root: Path = ROOT,
    python: str = sys.executable,
    log_name: str = "farebox.log",
) -> Farebox:
    """`serve` from the checkout at `root` on `python` (bench/ab.py passes another revision's
    worktree, or another venv's interpreter)."""
    port = free_port()
    token = "adm_" + uuid.uuid4().hex
    metrics_dir = Path(tempfile.mkdtemp(prefix="farebox-bench-metrics-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAREBOX_")}
    env.update(
        FAREBOX_HOST="127.0.0.1",
        FAREBOX_PORT=str(port),
        FAREBOX_WORKERS=str(workers),
        FAREBOX_UPSTREAM_URL=upstream_url,
        FAREBOX_DATABASE_URL=database_url,
        FAREBOX_REDIS_URL=redis_url,
        FAREBOX_REDIS_NAMESPACE=namespace,
        FAREBOX_ADMIN_TOKEN=token,
        FAREBOX_METRICS_ENABLED="true",
        FAREBOX_LOG_LEVEL="WARNING",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    env.update(extra_env or {})
    log = log_dir / log_name
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [python, "-m", "service", "serve"],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    fb = Farebox(process, base, token, log, metrics_dir, namespace)
    try:
        wait_for(lambda: _answers(f"{base}/readyz"), 90, "farebox", process, log)
        # Every worker must be up before measuring: readiness answers as soon as one is.
        wait_for(
            lambda: len(tree(process.pid)) >= _processes(workers),
            60,
            "farebox workers",
            process,
            log,
        )
    except BaseException:
        fb.stop()
        raise
    return fb


def writer_pid(serve_pid: int) -> int:
    """The ledger writer: the first process `serve` spawned (it starts before uvicorn's workers)."""
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == serve_pid and b"spawn_main" in cmdline:
            kids.append((int(fields[19]), int(entry.name)))  # (start time, pid)
    if not kids:
        raise RuntimeError("no ledger-writer process under serve (is FAREBOX_LEDGER_WRITER inline?)")
    return min(kids)[1]


def start_stack(
    cleanup: ExitStack,
    *,
    redis_url: str,
    workers: int,
    log_dir: Path,
    prefix: str = "fbbench",
    extra_env: dict[str, str] | None = None,
    upstream_kind: str = "nginx",
) -> tuple[Upstream, Database, Farebox]:
    """Upstream, a fresh database and Farebox with one team set up; `cleanup` undoes it all."""
    upstream = start_nginx() if upstream_kind == "nginx" else start_simulator()
    cleanup.callback(upstream.stop)
    db = Database().create()
    cleanup.callback(db.drop)
    namespace = f"{prefix}{uuid.uuid4().hex[:10]}"
    cleanup.callback(drop_namespace, redis_url, namespace)
    farebox = start_farebox(upstream.metered_url, db.url, redis_url, namespace, workers, log_dir, extra_env)
    cleanup.callback(farebox.stop)
    farebox.setup_team()
    return upstream, db, farebox
