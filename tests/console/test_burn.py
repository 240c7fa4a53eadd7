"""The budget pace the console shows: burn rate per day and the projected run-out time, in integers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from service.console.burn import DAY_S, MAX_HORIZON_S, MIN_WINDOW_S, burn

START = datetime(2026, 11, 1, tzinfo=timezone.utc)
END = datetime(2026, 12, 1, tzinfo=timezone.utc)


def test_half_spent_at_a_third_of_the_month_runs_out_before_the_reset() -> None:
    now = START + timedelta(days=10)
    pace = burn(50_000_000_000, 50_000_000_000, START, END, now)
    assert pace.outlook == "runs_out"
    assert pace.rate_nano_per_day == 5_000_000_000  # $50 over 10 days
    assert pace.runs_out_at == now + timedelta(days=10)


def test_a_slow_pace_lasts_the_period() -> None:
    now = START + timedelta(days=10)
    pace = burn(10_000_000_000, 90_000_000_000, START, END, now)
    assert (pace.outlook, pace.runs_out_at, pace.rate_nano_per_day) == (
        "lasts",
        None,
        1_000_000_000,
    )


def test_run_out_exactly_at_the_reset_counts_as_lasting() -> None:
    now = START + timedelta(days=15)
    pace = burn(15, 15, START, END, now)
    assert pace.outlook == "lasts"


def test_an_exhausted_budget_ran_out_now() -> None:
    now = START + timedelta(days=2)
    pace = burn(7_000, 0, START, END, now)
    assert (pace.outlook, pace.runs_out_at, pace.rate_nano_per_day) == ("exhausted", now, 3_500)


def test_no_spend_yet_is_idle() -> None:
    pace = burn(0, 1_000, START, END, START + timedelta(hours=5))
    assert (pace.outlook, pace.runs_out_at, pace.rate_nano_per_day) == ("idle", None, 0)


def test_the_first_minutes_are_measured_over_an_hour() -> None:
    now = START + timedelta(seconds=30)
    pace = burn(1_000, 10_000, START, END, now)
    assert pace.rate_nano_per_day == 1_000 * DAY_S // MIN_WINDOW_S
    assert pace.runs_out_at == now + timedelta(
        seconds=10_000 * MIN_WINDOW_S // 1_000
    )  # 10 hours, not 5 minutes


def test_a_total_budget_without_a_start_has_no_pace() -> None:
    pace = burn(5, 10, None, None, START)
    assert (pace.outlook, pace.rate_nano_per_day, pace.runs_out_at) == ("unknown", None, None)


def test_a_total_budget_never_resets_so_it_always_runs_out_at_its_pace() -> None:
    now = START + timedelta(days=4)
    pace = burn(4_000, 6_000, START, None, now)
    assert pace.outlook == "runs_out"
    assert pace.runs_out_at == now + timedelta(days=6)
    assert pace.rate_nano_per_day == 1_000


def test_amounts_past_float_precision_stay_exact() -> None:
    now = START + timedelta(seconds=3 * DAY_S)
    spent = 9_000_000_000_000_001  # above 2**53
    pace = burn(spent, 1, START, None, now)
    assert pace.rate_nano_per_day == spent // 3


def test_a_trickle_against_a_huge_budget_lasts_instead_of_overflowing_the_calendar() -> None:
    now = START + timedelta(days=20)
    assert burn(1, 9_000_000_000_000_000, START, END, now).outlook == "lasts"
    total = burn(1, 9_000_000_000_000_000, START, None, now)
    assert (total.outlook, total.runs_out_at, total.rate_nano_per_day) == ("lasts", None, 0)
    just_inside = burn(1, MAX_HORIZON_S // (20 * DAY_S) - 1, START, None, now)
    assert just_inside.outlook == "runs_out" and just_inside.runs_out_at is not None
