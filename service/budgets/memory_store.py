"""The budget store in process, for the embedded default without Redis.

Each operation is atomic because it never awaits between reading and writing state;
it behaves like the Redis store, outbox redelivery included, within one process.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from service.budgets.retention import (
    DONE_TTL_S,
    OUTBOX_CLAIM_IDLE_S,
    RESERVATION_GRACE_S,
    counter_expires_at,
)
from service.budgets.store import (
    BudgetCounter,
    CounterSnapshot,
    CounterState,
    Denial,
    OutboxEntry,
    OutboxPosition,
    Reservation,
    SettleResult,
)
from service.budgets.validate import check_charge, check_reservation
from service.ledger.event import ChargeEvent


@dataclass(slots=True)
class _Counter:
    spent: int = 0
    reserved: int = 0
    expire_at: float = 0.0  # 0: never
    snapshot_token: str | None = None


@dataclass(slots=True)
class _Held:
    amount: int
    counters: tuple[str, ...]
    expiry: float
    forget_at: float


@dataclass(slots=True)
class _Pending:
    event: ChargeEvent
    delivered_at: float | None = None


class MemoryBudgetStore:
    """BudgetStore in one process's memory; lost on restart (counters rebuild from the ledger)."""

    def __init__(
        self,
        *,
        claim_idle_s: float = OUTBOX_CLAIM_IDLE_S,
        done_ttl_s: int = DONE_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.claim_idle_s = claim_idle_s
        self.done_ttl_s = done_ttl_s
        self.clock = clock
        self._counters: dict[tuple[str, str], _Counter] = {}
        self._held: dict[str, dict[str, _Held]] = {}
        # team -> request id -> (forget at, where its charge went in the outbox)
        self._done: dict[str, dict[str, tuple[float, OutboxPosition]]] = {}
        self._outbox: dict[str, dict[str, _Pending]] = {}
        self._last = OutboxPosition(0, 0)

    def _counter(self, team_id: str, counter_id: str, now: float) -> _Counter | None:
        counter = self._counters.get((team_id, counter_id))
        if counter is not None and counter.expire_at and counter.expire_at <= now:
            del self._counters[(team_id, counter_id)]
            return None
        return counter

    def _touch(self, budget: BudgetCounter, now: float) -> _Counter:
        counter = self._counter(budget.team_id, budget.counter_id, now)
        if counter is None:
            counter = self._counters[(budget.team_id, budget.counter_id)] = _Counter()
        counter.expire_at = float(counter_expires_at(budget))
        return counter

    def _is_done(self, team_id: str, request_id: str, now: float) -> bool:
        done = self._done.get(team_id, {}).get(request_id)
        return done is not None and done[0] > now

    def _release(self, team_id: str, request_id: str, now: float) -> bool:
        held = self._held.get(team_id, {}).pop(request_id, None)
        if held is None or held.forget_at <= now:
            return False
        for counter_id in held.counters:
            counter = self._counter(team_id, counter_id, now)
            if counter is not None:  # a long-expired period is not resurrected negative
                counter.reserved -= held.amount
        return True

    def _state(self, budget: BudgetCounter, now: float) -> CounterState:
        counter = self._counter(budget.team_id, budget.counter_id, now)
        if counter is None:
            return CounterState(budget, 0, 0)
        return CounterState(budget, counter.spent, counter.reserved)

    async def ping(self) -> None:
        return None

    async def reserve(self, reservation: Reservation) -> Denial | None:
        check_reservation(reservation)
        now = self.clock()
        team, request_id = reservation.team_id, reservation.request_id
        live = self._held.get(team, {}).get(request_id)
        if (live is not None and live.forget_at > now) or self._is_done(team, request_id, now):
            return None
        amount = reservation.amount_nano
        for budget in reservation.budgets:
            state = self._state(budget, now)
            if state.spent_nano + state.reserved_nano + amount > budget.limit_nano:
                return Denial(state=state, requested_nano=amount)
        for budget in reservation.budgets:
            self._touch(budget, now).reserved += amount
        self._held.setdefault(team, {})[request_id] = _Held(
            amount=amount,
            counters=tuple(b.counter_id for b in reservation.budgets),
            expiry=now + reservation.ttl_s,
            forget_at=now + reservation.ttl_s + RESERVATION_GRACE_S,
        )
        return None

    async def settle(self, reservation: Reservation, event: ChargeEvent) -> SettleResult:
        check_charge(reservation, event)
        now = self.clock()
        team, request_id = reservation.team_id, reservation.request_id
        before = tuple(self._state(b, now) for b in reservation.budgets)
        if self._is_done(team, request_id, now):
            outbox_id = str(self._done[team][request_id][1])
            return SettleResult(settled=False, before=before, after=before, outbox_id=outbox_id)
        self._release(team, request_id, now)
        for budget in reservation.budgets:
            # Never clamp: money spent beyond the hold was still spent.
            self._touch(budget, now).spent += event.cost_nano
        position = self._next_position(now)
        self._outbox.setdefault(team, {})[str(position)] = _Pending(event)
        self._done.setdefault(team, {})[request_id] = (now + self.done_ttl_s, position)
        after = tuple(self._state(b, now) for b in reservation.budgets)
        return SettleResult(settled=True, before=before, after=after, outbox_id=str(position))

    def _next_position(self, now: float) -> OutboxPosition:
        """Outbox ids as Redis makes them: the clock's millisecond, a sequence within it, always rising.

        Clock-based, so the ledger rows of an earlier process (whose outbox died with it) sort
        before every entry of this one.
        """
        ms = int(now * 1000)
        last = self._last
        self._last = OutboxPosition(ms, 0) if ms > last.ms else OutboxPosition(last.ms, last.seq + 1)
        return self._last

    async def extend(self, reservation: Reservation, ttl_s: int) -> bool:
        if ttl_s < 0:
            raise ValueError("a reservation ttl cannot be negative")
        now = self.clock()
        held = self._held.get(reservation.team_id, {}).get(reservation.request_id)
        if held is None or held.forget_at <= now:
            return False
        held.expiry = now + ttl_s
        held.forget_at = now + ttl_s + RESERVATION_GRACE_S
        return True

    async def reap_expired(self, team_ids: Sequence[str]) -> int:
        now = self.clock()
        released = 0
        for team in team_ids:
            expired = [rid for rid, held in self._held.get(team, {}).items() if held.expiry <= now]
            released += sum(self._release(team, rid, now) for rid in expired)
            done = self._done.get(team, {})
            for rid in [rid for rid, (forget_at, _) in done.items() if forget_at <= now]:
                del done[rid]
        # Counters of periods long past go the way Redis TTLs take them.
        teams = set(team_ids)
        stale = [k for k, c in self._counters.items() if k[0] in teams and 0 < c.expire_at <= now]
        for key in stale:
            del self._counters[key]
        return released

    async def standing(self, budgets: Sequence[BudgetCounter]) -> list[CounterState]:
        now = self.clock()
        return [self._state(b, now) for b in budgets]

    async def set_spent(self, budget: BudgetCounter, spent_nano: int) -> None:
        if spent_nano < 0:
            raise ValueError("spent cannot be negative")
        self._touch(budget, self.clock()).spent = spent_nano

    async def snapshot(self, team_id: str, budgets: Sequence[BudgetCounter]) -> CounterSnapshot:
        if any(b.team_id != team_id for b in budgets):
            raise ValueError("a snapshot covers one team's counters")
        now = self.clock()
        token = secrets.token_hex(8)
        spent = []
        for budget in budgets:
            counter = self._touch(budget, now)
            counter.snapshot_token = token
            spent.append(counter.spent)
        floor = OutboxPosition(int(now * 1000) - 1, OutboxPosition.MAX_SEQ)
        return CounterSnapshot(team_id, tuple(budgets), tuple(spent), max(self._last, floor), token)

    async def adjust_spent(self, snapshot: CounterSnapshot, deltas: Sequence[int]) -> int:
        if len(deltas) != len(snapshot.counters):
            raise ValueError("one delta per snapshotted counter")
        now = self.clock()
        moved = 0
        for budget, delta in zip(snapshot.counters, deltas, strict=True):
            counter = self._counter(budget.team_id, budget.counter_id, now)
            if counter is not None and counter.snapshot_token == snapshot.token:
                counter.spent += delta
                counter.snapshot_token = None
                moved += 1
        return moved

    async def outbox_until(
        self, team_id: str, through: OutboxPosition, limit: int
    ) -> list[tuple[OutboxPosition, bytes]] | None:
        entries = [
            (position, pending.event.to_bytes())
            for entry_id, pending in self._outbox.get(team_id, {}).items()
            if (position := OutboxPosition.parse(entry_id)) <= through
        ]
        return None if len(entries) > limit else sorted(entries)

    async def read_outbox(self, team_ids: Sequence[str], count: int) -> list[OutboxEntry]:
        """Up to `count` entries per team: abandoned ones (idle past claim_idle_s), then new."""
        now = self.clock()
        entries: list[OutboxEntry] = []
        for team in team_ids:
            pending = self._outbox.get(team, {})
            idle = [
                (entry_id, p)
                for entry_id, p in pending.items()
                if p.delivered_at is not None and now - p.delivered_at >= self.claim_idle_s
            ][:count]
            fresh = [(entry_id, p) for entry_id, p in pending.items() if p.delivered_at is None]
            for entry_id, p in idle + fresh[: count - len(idle)]:
                p.delivered_at = now
                entries.append(OutboxEntry.of(entry_id, team, p.event))
        return entries

    async def ack_outbox(self, entries: Sequence[OutboxEntry]) -> None:
        for entry in entries:
            self._outbox.get(entry.team_id, {}).pop(entry.entry_id, None)

    async def outbox_backlog(self, team_ids: Sequence[str]) -> int:
        return sum(len(self._outbox.get(team, {})) for team in team_ids)

    async def close(self) -> None:
        return None
