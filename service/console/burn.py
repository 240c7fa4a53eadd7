"""Burn rate and run-out date of a budget: at the pace spent so far this period, when does it hit zero."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

DAY_S = 86_400
# The first minutes of a period say little about its pace: never extrapolate from less than an hour.
MIN_WINDOW_S = 3_600
MAX_HORIZON_S = 100 * 365 * DAY_S  # a budget that lasts longer than this at its pace simply lasts


@dataclass(frozen=True, slots=True)
class Burn:
    """rate_nano_per_day is the period's average so far; runs_out_at is set only for 'exhausted' and 'runs_out'."""

    rate_nano_per_day: int | None
    runs_out_at: datetime | None
    outlook: str  # exhausted | runs_out | lasts | idle | unknown


def burn(
    spent_nano: int,
    remaining_nano: int,
    since: datetime | None,
    until: datetime | None,
    now: datetime,
) -> Burn:
    """The pace of a budget from `since` (its period start, or its creation for a total budget) to `now`.

    Integer arithmetic throughout: the rate is floored to a nano-USD per day and the run-out
    time to a whole second.
    """
    if remaining_nano <= 0:
        return Burn(_rate(spent_nano, since, now), now, "exhausted")
    if since is None:
        return Burn(None, None, "unknown")
    if spent_nano <= 0:
        return Burn(0, None, "idle")
    window_s = _window_s(since, now)
    seconds_left = remaining_nano * window_s // spent_nano
    rate = spent_nano * DAY_S // window_s
    # Compared in whole seconds first: a trickle of spend can put the date past year 9999.
    horizon_s = int((until - now).total_seconds()) if until is not None else MAX_HORIZON_S
    if seconds_left >= horizon_s:
        return Burn(rate, None, "lasts")  # the period resets (or a century passes) first
    return Burn(rate, now + timedelta(seconds=seconds_left), "runs_out")


def _window_s(since: datetime, now: datetime) -> int:
    return max(int((now - since).total_seconds()), MIN_WINDOW_S)


def _rate(spent_nano: int, since: datetime | None, now: datetime) -> int | None:
    if since is None:
        return None
    return spent_nano * DAY_S // _window_s(since, now)
