"""The ledger writer: drains the budget store's outbox into the ledger, exactly once per request id.

An outbox entry is acked only after its row is committed, so a crash or a database outage
leaves it in the outbox to be delivered again; the insert is idempotent, so delivering it
again changes nothing.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import structlog
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import metrics
from service.budgets.store import OutboxEntry, OutboxPosition
from service.db.models import Team
from service.ledger.entries import write_encoded, write_events
from service.ledger.event import ChargeEvent

__all__ = ["LedgerWriter", "Outbox", "TeamIdsFromDb", "write_events"]

log = structlog.get_logger(__name__)

TeamIds = Callable[[], Awaitable[Sequence[str]]]
OnWritten = Callable[[list[str]], Any]  # the request ids just written


class Outbox(Protocol):
    """The part of a BudgetStore the writer uses."""

    async def read_outbox(self, team_ids: Sequence[str], count: int) -> list[OutboxEntry]: ...

    async def ack_outbox(self, entries: Sequence[OutboxEntry]) -> None: ...

    async def outbox_backlog(self, team_ids: Sequence[str]) -> int: ...


HELP_CHECK_INTERVAL_S = 1.0  # how often a writer that leaves the outbox to another looks at its size


class TeamIdsFromDb:
    """The ids in the teams table, re-read at most every ttl_s; the last answer while the database is down."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], ttl_s: float = 5.0) -> None:
        self._sessions = sessions
        self._ttl_s = ttl_s
        self._ids: list[str] | None = None
        self._read_at = 0.0

    def forget(self) -> None:
        """Re-read on the next call (a team was added): its charges are written without waiting ttl_s."""
        self._read_at = 0.0

    async def __call__(self) -> Sequence[str]:
        if self._ids is not None and time.monotonic() - self._read_at < self._ttl_s:
            return self._ids
        try:
            async with self._sessions() as session:
                ids = list((await session.execute(select(Team.id))).scalars())
        except Exception:
            if self._ids is None:
                raise
            return self._ids  # the database is down, so nothing could be written anyway
        self._ids, self._read_at = ids, time.monotonic()
        return ids


class _Backoff:
    """Exponential delays with jitter, so replicas do not retry in lock-step."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self._initial_s, self._max_s = initial_s, max_s
        self._next_s = initial_s

    def next(self) -> float:
        delay = self._next_s
        self._next_s = min(self._max_s, self._next_s * 2)
        return min(self._max_s, delay * random.uniform(0.8, 1.2))

    def reset(self) -> None:
        self._next_s = self._initial_s


class LedgerWriter:
    """Writes settled charges to the ledger in batches; never drops one, retries while the database is down."""

    def __init__(
        self,
        store: Outbox,
        sessions: async_sessionmaker[AsyncSession],
        *,
        team_ids: TeamIds | None = None,
        batch_size: int = 500,
        flush_interval_s: float = 0.05,
        on_written: OnWritten | None = None,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        read_outbox: bool = True,
        help_backlog: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._store = store
        self._sessions = sessions
        self._team_ids: TeamIds = team_ids or TeamIdsFromDb(sessions)
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._on_written = on_written
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        # False when another process (`farebox ledger-writer`) drains the outbox: the loop then
        # writes only this process's direct charges, and reads the outbox only when draining.
        self._read_outbox = read_outbox
        # With read_outbox False: read it anyway while it holds more than this (0: never), because
        # the process that drains it is starved or gone and the ledger would fall ever further behind.
        self._help_backlog = help_backlog
        self._helping = False
        self._help_checked_at = float("-inf")
        # Read from the outbox but not yet committed and acked: retried before anything new is read.
        self._held: list[OutboxEntry] = []
        # Fail-open charges that never reached the outbox; only this process holds them.
        self._direct: deque[ChargeEvent] = deque()
        # Events the database rejects while it answers (bad data). Outbox ones stay unacked in
        # the store, which delivers them again; direct ones have no other home than this list.
        self._rejected_direct: list[ChargeEvent] = []
        self._rejected_entries: set[str] = set()
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Failed loop cycles in a row (0 while healthy): for readiness checks and metrics.
        self.consecutive_failures = 0

    @property
    def pending_estimate(self) -> int:
        """Events this process holds that are not in the ledger yet (the outbox may hold more)."""
        return len(self._held) + len(self._direct) + len(self._rejected_direct)

    @property
    def direct_backlog(self) -> int:
        """Charges with no outbox entry (fail-open) that this process has still to write."""
        return len(self._direct)

    @property
    def rejected(self) -> int:
        """Events the database refused as data (not outages); logged with their full content."""
        return len(self._rejected_entries) + len(self._rejected_direct)

    async def start(self) -> None:
        """Start the background loop (idempotent)."""
        if self._task is None or self._task.done():
            self._stop.clear()
            self._task = asyncio.create_task(self._run(), name="ledger-writer")

    async def stop(self, drain: bool = True, timeout_s: float = 30.0) -> int:
        """Stop the loop; with drain, first write everything readable. Returns events left unwritten here."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), max(0.0, deadline - loop.time()))
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if drain:
            await self._drain(deadline)
        left = self.pending_estimate
        if left:
            log.error("ledger writer stopped with events not written", events=left)
        return left

    async def flush_once(self, outbox: bool = True) -> int:
        """Write one batch of direct events and (with outbox) one from the outbox; returns how many.

        Raises when the database (or the store) is unavailable; nothing is lost, the events stay held.
        """
        async with self._lock:
            handled = await self._flush_direct()
            if outbox or self._held:
                handled += await self._flush_outbox()
            return handled

    async def write_direct(self, events: Sequence[ChargeEvent]) -> list[str]:
        """Write events straight to the ledger (fail-open path), idempotently; raises if the database is down."""
        return await self._write([ev.to_bytes() for ev in events])

    def submit_direct(self, event: ChargeEvent) -> None:
        """Queue an event that has no outbox entry; the loop writes it, retrying while the database is down."""
        self._direct.append(event)
        self._wake.set()

    async def _run(self) -> None:
        backoff = _Backoff(self._backoff_initial_s, self._backoff_max_s)
        while not self._stop.is_set():
            self._wake.clear()
            try:
                handled = await self.flush_once(outbox=self._read_outbox or await self._far_behind())
            except Exception as exc:
                self.consecutive_failures += 1
                metrics.record_ledger_write_error()
                delay = backoff.next()
                log.warning(
                    "ledger write failed; events kept for retry",
                    error=repr(exc),
                    retry_in_s=round(delay, 3),
                    pending=self.pending_estimate,
                )
                # Only stop interrupts a back-off; new events must not hammer a database that is down.
                await _wait(self._stop, delay)
                continue
            backoff.reset()
            self.consecutive_failures = 0
            if handled < self._batch_size:
                await _wait(self._wake, self._flush_interval_s)

    async def _far_behind(self) -> bool:
        """Whether the outbox holds more than help_backlog entries (looked at once a second)."""
        if not self._help_backlog or time.monotonic() - self._help_checked_at < HELP_CHECK_INTERVAL_S:
            return self._helping
        self._help_checked_at = time.monotonic()
        try:
            backlog = await self._store.outbox_backlog(await self._team_ids())
        except Exception as exc:  # Redis or the team list away: the flush itself will say so
            log.warning("ledger_backlog_unknown", error=str(exc))
            return self._helping
        helping = backlog > self._help_backlog
        if helping != self._helping:
            if helping:
                log.warning("ledger outbox far behind; this worker drains it too", backlog=backlog,
                            threshold=self._help_backlog)
            else:
                log.info("ledger outbox caught up; this worker stops draining it", backlog=backlog)
        self._helping = helping
        return helping

    async def _drain(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        backoff = _Backoff(self._backoff_initial_s, self._backoff_max_s)
        while (remaining := deadline - loop.time()) > 0:
            try:
                # Cancelled at the deadline, flush_once keeps what it held; nothing is lost.
                handled = await asyncio.wait_for(self.flush_once(), remaining)
            except Exception as exc:
                log.warning("ledger drain write failed; retrying", error=repr(exc))
                await asyncio.sleep(min(backoff.next(), max(0.0, deadline - loop.time())))
                continue
            if handled == 0:
                return

    async def _flush_direct(self) -> int:
        if not self._direct:
            return 0
        batch = [self._direct.popleft() for _ in range(min(len(self._direct), self._batch_size))]
        try:
            rejected = await self._write_isolating([ev.to_bytes() for ev in batch])
        except BaseException:
            self._direct.extendleft(reversed(batch))
            raise
        for index in rejected:
            self._rejected_direct.append(batch[index])
            log.error(
                "ledger refused a direct charge; kept in memory only",
                charge=batch[index].to_bytes().decode(),
            )
        return len(batch)

    async def _flush_outbox(self) -> int:
        if not self._held:
            team_ids = await self._team_ids()
            if not team_ids:
                return 0
            self._held = await self._store.read_outbox(team_ids, self._batch_size)
            if not self._held:
                return 0
        entries = self._held
        # The entries' bytes go to the database as settle encoded them: nothing is decoded here.
        positions = [OutboxPosition.parse(entry.entry_id) for entry in entries]
        rejected = set(await self._write_isolating([entry.raw for entry in entries], positions))
        # Committed: ack. If the ack fails the entries stay held and the retry writes nothing new.
        await self._store.ack_outbox([e for i, e in enumerate(entries) if i not in rejected])
        self._held = []
        for index in rejected:
            entry = entries[index]
            self._rejected_entries.add(entry.entry_id)
            log.error(
                "ledger refused an outbox charge; left unacked in the outbox",
                entry_id=entry.entry_id,
                charge=entry.raw.decode(errors="replace"),
            )
        return len(entries)

    async def _write_isolating(
        self, docs: list[bytes], positions: list[OutboxPosition] | None = None
    ) -> list[int]:
        """Write encoded charges; returns the indexes the database refused as data. Raises when it is down."""
        try:
            await self._write(docs, positions)
            return []
        except Exception as exc:
            if _is_outage(exc) or not await self._database_answers():
                raise
        # The database is up but refused the batch: find the events it refuses, write the rest.
        rejected = []
        for index, doc in enumerate(docs):
            try:
                await self._write([doc], None if positions is None else [positions[index]])
            except Exception as exc:
                if _is_outage(exc) or not await self._database_answers():
                    raise
                rejected.append(index)
        return rejected

    async def _write(
        self, docs: Sequence[bytes], positions: Sequence[OutboxPosition] | None = None
    ) -> list[str]:
        """Commit encoded charges; returns the request ids inserted (not those already in the ledger)."""
        async with self._sessions() as session, session.begin():
            written = await write_encoded(session, docs, positions)
        if written and self._on_written is not None:
            await self._notify(written)
        return written

    async def _notify(self, request_ids: list[str]) -> None:
        try:
            result = self._on_written(request_ids)  # type: ignore[misc]
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # metrics must never block the ledger
            log.warning("ledger on_written callback failed", error=repr(exc))

    async def _database_answers(self) -> bool:
        try:
            async with self._sessions() as session:
                await session.execute(text("SELECT 1"))
        except Exception:
            return False
        return True


def _is_outage(exc: Exception) -> bool:
    """Errors that say the database is unreachable or busy (SQLite's lock), never that a row is bad."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (OperationalError, InterfaceError, OSError, TimeoutError))


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout_s)
    except TimeoutError:
        pass
