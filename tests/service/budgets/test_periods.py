"""Calendar periods: DST-correct boundaries that contain their instant and tile time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.budgets.periods import period_bounds, retry_after_s, seconds_until_reset

UTC = timezone.utc
ZONES = sorted(available_timezones())
# Zones with DST at or near midnight, where naive "local midnight" goes wrong.
TRICKY = [
    "America/Santiago",
    "America/Sao_Paulo",
    "America/Havana",
    "Asia/Beirut",
    "Pacific/Apia",
    "Australia/Lord_Howe",
    "Europe/Berlin",
    "America/New_York",
    "UTC",
]

instants = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2099, 12, 1), timezones=st.just(UTC)
)
zones = st.one_of(st.sampled_from(TRICKY), st.sampled_from(ZONES))
periods = st.sampled_from(["daily", "weekly", "monthly"])


def hours(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() / 3600


@settings(max_examples=600, deadline=None)
@given(period=periods, tz=zones, at=instants)
def test_the_period_contains_its_instant_and_tiles_with_its_neighbours(
    period: str, tz: str, at: datetime
) -> None:
    start, end = period_bounds(period, tz, at)
    assert start is not None and end is not None
    assert start <= at < end
    assert start.tzinfo is not None and start.utcoffset() == timedelta(0)
    # The next period starts where this one ends and the previous one ends where it starts.
    assert period_bounds(period, tz, end)[0] == end
    assert period_bounds(period, tz, start - timedelta(microseconds=1))[1] == start
    # Every instant of the period maps back to the same period.
    middle = start + (end - start) / 2
    assert period_bounds(period, tz, middle) == (start, end)
    local_first_day = start.astimezone(ZoneInfo(tz)).date()
    if period == "weekly":
        assert local_first_day.weekday() == 0
    if period == "monthly":
        assert local_first_day.day == 1


@settings(max_examples=200, deadline=None)
@given(tz=zones, at=instants)
def test_seconds_until_reset_counts_to_the_period_end(tz: str, at: datetime) -> None:
    _, end = period_bounds("daily", tz, at)
    assert end is not None
    remaining = seconds_until_reset("daily", tz, at)
    assert remaining is not None and 0 < remaining == (end - at).total_seconds()
    after = retry_after_s("daily", tz, at)
    assert after is not None and after >= 1 and after - 1 < remaining <= after


@pytest.mark.parametrize(
    ("period", "tz", "at", "start", "length_h"),
    [
        # Spring forward: a 23-hour day; fall back: a 25-hour day.
        ("daily", "America/New_York", "2024-03-10T12:00:00+00:00", "2024-03-10T05:00:00", 23),
        ("daily", "America/New_York", "2024-11-03T12:00:00+00:00", "2024-11-03T04:00:00", 25),
        # Chile skips local midnight: the day starts at 01:00 (-03) and has 23 hours.
        ("daily", "America/Santiago", "2024-09-08T15:00:00+00:00", "2024-09-08T04:00:00", 23),
        # Brazil (2018) stepped back from midnight to 23:00: that Saturday had 25 hours.
        ("daily", "America/Sao_Paulo", "2018-02-18T01:30:00+00:00", "2018-02-17T02:00:00", 25),
        # ISO week from Monday; the Berlin week of the March change has 167 hours.
        ("weekly", "Europe/Berlin", "2024-03-28T10:00:00+00:00", "2024-03-24T23:00:00", 167),
        ("weekly", "UTC", "2024-01-07T23:59:59+00:00", "2024-01-01T00:00:00", 168),
        ("monthly", "Europe/Berlin", "2024-03-31T21:59:59+00:00", "2024-02-29T23:00:00", 743),
        ("monthly", "UTC", "2024-02-10T00:00:00+00:00", "2024-02-01T00:00:00", 29 * 24),
        ("monthly", "Asia/Tokyo", "2023-12-31T15:00:00+00:00", "2023-12-31T15:00:00", 31 * 24),
    ],
)
def test_known_boundaries(period: str, tz: str, at: str, start: str, length_h: int) -> None:
    got_start, got_end = period_bounds(period, tz, datetime.fromisoformat(at))
    assert got_start == datetime.fromisoformat(start).replace(tzinfo=UTC)
    assert got_start is not None and got_end is not None
    assert hours(got_start, got_end) == length_h


def test_total_has_no_bounds_and_never_resets() -> None:
    at = datetime(2024, 5, 1, tzinfo=UTC)
    assert period_bounds("total", "Europe/Paris", at) == (None, None)
    assert seconds_until_reset("total", "UTC", at) is None
    assert retry_after_s("total", "UTC", at) is None


def test_utc_is_the_default_zone() -> None:
    at = datetime(2024, 5, 1, 23, 30, tzinfo=timezone(timedelta(hours=-2)))
    expected = (datetime(2024, 5, 2, tzinfo=UTC), datetime(2024, 5, 3, tzinfo=UTC))
    assert period_bounds("daily", None, at) == expected
    assert period_bounds("daily", "utc", at) == expected


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        period_bounds("daily", "UTC", datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="unknown budget period"):
        period_bounds("hourly", "UTC", datetime(2024, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="unknown time zone"):
        period_bounds("daily", "Mars/Olympus_Mons", datetime(2024, 1, 1, tzinfo=UTC))
