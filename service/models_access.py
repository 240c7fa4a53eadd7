"""Which team may call which fine-tuned model: the owner, and teams an admin shared it with."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.auth.principal import Principal
from service.db.models import ModelShare, OwnedModel
from service.errors import NotFound

_TTL_S = 30.0


def is_fine_tuned_name(model: str) -> bool:
    return model.startswith("ft:") or model.startswith("ft-") or ":ft-" in model


class ModelAccess:
    """Cached owner/share lookups; models nobody registered (made outside Farebox) stay open.

    `resolve`, when set (the fine-tuning routes set it), is asked about a fine-tuned name that no
    team owns before that name is treated as open: it finds and records the owner when one of
    Farebox's unsettled jobs made it (service/finetune/model_owners.py).
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._cache: dict[str, tuple[str | None, frozenset[str], float]] = {}
        self.resolve: Callable[[str], Awaitable[str | None]] | None = None
        self._resolving: dict[str, asyncio.Future[str | None]] = {}

    async def check_access(self, principal: Principal, model: str) -> None:
        if not is_fine_tuned_name(model):
            return
        owner, shared = await self._lookup(model)
        if owner is None or owner == principal.team_id or principal.team_id in shared:
            return
        raise NotFound(
            f"The model `{model}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )

    async def owner_of(self, model: str) -> str | None:
        return (await self._lookup(model))[0]

    async def _lookup(self, model: str) -> tuple[str | None, frozenset[str]]:
        hit = self._cache.get(model)
        now = time.monotonic()
        if hit is not None and hit[2] > now:
            return hit[0], hit[1]
        async with self._sessions() as session:
            owned = await session.get(OwnedModel, model)
            shares = (await session.execute(select(ModelShare.team_id).where(ModelShare.model == model))).scalars().all()
        owner = owned.team_id if owned is not None else None
        if owner is None and self.resolve is not None and is_fine_tuned_name(model):
            owner = await self._resolve_once(model)
        self._cache[model] = (owner, frozenset(shares), time.monotonic() + _TTL_S)
        return owner, frozenset(shares)

    async def _resolve_once(self, model: str) -> str | None:
        """One upstream check per name at a time, however many requests name it meanwhile."""
        pending = self._resolving.get(model)
        if pending is None:
            assert self.resolve is not None
            pending = asyncio.ensure_future(self.resolve(model))
            self._resolving[model] = pending
            pending.add_done_callback(lambda _: self._resolving.pop(model, None))
        return await asyncio.shield(pending)

    def forget(self, model: str | None = None) -> None:
        if model is None:
            self._cache.clear()
        else:
            self._cache.pop(model, None)
