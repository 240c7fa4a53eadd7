"""The caches the hot-path work added answer exactly what the uncached code answers.

BudgetGate memoises applicable_budgets per period and metering memoises the price context per
UTC day; both must change their answer at the boundary and when the rules change.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from pricing.models import resolve_model
from service.auth.principal import Principal
from service.budgets.gate import BudgetGate
from service.budgets.policy import BudgetRule, applicable_budgets
from service.proxy import metering
from service.settings import Settings

PRINCIPAL = Principal(
    team_id="team_a", team_name="a", key_id="key_1", key_hash="h", expires_at=None
)
RULES = (
    BudgetRule(id="bud_m", team_id="team_a", limit_nano=10**12, period="monthly", name="m"),
    BudgetRule(
        id="bud_d",
        team_id="team_a",
        limit_nano=10**12,
        period="daily",
        name="d",
        key_id="key_1",
        timezone="America/New_York",
    ),
    BudgetRule(
        id="bud_w",
        team_id="team_a",
        limit_nano=10**12,
        period="weekly",
        name="w",
        models=("gpt-4o",),
    ),
)


def _gate() -> BudgetGate:
    return BudgetGate(None, None, settings=Settings(), team_ids=None)  # type: ignore[arg-type]


def _uncached(
    rules: tuple[BudgetRule, ...], at: datetime, model: str = "gpt-4o-mini", key: str = "key_1"
) -> tuple:
    return applicable_budgets(
        rules, key_id=key, model=model, base_model=model, kind="inference", at=at
    )


def test_gate_counters_follow_the_period_boundary() -> None:
    gate = _gate()
    # 05:00 UTC is midnight in New York (EST): the daily counter turns over there, not at 00:00 UTC.
    before = datetime(2026, 1, 31, 4, 59, 59, 999000, tzinfo=UTC)
    for at in (
        before - timedelta(hours=6),
        before,
        before + timedelta(milliseconds=1),
        before + timedelta(hours=19, seconds=1),
    ):
        got = gate._applicable(RULES, PRINCIPAL, "gpt-4o-mini", "gpt-4o-mini", "inference", at)
        assert got == _uncached(RULES, at), at
    first = gate._applicable(RULES, PRINCIPAL, "gpt-4o-mini", "gpt-4o-mini", "inference", before)
    after = gate._applicable(
        RULES,
        PRINCIPAL,
        "gpt-4o-mini",
        "gpt-4o-mini",
        "inference",
        before + timedelta(milliseconds=1),
    )
    assert [c.counter_id for c in first] != [
        c.counter_id for c in after
    ]  # the daily one turned over
    # And back again: a settle-time `at` earlier than the cached period still gets its own period.
    assert (
        gate._applicable(RULES, PRINCIPAL, "gpt-4o-mini", "gpt-4o-mini", "inference", before)
        == first
    )


def test_gate_counters_follow_rules_model_and_key() -> None:
    gate = _gate()
    at = datetime(2026, 3, 10, 12, tzinfo=UTC)
    assert (
        len(gate._applicable(RULES, PRINCIPAL, "gpt-4o-mini", "gpt-4o-mini", "inference", at)) == 2
    )
    assert len(gate._applicable(RULES, PRINCIPAL, "gpt-4o", "gpt-4o", "inference", at)) == 3
    other_key = Principal(
        team_id="team_a", team_name="a", key_id="key_2", key_hash="h2", expires_at=None
    )
    assert gate._applicable(
        RULES, other_key, "gpt-4o-mini", "gpt-4o-mini", "inference", at
    ) == _uncached(RULES, at, key="key_2")
    fewer = RULES[:1]  # an admin deleted budgets: the rules are reloaded as a new tuple
    assert gate._applicable(
        fewer, PRINCIPAL, "gpt-4o-mini", "gpt-4o-mini", "inference", at
    ) == _uncached(fewer, at)
    assert gate._applicable((), PRINCIPAL, "gpt-4o-mini", "gpt-4o-mini", "inference", at) == ()


def test_price_context_is_the_uncached_one_on_every_day() -> None:
    for model in (
        "gpt-4o-mini",
        "gpt-4o-2024-08-06",
        "no-such-model",
        "ft:gpt-4o-mini-2024-07-18:acme::abc123",
    ):
        for at in (
            datetime(2024, 1, 1, 0, 0, tzinfo=UTC),
            datetime(2025, 6, 30, 23, 59, 59, tzinfo=UTC),
            datetime(2025, 7, 1, 0, 0, 1, tzinfo=timezone(timedelta(hours=2))),
        ):
            resolved = resolve_model(model)
            expected = metering.PriceContext(resolved, resolved.rates(at))
            assert metering.price_context(model, at) == expected, (model, at)
