"""Teams and budgets declared in a YAML file (kept in git by a platform team), applied at start.

    teams:
      - name: research
        webhook_url: https://hooks.slack.com/services/...
        budgets:
          - {name: daily, limit_usd: "50", period: daily}
          - {name: monthly, limit_usd: "1000", period: monthly, kind: inference}

Budgets from the file are marked source=file; one removed from the file is removed from
Farebox, budgets made through the API are left alone. Keys are never declared (secrets).
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError

from service.admin.schemas import BudgetIn, BudgetPatch
from service.admin.service import AdminService
from service.errors import InvalidRequest, NotFound


class _TeamDecl(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    webhook_url: HttpUrl | None = None
    validate_training_files: bool = True
    budgets: list[BudgetIn] = Field(default_factory=list)


class _FileDecl(BaseModel):
    model_config = ConfigDict(extra="forbid")
    teams: list[_TeamDecl] = Field(default_factory=list)


def parse_declarations(text: str, source: str = "budgets file") -> list[_TeamDecl]:
    try:
        data: Any = yaml.safe_load(text) or {}
        return _FileDecl.model_validate(data).teams
    except yaml.YAMLError as exc:
        raise InvalidRequest(f"{source} is not valid YAML: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"{source}: {where}: {first['msg']}") from exc


def _budget_id(team_name: str, budget: BudgetIn) -> str:
    digest = hashlib.sha256(f"{team_name}\0{budget.name or budget.period}".encode()).hexdigest()[:20]
    return f"bud_file_{digest}"


async def apply_declarations(admin: AdminService, path: Path) -> dict[str, int]:
    """Create or update the declared teams and budgets; idempotent, safe on every replica."""
    teams = parse_declarations(path.read_text(), str(path))
    counts = {"teams_created": 0, "budgets_created": 0, "budgets_updated": 0, "budgets_removed": 0}
    for decl in teams:
        webhook = str(decl.webhook_url) if decl.webhook_url else None
        try:
            team = await admin.get_team(decl.name)
            await admin.update_team(team.id, webhook_url=webhook, validate_training_files=decl.validate_training_files, clear_webhook=webhook is None)
        except NotFound:
            team = await admin.create_team(decl.name, webhook_url=webhook, validate_training_files=decl.validate_training_files)
            counts["teams_created"] += 1
        existing = {b.id: b for b in await admin.list_budgets(team.id) if b.source == "file"}
        wanted: set[str] = set()
        for budget in decl.budgets:
            budget_id = _budget_id(decl.name, budget)
            wanted.add(budget_id)
            if budget_id in existing:
                fields = budget.model_dump(exclude={"key_id"})
                await admin.update_budget(budget_id, BudgetPatch(**fields))
                counts["budgets_updated"] += 1
            else:
                await admin.create_budget(team.id, budget, source="file", budget_id=budget_id)
                counts["budgets_created"] += 1
        for budget_id in existing.keys() - wanted:
            await admin.delete_budget(budget_id)
            counts["budgets_removed"] += 1
    return counts


__all__ = ["apply_declarations", "parse_declarations", "Decimal"]
