"""An in-process outbox with the delivery rules of the budget store's stream, for writer tests."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass

from service.budgets.store import OutboxEntry
from service.ledger.event import ChargeEvent


@dataclass
class _Slot:
    entry: OutboxEntry
    delivered_at: float | None = None
    deliveries: int = 0


class FakeOutbox:
    """Delivers each entry once; an entry read but not acked is delivered again after
    redeliver_after_s (its holder is presumed dead), like a consumer group's auto-claim."""

    def __init__(self, redeliver_after_s: float = 60.0) -> None:
        self.redeliver_after_s = redeliver_after_s
        self._slots: dict[str, _Slot] = {}
        self._ids = itertools.count(1)
        self.fail_reads = 0  # the next N reads raise, as an unreachable Redis would
        self.fail_acks = 0
        self.reads = 0

    def append(self, event: ChargeEvent) -> OutboxEntry:
        return self.put(OutboxEntry.of(f"{next(self._ids)}-0", event.team_id, event))

    def put(self, entry: OutboxEntry) -> OutboxEntry:
        """Add an entry as it is (its bytes need not be a charge)."""
        self._slots[entry.entry_id] = _Slot(entry)
        return entry

    @property
    def pending(self) -> int:
        """Entries not acked yet, delivered or not."""
        return len(self._slots)

    def deliveries(self, entry_id: str) -> int:
        return self._slots[entry_id].deliveries

    async def read_outbox(self, team_ids: Sequence[str], count: int) -> list[OutboxEntry]:
        await asyncio.sleep(0)
        self.reads += 1
        if self.fail_reads:
            self.fail_reads -= 1
            raise ConnectionError("outbox unreachable")
        teams, now, out = set(team_ids), time.monotonic(), []
        for slot in self._slots.values():
            if len(out) >= count:
                break
            if slot.entry.team_id not in teams:
                continue
            if slot.delivered_at is None or now - slot.delivered_at >= self.redeliver_after_s:
                slot.delivered_at = now
                slot.deliveries += 1
                out.append(slot.entry)
        return out

    async def outbox_backlog(self, team_ids: Sequence[str]) -> int:
        teams = set(team_ids)
        return sum(1 for slot in self._slots.values() if slot.entry.team_id in teams)

    async def ack_outbox(self, entries: Sequence[OutboxEntry]) -> None:
        await asyncio.sleep(0)
        if self.fail_acks:
            self.fail_acks -= 1
            raise ConnectionError("outbox unreachable")
        for entry in entries:
            self._slots.pop(entry.entry_id, None)
