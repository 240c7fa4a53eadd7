"""The contract every budget store keeps (Redis in production, in-process embedded).

Reserve and settle are each one atomic step over every budget a request touches;
settle also appends the charge to the outbox, so a counted charge cannot miss the ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from service.ledger.event import ChargeEvent


@dataclass(frozen=True, slots=True)
class BudgetCounter:
    """One budget in the period that contains the request's time."""

    budget_id: str
    team_id: str
    name: str
    limit_nano: int
    period: str  # daily | weekly | monthly | total
    period_start: datetime | None  # None for total
    period_end: datetime | None  # None for total

    @property
    def counter_id(self) -> str:
        """Identifies the counter of this budget in this period."""
        start = "total" if self.period_start is None else str(int(self.period_start.timestamp()))
        return f"{self.budget_id}:{start}"


@dataclass(frozen=True, slots=True)
class Reservation:
    """The most a request can cost, held against every budget that applies to it."""

    request_id: str
    team_id: str
    amount_nano: int
    budgets: tuple[BudgetCounter, ...]
    ttl_s: int


@dataclass(frozen=True, slots=True)
class CounterState:
    budget: BudgetCounter
    spent_nano: int
    reserved_nano: int

    @property
    def remaining_nano(self) -> int:
        return max(0, self.budget.limit_nano - self.spent_nano - self.reserved_nano)


@dataclass(frozen=True, slots=True)
class Denial:
    """The first budget a reservation did not fit, with its standing at that moment."""

    state: CounterState
    requested_nano: int


@dataclass(frozen=True, slots=True, order=True)
class OutboxPosition:
    """Where an entry sits in its team's outbox; later entries compare greater (a Redis stream id)."""

    ms: int
    seq: int

    # A position past any real entry's sequence within one millisecond (stored in a BIGINT column).
    MAX_SEQ = (1 << 63) - 1

    @classmethod
    def parse(cls, entry_id: str | bytes) -> OutboxPosition:
        text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        ms, _, seq = text.partition("-")
        return cls(int(ms), int(seq or 0))

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


@dataclass(frozen=True, slots=True)
class SettleResult:
    """Whether this call settled (False: already settled before), and spend before/after.

    outbox_id is the outbox entry of the request's charge, also when an earlier call settled it
    (empty when the store no longer knows), as the store gave it: parsed only when asked for.
    """

    settled: bool
    before: tuple[CounterState, ...]
    after: tuple[CounterState, ...]
    outbox_id: bytes | str = b""

    @property
    def position(self) -> OutboxPosition | None:
        """Where the charge sits in the outbox (None for a marker set before positions were kept)."""
        raw = self.outbox_id.decode() if isinstance(self.outbox_id, bytes) else self.outbox_id
        return OutboxPosition.parse(raw) if "-" in raw else None


@dataclass(frozen=True, slots=True)
class CounterSnapshot:
    """One team's counters' spent, read in one atomic step with the outbox position reached then.

    Every charge counted in `spent` has its outbox entry at or before `through`; every charge
    settled later lands after it. `token` lets adjust_spent refuse when a later snapshot of the
    same counter has been taken (two rebuilds at once), so no correction is applied twice.
    """

    team_id: str
    counters: tuple[BudgetCounter, ...]
    spent: tuple[int, ...]
    through: OutboxPosition
    token: str


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A settled charge waiting in the outbox, kept as settle encoded it (ChargeEvent.to_bytes).

    The ledger writer hands these bytes to the database as they are; decoding them is only for
    the code that needs the charge itself.
    """

    entry_id: str  # store-specific id, passed back to ack
    team_id: str
    raw: bytes

    @classmethod
    def of(cls, entry_id: str, team_id: str, event: ChargeEvent) -> OutboxEntry:
        return cls(entry_id, team_id, event.to_bytes())

    @property
    def event(self) -> ChargeEvent:
        return ChargeEvent.from_bytes(self.raw)


class BudgetStore(Protocol):
    async def ping(self) -> None: ...

    async def reserve(self, reservation: Reservation) -> Denial | None:
        """Hold the amount on every budget, or on none and say which did not fit."""

    async def settle(self, reservation: Reservation, event: ChargeEvent) -> SettleResult:
        """Release the hold, add event.cost_nano to spent, append event to the outbox; idempotent."""

    async def extend(self, reservation: Reservation, ttl_s: int) -> bool:
        """Push back the expiry of a live reservation (long fine-tuning jobs)."""

    async def reap_expired(self, team_ids: Sequence[str]) -> int:
        """Release reservations whose holder died; returns how many."""

    async def standing(self, budgets: Sequence[BudgetCounter]) -> list[CounterState]: ...

    async def set_spent(self, budget: BudgetCounter, spent_nano: int) -> None:
        """Overwrite a counter's spent (tests and tools; a live rebuild uses snapshot/adjust_spent)."""

    async def snapshot(self, team_id: str, budgets: Sequence[BudgetCounter]) -> CounterSnapshot:
        """Read these counters' spent and the team's outbox position in one atomic step."""

    async def adjust_spent(self, snapshot: CounterSnapshot, deltas: Sequence[int]) -> int:
        """Add deltas[i] to each counter's spent whose snapshot is still the latest; returns how many."""

    async def outbox_until(
        self, team_id: str, through: OutboxPosition, limit: int
    ) -> list[tuple[OutboxPosition, bytes]] | None:
        """The team's outbox entries at or before `through` not yet acked; None when over `limit`."""

    async def read_outbox(self, team_ids: Sequence[str], count: int) -> list[OutboxEntry]:
        """New and abandoned (holder died) entries, for the ledger writer."""

    async def ack_outbox(self, entries: Sequence[OutboxEntry]) -> None: ...

    async def outbox_backlog(self, team_ids: Sequence[str]) -> int:
        """Settled charges not yet acknowledged by a ledger writer, over these teams."""

    async def close(self) -> None: ...
