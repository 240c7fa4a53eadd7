"""Admin operations shared by the HTTP API and the CLI; every change is announced on the bus."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from pricing import money
from pricing.errors import PricingError
from service.admin.schemas import BudgetIn, BudgetPatch
from service.auth.keys import mint_key, new_id
from service.change_bus import ChangeBus
from service.db.models import ApiKey, Budget, ModelShare, OwnedModel, Team, utcnow
from service.errors import Conflict, InvalidRequest, NotFound



def usd_to_nano(usd: Decimal) -> int:
    try:
        return money.usd_to_nano(str(usd))
    except PricingError as exc:
        raise InvalidRequest(f"{usd} USD is finer than a nano-dollar.", param="limit_usd") from exc


nano_to_usd = money.format_usd


class AdminService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        bus: ChangeBus,
        *,
        pepper: str,
        default_timezone: str = "UTC",
        default_thresholds: Sequence[int] = (50, 80, 100),
    ) -> None:
        self._sessions = sessions
        self._bus = bus
        self._pepper = pepper
        self._tz = default_timezone
        self._thresholds = list(default_thresholds)

    # Teams

    async def create_team(self, name: str, *, webhook_url: str | None = None, validate_training_files: bool = True) -> Team:
        team = Team(id=new_id("team"), name=name, webhook_url=webhook_url, validate_training_files=validate_training_files)
        async with self._sessions() as session:
            session.add(team)
            try:
                await session.commit()
            except IntegrityError as exc:
                raise Conflict(f"A team named '{name}' already exists.", param="name") from exc
        await self._bus.publish({"type": "team_changed", "team_id": team.id})
        return team

    async def list_teams(self) -> list[Team]:
        async with self._sessions() as session:
            return list((await session.execute(select(Team).order_by(Team.created_at, Team.id))).scalars())

    async def get_team(self, team_ref: str) -> Team:
        """By id, or by name (the CLI takes names)."""
        async with self._sessions() as session:
            team = await session.get(Team, team_ref)
            if team is None:
                team = (await session.execute(select(Team).where(Team.name == team_ref))).scalar_one_or_none()
        if team is None:
            raise NotFound(f"No team '{team_ref}'.")
        return team

    async def update_team(self, team_id: str, *, webhook_url: str | None = None, validate_training_files: bool | None = None, clear_webhook: bool = False) -> Team:
        async with self._sessions() as session:
            team = await session.get(Team, team_id)
            if team is None:
                raise NotFound(f"No team '{team_id}'.")
            if webhook_url is not None or clear_webhook:
                team.webhook_url = webhook_url
            if validate_training_files is not None:
                team.validate_training_files = validate_training_files
            await session.commit()
        await self._bus.publish({"type": "team_changed", "team_id": team_id})
        return team

    # Keys

    async def create_key(self, team_id: str, *, name: str = "", expires_at: datetime | None = None) -> tuple[ApiKey, str]:
        await self.get_team(team_id)
        if expires_at is not None:
            if expires_at.tzinfo is None:
                expires_at = expires_at.replace(tzinfo=timezone.utc)
            if expires_at <= datetime.now(timezone.utc):
                raise InvalidRequest("expires_at is in the past.", param="expires_at")
        minted = mint_key(self._pepper)
        key = ApiKey(id=new_id("key"), team_id=team_id, name=name, prefix=minted.prefix, key_hash=minted.key_hash, expires_at=expires_at)
        async with self._sessions() as session:
            session.add(key)
            await session.commit()
        return key, minted.secret

    async def list_keys(self, team_id: str) -> list[ApiKey]:
        await self.get_team(team_id)
        async with self._sessions() as session:
            return list((await session.execute(select(ApiKey).where(ApiKey.team_id == team_id).order_by(ApiKey.created_at))).scalars())

    async def revoke_key(self, key_id: str) -> ApiKey:
        async with self._sessions() as session:
            key = await session.get(ApiKey, key_id)
            if key is None:
                raise NotFound(f"No key '{key_id}'.")
            if key.revoked_at is None:
                key.revoked_at = utcnow()
                await session.commit()
        await self._bus.publish({"type": "key_revoked", "key_id": key_id})
        return key

    # Budgets

    async def create_budget(self, team_id: str, spec: BudgetIn, *, source: str = "api", budget_id: str | None = None) -> Budget:
        await self.get_team(team_id)
        tz = self._check_tz(spec.timezone or self._tz)
        if spec.key_id is not None:
            await self._check_key_of_team(spec.key_id, team_id)
        budget = Budget(
            id=budget_id or new_id("bud"), team_id=team_id, key_id=spec.key_id, name=spec.name or spec.period,
            limit_nano=usd_to_nano(spec.limit_usd), period=spec.period, timezone=tz, models=spec.models,
            kind=spec.kind, thresholds=_check_thresholds(spec.thresholds), source=source,
        )
        async with self._sessions() as session:
            session.add(budget)
            await session.commit()
        await self._bus.publish({"type": "budgets_changed", "team_id": team_id})
        return budget

    async def update_budget(self, budget_id: str, patch: BudgetPatch) -> Budget:
        async with self._sessions() as session:
            budget = await session.get(Budget, budget_id)
            if budget is None:
                raise NotFound(f"No budget '{budget_id}'.")
            fields = patch.model_dump(exclude_unset=True)
            if "limit_usd" in fields and fields["limit_usd"] is not None:
                budget.limit_nano = usd_to_nano(fields.pop("limit_usd"))
            fields.pop("limit_usd", None)
            if fields.get("timezone"):
                budget.timezone = self._check_tz(fields.pop("timezone"))
            if "thresholds" in fields:
                budget.thresholds = _check_thresholds(fields.pop("thresholds"))
            for name, value in fields.items():
                if value is not None or name in ("models", "kind"):
                    setattr(budget, name, value)
            budget.updated_at = utcnow()
            await session.commit()
            team_id = budget.team_id
        await self._bus.publish({"type": "budgets_changed", "team_id": team_id})
        return budget

    async def delete_budget(self, budget_id: str) -> None:
        async with self._sessions() as session:
            budget = await session.get(Budget, budget_id)
            if budget is None:
                raise NotFound(f"No budget '{budget_id}'.")
            team_id = budget.team_id
            await session.delete(budget)
            await session.commit()
        await self._bus.publish({"type": "budgets_changed", "team_id": team_id})

    async def list_budgets(self, team_id: str | None = None) -> list[Budget]:
        async with self._sessions() as session:
            query = select(Budget).order_by(Budget.team_id, Budget.created_at)
            if team_id is not None:
                query = query.where(Budget.team_id == team_id)
            return list((await session.execute(query)).scalars())

    # Fine-tuned models

    async def share_model(self, model: str, team_id: str) -> None:
        await self.get_team(team_id)
        async with self._sessions() as session:
            if await session.get(OwnedModel, model) is None:
                raise NotFound(f"No fine-tuned model '{model}' is registered with Farebox.")
            if await session.get(ModelShare, (model, team_id)) is None:
                session.add(ModelShare(model=model, team_id=team_id))
                await session.commit()
        await self._bus.publish({"type": "model_access_changed", "model": model})

    async def unshare_model(self, model: str, team_id: str) -> None:
        async with self._sessions() as session:
            await session.execute(delete(ModelShare).where(ModelShare.model == model, ModelShare.team_id == team_id))
            await session.commit()
        await self._bus.publish({"type": "model_access_changed", "model": model})

    async def claim_model(self, model: str, team_id: str) -> OwnedModel:
        """Register a fine-tuned model made outside Farebox as a team's own."""
        await self.get_team(team_id)
        async with self._sessions() as session:
            owned = await session.get(OwnedModel, model)
            if owned is not None and owned.team_id != team_id:
                raise Conflict(f"Model '{model}' already belongs to another team.")
            if owned is None:
                owned = OwnedModel(name=model, team_id=team_id)
                session.add(owned)
                await session.commit()
        await self._bus.publish({"type": "model_access_changed", "model": model})
        return owned

    async def _check_key_of_team(self, key_id: str, team_id: str) -> None:
        async with self._sessions() as session:
            key = await session.get(ApiKey, key_id)
        if key is None or key.team_id != team_id:
            raise InvalidRequest(f"Key '{key_id}' is not a key of team '{team_id}'.", param="key_id")

    @staticmethod
    def _check_tz(name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise InvalidRequest(f"Unknown time zone '{name}'.", param="timezone") from exc
        return name


def _check_thresholds(values: list[int] | None) -> list[int] | None:
    if values is None:
        return None
    if any(v < 1 or v > 1000 for v in values):
        raise InvalidRequest("Alert thresholds are percentages between 1 and 1000.", param="thresholds")
    return sorted(set(values))
