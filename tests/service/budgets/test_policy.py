"""Which budgets apply to a request, as counters of the period containing it."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from service.budgets.policy import MAX_LIMIT_NANO, BudgetRule, applicable_budgets, rule_from_budget
from service.db.models import Budget

AT = datetime(2024, 3, 10, 12, 0, tzinfo=timezone.utc)
RULES = [
    BudgetRule(id="team", team_id="t", limit_nano=1_000, period="monthly"),
    BudgetRule(id="key-1", team_id="t", limit_nano=500, period="daily", key_id="k1"),
    BudgetRule(id="gpt4o", team_id="t", limit_nano=300, period="weekly", models=("gpt-4o",)),
    BudgetRule(
        id="ft-exact", team_id="t", limit_nano=200, period="total", models=("ft:gpt-4o:acme::x1",)
    ),
    BudgetRule(id="training", team_id="t", limit_nano=900, period="total", kind="training"),
    BudgetRule(id="no-models", team_id="t", limit_nano=100, period="total", models=()),
]


def applying(**request: object) -> list[str]:
    defaults: dict[str, object] = {
        "key_id": "k2",
        "model": "gpt-4o-mini",
        "base_model": "gpt-4o-mini",
        "kind": "inference",
        "at": AT,
    }
    counters = applicable_budgets(RULES, **{**defaults, **request})  # type: ignore[arg-type]
    return [c.budget_id for c in counters]


def test_team_wide_budgets_apply_to_everything() -> None:
    assert applying() == ["team", "no-models"]


def test_a_key_budget_applies_only_to_its_key() -> None:
    assert applying(key_id="k1") == ["team", "key-1", "no-models"]
    assert applying(key_id=None) == ["team", "no-models"]


def test_a_model_budget_matches_the_base_model_or_the_exact_name() -> None:
    expected = ["team", "gpt4o", "no-models"]
    assert applying(model="gpt-4o-2024-08-06", base_model="gpt-4o") == expected
    assert applying(model="gpt-4o", base_model=None) == ["team", "gpt4o", "no-models"]
    assert applying(model="ft:gpt-4o:acme::x1", base_model="gpt-4o") == [
        "team",
        "gpt4o",
        "ft-exact",
        "no-models",
    ]
    assert applying(model="ft:gpt-4o:acme::x2", base_model="gpt-4o-mini") == ["team", "no-models"]


def test_a_kind_budget_applies_only_to_its_kind() -> None:
    assert applying(kind="training") == ["team", "training", "no-models"]


def test_counters_carry_the_current_period_in_the_budget_zone() -> None:
    rules = [
        BudgetRule(id="d", team_id="t", limit_nano=7, period="daily", timezone="America/New_York"),
        BudgetRule(id="all", team_id="t", limit_nano=8, period="total", name="lifetime"),
    ]
    daily, total = applicable_budgets(
        rules, key_id=None, model="m", base_model=None, kind="inference", at=AT
    )
    # 10 March 2024 in New York is the 23-hour day of the spring change.
    assert daily.period_start == datetime(2024, 3, 10, 5, tzinfo=timezone.utc)
    assert daily.period_end == datetime(2024, 3, 11, 4, tzinfo=timezone.utc)
    assert (daily.limit_nano, daily.team_id, daily.period) == (7, "t", "daily")
    assert daily.counter_id == f"d:{int(daily.period_start.timestamp())}"
    assert (total.period_start, total.period_end, total.name) == (None, None, "lifetime")
    assert total.counter_id == "all:total"


def test_budget_rows_convert_and_apply_like_rules() -> None:
    row = Budget(
        id="b1",
        team_id="t",
        key_id="k1",
        name="key one",
        limit_nano=5_000,
        period="weekly",
        timezone="Europe/Berlin",
        models=["gpt-4o"],
        kind="inference",
        thresholds=[50, 90],
    )
    rule = rule_from_budget(row)
    assert rule == BudgetRule(
        id="b1",
        team_id="t",
        limit_nano=5_000,
        period="weekly",
        name="key one",
        key_id="k1",
        timezone="Europe/Berlin",
        models=("gpt-4o",),
        kind="inference",
        thresholds=(50, 90),
    )
    hash(rule)  # frozen and hashable: usable as a cache key
    (counter,) = applicable_budgets(
        [row], key_id="k1", model="gpt-4o", base_model="gpt-4o", kind="inference", at=AT
    )
    assert counter.period_start == datetime(2024, 3, 3, 23, tzinfo=timezone.utc)  # Monday 00:00 CET
    assert applicable_budgets(
        [row], key_id="k1", model="gpt-4o", base_model="gpt-4o", kind="training", at=AT
    ) == ()


def test_invalid_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="period"):
        BudgetRule(id="x", team_id="t", limit_nano=1, period="hourly")
    with pytest.raises(ValueError, match="limit"):
        BudgetRule(id="x", team_id="t", limit_nano=MAX_LIMIT_NANO + 1, period="total")
    with pytest.raises(ValueError, match="limit"):
        BudgetRule(id="x", team_id="t", limit_nano=-1, period="total")
    with pytest.raises(ValueError, match="kind"):
        BudgetRule(id="x", team_id="t", limit_nano=1, period="total", kind="embedding")
    assert BudgetRule(id="x", team_id="t", limit_nano=MAX_LIMIT_NANO, period="total")
