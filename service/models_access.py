"""Which team may call which fine-tuned model: the owner, and teams an admin shared it with."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.auth.principal import Principal
from service.db.models import ModelShare, OwnedModel
from service.errors import NotFound

_TTL_S = 30.0
_MAY_CHANGE_TTL_S = 2.0  # an unowned name an unsettled job might still make


def is_fine_tuned_name(model: str) -> bool:
    return model.startswith("ft:") or model.startswith("ft-") or ":ft-" in model


@dataclass(frozen=True, slots=True)
class Resolution:
    """What the upstream said about an unowned name: its owner, or None, and whether that can change
    soon (an unsettled job that could make the name was asked and had not made it yet)."""

    owner: str | None
    may_change: bool = False


class ModelAccess:
    """Cached owner/share lookups; models nobody registered (made outside Farebox) stay open.

    `resolve`, when set (the fine-tuning routes set it), is asked about an `ft:` name that no team
    owns before that name is treated as open: it finds and records the owner when one of
    Farebox's unsettled jobs made it (service/finetune/model_owners.py).
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._cache: dict[str, tuple[str | None, frozenset[str], float]] = {}
        self.resolve: Callable[[str], Awaitable[Resolution]] | None = None
        self._resolving: dict[str, asyncio.Future[Resolution]] = {}
        self._generation = 0  # moved by forget(): a lookup begun before it does not fill the cache

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
        generation = self._generation
        owner, shares = await self._read(model)
        ttl = _TTL_S
        if owner is None and self.resolve is not None and model.startswith("ft:"):
            found = await self._resolve_once(model)
            # A job settled meanwhile records its models itself: read again before calling it open.
            owner = found.owner or (await self._read(model))[0]
            if owner is None and found.may_change:
                ttl = _MAY_CHANGE_TTL_S
        if generation == self._generation:
            self._cache[model] = (owner, shares, time.monotonic() + ttl)
        return owner, shares

    async def _read(self, model: str) -> tuple[str | None, frozenset[str]]:
        async with self._sessions() as session:
            owned = await session.get(OwnedModel, model)
            shares = (await session.execute(select(ModelShare.team_id).where(ModelShare.model == model))).scalars().all()
        return (owned.team_id if owned is not None else None), frozenset(shares)

    async def _resolve_once(self, model: str) -> Resolution:
        """One upstream check per name at a time, however many requests name it meanwhile."""
        pending = self._resolving.get(model)
        if pending is None:
            assert self.resolve is not None
            pending = asyncio.ensure_future(self.resolve(model))
            self._resolving[model] = pending

            def done(task: asyncio.Future[Resolution]) -> None:
                self._resolving.pop(model, None)
                if not task.cancelled():
                    task.exception()  # retrieved here too, in case every waiter was cancelled

            pending.add_done_callback(done)
        return await asyncio.shield(pending)

    def forget(self, model: str | None = None) -> None:
        self._generation += 1
        if model is None:
            self._cache.clear()
        else:
            self._cache.pop(model, None)
