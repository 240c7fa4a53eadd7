"""The dedicated ledger-writer process: drains the Redis outbox into the ledger off the request path.

Workers settle a charge by appending it to the outbox in the same Lua call that moves the money
(service/budgets). With `FAREBOX_LEDGER_WRITER=process` (the default with Redis), `farebox serve`
runs one of these beside its workers, so no ledger insert ever runs on a request's event loop;
with `external`, run `farebox ledger-writer` yourself (any number of them: they share a Redis
consumer group, and an entry is acked only after its row is committed).

The writer runs under SCHED_IDLE (FAREBOX_LEDGER_WRITER_IDLE), so a request's task never waits for it
to give up a CPU; workers drain the outbox themselves if it falls far behind.

`WriterSupervisor` is what `farebox serve` uses: it starts the process, restarts it (with
back-off) if it dies, and stops it after the workers, so what they settled while draining is
written too.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import os
import signal
import threading
import time
from typing import Any

import structlog

from service.settings import Settings

log = structlog.get_logger(__name__)

PARENT_CHECK_INTERVAL_S = 0.5
PRUNE_INTERVAL_S = 3600.0  # how often the writer forgets outbox readers long gone


async def run_writer(settings: Settings, *, parent_pid: int | None = None) -> int:
    """Drain the outbox until SIGTERM/SIGINT (or the parent's death); returns events left unwritten."""
    import redis.asyncio as redis

    from service import metrics
    from service.budgets.redis_store import RedisBudgetStore
    from service.change_bus import ChangeBus
    from service.db.engine import make_engine, make_sessions
    from service.ledger.writer import LedgerWriter, TeamIdsFromDb

    if not settings.redis_url:
        raise ValueError("the ledger-writer process drains the Redis outbox: set FAREBOX_REDIS_URL")
    if settings.ledger_writer_idle:
        take_idle_cpu_only()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Under serve (parent_pid), Ctrl-C reaches the whole process group; the supervisor stops this
    # process after the workers with SIGTERM, so SIGINT stays ignored (see _child_main).
    for sig in (signal.SIGTERM,) if parent_pid else (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    engine = make_engine(settings.database_url)
    sessions = make_sessions(engine)
    client = redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=2.0, socket_timeout=5.0, health_check_interval=30,
    )
    store = RedisBudgetStore(client, namespace=settings.redis_namespace)
    team_ids = TeamIdsFromDb(sessions)
    # A new team's outbox is read at once, not after the team list's TTL.
    bus = ChangeBus(client, channel=f"{settings.redis_namespace}:changes")
    bus.subscribe(lambda message: team_ids.forget() if message.get("type") == "team_changed" else None)
    writer = LedgerWriter(
        store,
        sessions,
        team_ids=team_ids,
        batch_size=settings.ledger_batch_size,
        flush_interval_s=settings.ledger_flush_interval_s,
        on_written=lambda request_ids: metrics.record_ledger_written(len(request_ids)),
    )
    gc.collect()
    gc.freeze()  # what exists now lives as long as the process: keep it out of every collection
    await bus.start()
    await writer.start()
    log.info("ledger_writer_started", pid=os.getpid(), consumer=store.consumer)
    watch = asyncio.create_task(_watch_parent(parent_pid, stop)) if parent_pid else None
    prune = asyncio.create_task(_prune_consumers(store, team_ids))
    try:
        await stop.wait()
    finally:
        prune.cancel()
        if watch is not None:
            watch.cancel()
        await bus.stop()
        left = await writer.stop(drain=True, timeout_s=settings.drain_grace_s)
        with contextlib.suppress(Exception):
            await client.aclose()
        await engine.dispose()
        metrics.process_exiting()
        log.info("ledger_writer_stopped", pid=os.getpid(), unwritten=left)
    return left


def take_idle_cpu_only() -> bool:
    """Put every thread of this process under SCHED_IDLE (Linux): it then runs only on CPU time no
    other task wants, and a woken request task preempts it at once instead of waiting out its time
    slice (1.4 ms on the benchmark machine's kernel, in practice until the next 4 ms tick). `nice`
    cannot do that: a niced task keeps its slice once it runs. No privilege is needed, and it
    cannot be undone without one, which is why workers step in if the writer falls far behind
    (ledger_help_backlog)."""
    if not hasattr(os, "SCHED_IDLE"):  # not Linux
        log.info("ledger_writer_idle_unsupported", platform=os.name)
        return False
    try:
        for tid in os.listdir("/proc/self/task"):
            os.sched_setscheduler(int(tid), os.SCHED_IDLE, os.sched_param(0))
    except OSError as exc:
        log.warning("ledger_writer_idle_refused", error=str(exc))
        return False
    return True


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    """An orphaned writer (its `serve` was SIGKILLed) drains and exits; the next serve starts another."""
    while os.getppid() == parent_pid:
        await asyncio.sleep(PARENT_CHECK_INTERVAL_S)
    log.warning("ledger_writer_orphaned", parent_pid=parent_pid)
    stop.set()


async def _prune_consumers(store: Any, team_ids: Any) -> None:
    """Each process lifetime joins every outbox group under a new name; drop the idle, empty ones."""
    while True:
        try:
            removed = await store.prune_consumers(await team_ids())
            if removed:
                log.info("outbox_consumers_pruned", removed=removed)
        except Exception as exc:  # Redis or Postgres away: the next round tries again
            log.warning("outbox_consumer_prune_failed", error=str(exc))
        await asyncio.sleep(PRUNE_INTERVAL_S)


def _child_main(parent_pid: int) -> None:
    """Entry point of the process WriterSupervisor spawns (a fresh interpreter: settings re-read)."""
    import uvloop

    from service.logging import configure_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # see run_writer: serve stops it after the workers
    settings = Settings()
    configure_logging(settings)
    left = uvloop.run(run_writer(settings, parent_pid=parent_pid))
    raise SystemExit(1 if left else 0)


class WriterSupervisor:
    """Keeps one ledger-writer process alive beside `farebox serve`'s workers."""

    def __init__(self, settings: Settings, restart_max_s: float = 30.0) -> None:
        self._settings = settings
        self._restart_max_s = restart_max_s
        self._ctx = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._spawned_at = 0.0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._spawn()
        self._thread = threading.Thread(target=self._watch, name="ledger-writer-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> int | None:
        """SIGTERM the writer (it drains first) and wait for it; returns its exit code."""
        with self._lock:  # no restart can slip in after this
            self._stopping.set()
            process = self._process
        if process is None:
            return None
        if process.is_alive():
            os.kill(process.pid, signal.SIGTERM)
        process.join(self._settings.drain_grace_s + 10)
        if process.is_alive():
            log.error("ledger_writer_did_not_stop; killing it (its outbox entries stay for the next writer)")
            process.kill()
            process.join(5)
        if self._thread is not None:
            self._thread.join(2)
        return process.exitcode

    def _spawn(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            self._process = self._ctx.Process(
                target=_child_main, args=(os.getpid(),), name="farebox-ledger-writer",
            )
            self._process.start()
            self._spawned_at = time.monotonic()

    def _watch(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            self._process.join(0.5)
            if self._process.is_alive() or self._stopping.is_set():
                continue
            if time.monotonic() - self._spawned_at > 60:
                delay = 1.0  # it ran a while: not a crash loop
            log.error(
                "ledger_writer_exited; restarting it (settled charges wait in the outbox meanwhile)",
                exitcode=self._process.exitcode, retry_in_s=delay,
            )
            if self._stopping.wait(delay):
                return
            self._spawn()
            delay = min(self._restart_max_s, delay * 2)
