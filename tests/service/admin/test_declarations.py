"""Teams and budgets declared in a YAML file, applied at start by every replica."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.admin.declarations import apply_declarations, parse_declarations
from service.db.migrate import upgrade
from service.errors import InvalidRequest
from service.runtime import Runtime
from service.settings import Settings

FILE = """
teams:
  - name: research
    webhook_url: https://hooks.slack.com/services/T0/B0/X
    budgets:
      - {name: daily, limit_usd: "50", period: daily}
      - {name: monthly training, limit_usd: "1000", period: monthly, kind: training}
  - name: support
    budgets:
      - {name: total, limit_usd: "0.25", period: total, models: [gpt-4o-mini]}
"""


@pytest.fixture
async def runtime(tmp_path: Path) -> Runtime:
    url = f"sqlite+aiosqlite:///{tmp_path / 'farebox.db'}"
    upgrade(url)
    rt = Runtime(Settings(database_url=url, redis_url=None))
    yield rt
    await rt.engine.dispose()


async def test_applying_twice_changes_nothing_and_removals_follow_the_file(runtime: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "budgets.yaml"
    path.write_text(FILE)
    first = await apply_declarations(runtime.admin, path)
    assert first == {"teams_created": 2, "budgets_created": 3, "budgets_updated": 0, "budgets_removed": 0}
    again = await apply_declarations(runtime.admin, path)
    assert again["teams_created"] == 0 and again["budgets_created"] == 0 and again["budgets_updated"] == 3

    research = await runtime.admin.get_team("research")
    assert research.webhook_url == "https://hooks.slack.com/services/T0/B0/X"
    budgets = {b.name: b for b in await runtime.admin.list_budgets(research.id)}
    assert budgets["daily"].limit_nano == 50_000_000_000 and budgets["daily"].source == "file"
    assert budgets["monthly training"].kind == "training"

    # An API-made budget survives; one dropped from the file goes; a changed limit is applied.
    from decimal import Decimal

    from service.admin.schemas import BudgetIn

    await runtime.admin.create_budget(research.id, BudgetIn(name="adhoc", limit_usd=Decimal("1"), period="weekly"))
    path.write_text(FILE.replace('"50"', '"75"').replace(
        '      - {name: monthly training, limit_usd: "1000", period: monthly, kind: training}\n', ""))
    third = await apply_declarations(runtime.admin, path)
    assert third["budgets_removed"] == 1
    budgets = {b.name: b for b in await runtime.admin.list_budgets(research.id)}
    assert set(budgets) == {"daily", "adhoc"} and budgets["daily"].limit_nano == 75_000_000_000


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("teams: [{name: x, budgets: [{limit_usd: '5', period: hourly}]}]", "period"),
        ("teams: [{name: x, surprise: 1}]", "surprise"),
        ("teams: [", "not valid YAML"),
    ],
)
def test_a_bad_file_is_refused_with_where_and_why(text: str, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_declarations(text, "budgets.yaml")
    assert fragment in caught.value.message and "budgets.yaml" in caught.value.message
