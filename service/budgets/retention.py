"""How long the budget stores keep counters, reservation records and settled markers."""

from __future__ import annotations

from service.budgets.store import BudgetCounter

# Counters outlive their period so late settles, reports and rebuilds still find them.
COUNTER_GRACE_S = 35 * 24 * 3600
# A settled marker makes settle idempotent; retries come within minutes, jobs within days.
DONE_TTL_S = 7 * 24 * 3600
# A reservation record stays until settled or reaped; this only bounds garbage if neither runs.
RESERVATION_GRACE_S = 7 * 24 * 3600
# Outbox entries delivered but not acknowledged this long are handed to another reader.
OUTBOX_CLAIM_IDLE_S = 30.0


def counter_expires_at(budget: BudgetCounter) -> int:
    """Unix time after which the counter may vanish; 0 for a total budget (kept forever)."""
    if budget.period_end is None:
        return 0
    return int(budget.period_end.timestamp()) + COUNTER_GRACE_S
