"""Private PostgreSQL and Redis servers a fault test may stop, kill and restart.

The machine's shared servers (5432, 6379) serve every engineer's tests at once, so outages are
caused only on these: each runs on a free port, from a temporary directory, as a child process.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import psycopg
import redis

from tests.harness import free_port, wait_until


def _postgres_bin(name: str) -> str:
    """Debian's versioned binaries (not on PATH), else whatever PATH has."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed")
    return path


def postgres_installed() -> bool:
    return all(glob.glob(f"/usr/lib/postgresql/*/bin/{n}") or shutil.which(n) for n in ("initdb", "postgres"))


def _run_as() -> str | None:
    """Postgres refuses to run as root: as root, run it as the `postgres` user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise RuntimeError("running as root needs a 'postgres' user to run a private PostgreSQL") from exc
    return "postgres"


def _owned_tempdir(prefix: str, user: str | None) -> Path:
    # Directly under /tmp: pytest's own temp dirs are 0700 root, which the postgres user cannot enter.
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if user is not None:
        shutil.chown(path, user, user)
    return path


class PostgresTemplate:
    """One initdb per session; every private server starts from a copy of it (initdb takes seconds)."""

    def __init__(self) -> None:
        self.user = _run_as()
        self.root = _owned_tempdir("fbt-pgtpl-", self.user)
        self.data = self.root / "data"
        subprocess.run(
            [_postgres_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
             "-E", "UTF8", "--no-sync", "--no-instructions"],
            check=True, capture_output=True, user=self.user, group=self.user,
        )

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class PrivatePostgres:
    """A PostgreSQL server of this test's own: start(), stop() (fast shutdown), kill(), pause()/resume()."""

    def __init__(self, template: PostgresTemplate, database: str = "farebox") -> None:
        self.user = template.user
        self.root = _owned_tempdir("fbt-pg-", self.user)
        self.data = self.root / "data"
        subprocess.run(["cp", "-a", str(template.data), str(self.data)], check=True)
        self.port = free_port()
        self.database = database
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.root / "postgres.log"
        self._created = False

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    @property
    def url(self) -> str:
        """The SQLAlchemy URL Farebox takes (asyncpg)."""
        return self.dsn.replace("postgresql://", "postgresql+asyncpg://")

    def start(self) -> None:
        if self.running:
            return
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [_postgres_bin("postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-k", str(self.root), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=200"],
                stdout=log, stderr=subprocess.STDOUT, user=self.user, group=self.user,
                start_new_session=True,  # kill() reaches every backend through the process group
            )
        wait_until(self._answers, 30, what=f"private PostgreSQL on {self.port}")
        if not self._created:
            admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.database}"')
            self._created = True

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"private PostgreSQL exited: {self.log_path.read_text(errors='replace')[-2000:]}")
        try:
            with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", connect_timeout=1):
                return True
        except psycopg.OperationalError:
            return False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Fast shutdown: open transactions abort, connections drop, new ones are refused."""
        self._signal(signal.SIGINT)

    def kill(self) -> None:
        """SIGKILL to the postmaster and every backend: a crash, recovered from the WAL on start()."""
        if self.running:
            assert self.process is not None
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def pause(self) -> None:
        """Freeze every backend: connections stay open but nothing answers (a hung database)."""
        if self.running:
            assert self.process is not None
            os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.running:
            assert self.process is not None
            os.killpg(self.process.pid, signal.SIGCONT)

    def _signal(self, sig: int) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def close(self) -> None:
        self.resume()
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """A Redis server of this test's own, on a free port; restarts keep the port.

    appendonly=True runs it as deploy/docker-compose.yml does (AOF), so a restart keeps the
    outbox and the counters; without it a restart loses everything, like a fresh replica.
    """

    def __init__(self, *, appendonly: bool = False) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="fbt-redis-"))
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> None:
        if self.running:
            return
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.appendonly else ["--appendonly", "no"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--dir", str(self.dir), "--daemonize", "no", *persistence],
                stdout=log, stderr=subprocess.STDOUT,
            )
        wait_until(self._answers, 20, what=f"private Redis on {self.port}")

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"private Redis exited: {self.log_path.read_text(errors='replace')[-2000:]}")
        try:
            with self.client() as c:
                return bool(c.ping())
        except redis.RedisError:
            return False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM: Redis shuts down cleanly (and flushes its AOF when it keeps one)."""
        if self.running:
            assert self.process is not None
            self.process.terminate()
            self.process.wait(20)

    def kill(self) -> None:
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait(10)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

