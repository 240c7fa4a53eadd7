"""The client's count of what it was served, compared with the ledger row by row."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tests.harness import Ledger, wait_until
from tests.reliability.load import Call


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """Client successes against ledger rows; every difference must be zero."""

    successes: int
    rows: int
    ok_rows: int
    missing: int  # successes with no ledger row
    duplicates: int  # request ids that appear more than once
    unexplained: int  # ok rows for request ids the client never saw succeed, beyond those in flight
    cost_difference_nano: int  # ledger sum of the successes minus the client's own pricing of them

    @property
    def differences(self) -> int:
        return self.missing + self.duplicates + self.unexplained + abs(self.cost_difference_nano)


def reconcile(ledger: Ledger, team_id: str, calls: list[Call], *, unseen_allowed: int = 0) -> Reconciliation:
    """unseen_allowed: charges the ledger may hold that the client never saw complete (calls cut by a kill)."""
    rows = ledger.rows(team_id)
    by_id = Counter(r["request_id"] for r in rows)
    ok = [c for c in calls if c.ok]
    ok_ids = {c.request_id for c in ok}
    missing = sum(1 for c in ok if by_id[c.request_id] == 0)
    duplicates = sum(n - 1 for n in by_id.values() if n > 1)
    ok_rows = [r for r in rows if r["status"] == "ok"]
    unseen = sum(1 for r in ok_rows if r["request_id"] not in ok_ids)
    cost_by_id = {r["request_id"]: r["cost_nano"] for r in rows}
    ledger_cost = sum(cost_by_id.get(c.request_id, 0) for c in ok)
    client_cost = sum(c.cost_nano for c in ok)
    return Reconciliation(
        successes=len(ok), rows=len(rows), ok_rows=len(ok_rows), missing=missing, duplicates=duplicates,
        unexplained=max(0, unseen - unseen_allowed), cost_difference_nano=ledger_cost - client_cost,
    )


def wait_reconciled(ledger: Ledger, team_id: str, calls: list[Call], timeout_s: float = 60.0, **kw: int) -> Reconciliation:
    """Poll until every success is in the ledger (the writer drains asynchronously), then compare."""
    wait_until(lambda: reconcile(ledger, team_id, calls, **kw).missing == 0, timeout_s, interval_s=0.2,
               what="every successful call in the ledger")
    return reconcile(ledger, team_id, calls, **kw)
