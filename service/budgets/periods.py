"""Calendar budget periods (daily, weekly, monthly, total) in an IANA time zone.

A period starts at local midnight of its first day; boundaries are computed per day in
the zone, so a period that spans a DST change is 23 or 25 hours (times days) long.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PERIODS: tuple[str, ...] = ("daily", "weekly", "monthly", "total")


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The ZoneInfo for an IANA name; ValueError for an unknown one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def _tz(tz: str | tzinfo | None) -> tzinfo:
    if tz is None or tz == "":
        return timezone.utc
    if isinstance(tz, str):
        return timezone.utc if tz.upper() == "UTC" else zone(tz)
    return tz


def _boundary(day: date, tz: tzinfo) -> datetime:
    # fold=0 maps a local midnight skipped by a DST gap onto the transition instant itself,
    # and an ambiguous midnight onto its first occurrence: the earliest instant of that day.
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(timezone.utc)


def _first_day(period: str, day: date) -> date:
    if period == "daily":
        return day
    if period == "weekly":
        return day - timedelta(days=day.weekday())  # ISO weeks start on Monday
    if period == "monthly":
        return day.replace(day=1)
    raise ValueError(f"unknown budget period {period!r}; expected one of {PERIODS}")


def _next_first_day(period: str, first: date) -> date:
    if period == "daily":
        return first + timedelta(days=1)
    if period == "weekly":
        return first + timedelta(days=7)
    if first.month == 12:
        return date(first.year + 1, 1, 1)
    return date(first.year, first.month + 1, 1)


def _previous_first_day(period: str, first: date) -> date:
    return _first_day(period, first - timedelta(days=1))


def period_bounds(
    period: str, tz: str | tzinfo | None, at: datetime
) -> tuple[datetime, datetime] | tuple[None, None]:
    """The UTC [start, end) of the period containing `at` (aware); (None, None) for total."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("period_bounds needs a timezone-aware datetime")
    if period == "total":
        return None, None
    zone_ = _tz(tz)
    instant = at.astimezone(timezone.utc)
    first = _first_day(period, instant.astimezone(zone_).date())
    # Where a zone's clock steps back across midnight the local date is not monotonic in
    # time; stepping by boundaries keeps every instant inside exactly one period.
    while instant < _boundary(first, zone_):
        first = _previous_first_day(period, first)
    while instant >= _boundary(_next_first_day(period, first), zone_):
        first = _next_first_day(period, first)
    return _boundary(first, zone_), _boundary(_next_first_day(period, first), zone_)


def seconds_until_reset(period: str, tz: str | tzinfo | None, at: datetime) -> float | None:
    """Seconds from `at` until the period containing it ends; None for total."""
    _, end = period_bounds(period, tz, at)
    if end is None:
        return None
    return (end - at).total_seconds()


def retry_after_s(period: str, tz: str | tzinfo | None, at: datetime) -> int | None:
    """Whole seconds (rounded up, at least 1) until the reset, for a Retry-After header."""
    remaining = seconds_until_reset(period, tz, at)
    if remaining is None:
        return None
    return max(1, math.ceil(remaining))
