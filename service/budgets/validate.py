"""Checks every budget store applies before touching a counter."""

from __future__ import annotations

from service.budgets.store import Reservation
from service.ledger.event import ChargeEvent


def check_reservation(reservation: Reservation) -> None:
    """Reject reservations a store cannot hold correctly (negative, or spanning teams)."""
    if reservation.amount_nano < 0:
        raise ValueError("a reservation amount cannot be negative")
    if reservation.ttl_s < 0:
        raise ValueError("a reservation ttl cannot be negative")
    for budget in reservation.budgets:
        # One team's keys share one Redis Cluster slot; a foreign budget would cross slots.
        if budget.team_id != reservation.team_id:
            raise ValueError(
                f"budget {budget.budget_id} belongs to team {budget.team_id}, "
                f"not to the reserving team {reservation.team_id}"
            )
    ids = [budget.counter_id for budget in reservation.budgets]
    if len(ids) != len(set(ids)):
        raise ValueError("a reservation names the same budget counter twice")


def check_charge(reservation: Reservation, event: ChargeEvent) -> None:
    """Reject a charge that is negative or does not belong to its reservation."""
    if event.cost_nano < 0:
        raise ValueError("a charge cannot be negative")
    if event.request_id != reservation.request_id or event.team_id != reservation.team_id:
        raise ValueError("the charge event does not belong to this reservation")
