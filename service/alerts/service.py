"""Budget alerts: detect threshold crossings (settle hook and periodic sweep), claim them, deliver them.

The settle hook runs on the request path, so it only compares integers against thresholds it
already holds; the claim (a database insert) runs in a spawned task. The sweep re-derives every
reached threshold from the counters, so a crossing whose process died before claiming it is
still alerted; claims are idempotent, so hook and sweep may both try.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.alerts.claims import claim
from service.alerts.dispatcher import Dispatcher, DispatchConfig, Post
from service.alerts.thresholds import Crossing, crossed_thresholds, reached_thresholds
from service.alerts.webhook import WebhookPoster
from service.budgets.policy import BudgetRule, rule_from_budget
from service.budgets.store import BudgetCounter, CounterState, SettleResult
from service.db.models import Budget

log = structlog.get_logger(__name__)

Rules = Callable[[str], Awaitable[Sequence[BudgetRule]]]
Standing = Callable[[Sequence[BudgetCounter]], Awaitable[Sequence[CounterState]]]
Spawn = Callable[[Awaitable[Any]], Any]

_THRESHOLDS_TTL_S = 60.0  # the change bus drops a team's entry at once; this bounds a missed message
_CLAIMED_MAX = 100_000


class AlertService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        rules: Rules,
        standing: Standing,
        spawn: Spawn,
        default_thresholds: Sequence[int] = (50, 80, 100),
        default_tz: str = "UTC",
        dispatch: DispatchConfig | None = None,
        post: Post | None = None,
        sweep_interval_s: float = 30.0,
    ) -> None:
        self._sessions = sessions
        self._rules = rules
        self._standing = standing
        self._spawn = spawn
        self._defaults = tuple(default_thresholds)
        self._default_tz = default_tz
        self._poster = WebhookPoster() if post is None else None
        self.dispatcher = Dispatcher(sessions, post or self._poster, dispatch)  # type: ignore[arg-type]
        self.sweep_interval_s = sweep_interval_s
        # team_id -> (monotonic expiry, budget_id -> thresholds), so the hook never awaits.
        self._thresholds: dict[str, tuple[float, dict[str, tuple[int, ...]]]] = {}
        # Keys this replica already claimed or saw claimed: the sweep need not insert them again.
        self._claimed: set[tuple[Any, ...]] = set()
        self._tasks: list[asyncio.Task[None]] = []

    # Lifecycle

    async def start(self) -> None:
        if self._tasks:
            return
        if self._poster is not None:
            await self._poster.start()
        self._tasks = [
            asyncio.create_task(self.dispatcher.run(), name="alert-dispatcher"),
            asyncio.create_task(self._sweep_loop(), name="alert-sweep"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._poster is not None:
            await self._poster.close()

    # Detection

    def on_settle(self, principal: Any, hold: Any, result: SettleResult) -> None:
        """The settle hook: integer comparisons here, the claim in a spawned task. Never raises."""
        try:
            if not result.settled:
                return
            team_id = result.after[0].budget.team_id if result.after else None
            if team_id is None:
                return
            thresholds = self._cached_thresholds(team_id)
            if thresholds is None:
                self._spawn(self._check_later(team_id, result))
                return
            crossings = self._crossings(result, thresholds)
            if crossings:
                self._spawn(self.claim(crossings))
        except Exception as exc:  # alerts must never fail a request
            log.warning("alert_hook_failed", error=repr(exc))

    def on_change(self, message: dict) -> None:
        """Change-bus handler: a team's budgets (or the team) changed, so re-read its thresholds."""
        if message.get("type") in ("budgets_changed", "team_changed") and message.get("team_id"):
            self._thresholds.pop(message["team_id"], None)

    def _cached_thresholds(self, team_id: str) -> dict[str, tuple[int, ...]] | None:
        hit = self._thresholds.get(team_id)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    async def _load_thresholds(self, team_id: str) -> dict[str, tuple[int, ...]]:
        return self._remember(team_id, await self._rules(team_id))

    def _remember(self, team_id: str, rules: Sequence[BudgetRule]) -> dict[str, tuple[int, ...]]:
        thresholds = {r.id: tuple(r.thresholds) if r.thresholds else self._defaults for r in rules}
        self._thresholds[team_id] = (time.monotonic() + _THRESHOLDS_TTL_S, thresholds)
        return thresholds

    def _crossings(self, result: SettleResult, thresholds: dict[str, tuple[int, ...]]) -> list[Crossing]:
        crossings: list[Crossing] = []
        for before, after in zip(result.before, result.after, strict=False):
            if after.spent_nano <= before.spent_nano:
                continue
            # A budget created after the cache was filled: its thresholds are the defaults or its own.
            found = thresholds.get(after.budget.budget_id, self._defaults)
            crossings.extend(c for c in crossed_thresholds(before, after, found) if c.key not in self._claimed)
        return crossings

    async def _check_later(self, team_id: str, result: SettleResult) -> None:
        try:
            thresholds = await self._load_thresholds(team_id)
        except Exception as exc:
            log.warning("alert_thresholds_unavailable", team_id=team_id, error=repr(exc))
            return  # the sweep finds the crossing later
        crossings = self._crossings(result, thresholds)
        if crossings:
            await self.claim(crossings)

    async def sweep(self, at: datetime | None = None) -> int:
        """Claim every reached threshold of every budget's current period; returns alerts created."""
        at = at or datetime.now(timezone.utc)
        async with self._sessions() as session:
            budgets = (await session.execute(select(Budget))).scalars().all()
        by_team: dict[str, list[BudgetRule]] = defaultdict(list)
        for budget in budgets:
            by_team[budget.team_id].append(rule_from_budget(budget))
        created = 0
        for team_id, rules in by_team.items():
            thresholds = self._remember(team_id, rules)
            try:
                states = await self._standing([rule.counter(at, self._default_tz) for rule in rules])
            except Exception as exc:
                log.warning("alert_sweep_team_failed", team_id=team_id, error=repr(exc))
                continue
            crossings = [
                c
                for state in states
                for c in reached_thresholds(state, thresholds[state.budget.budget_id])
                if c.key not in self._claimed
            ]
            created += len(await self.claim(crossings))
        return created

    async def _sweep_loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("alert_sweep_failed", error=repr(exc))
            await asyncio.sleep(self.sweep_interval_s)

    # Claiming

    async def claim(self, crossings: Sequence[Crossing]) -> list[int]:
        """Insert the alerts no replica has claimed yet and wake the dispatcher; returns new ids."""
        if not crossings:
            return []
        try:
            async with self._sessions() as session, session.begin():
                ids = await claim(session, crossings)
        except Exception as exc:
            log.warning("alert_claim_failed", error=repr(exc), alerts=len(crossings))
            return []  # the sweep claims it once the database answers
        if len(self._claimed) > _CLAIMED_MAX:
            self._claimed.clear()
        self._claimed.update(c.key for c in crossings)
        if ids:
            log.info("alerts_claimed", alert_ids=ids, thresholds=sorted({c.threshold for c in crossings}))
            self.dispatcher.wake()
        return ids
