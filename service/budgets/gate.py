"""The request path's door to budgets: which apply, reserve, settle, standing, rebuild.

Rules come from the database and are cached per team; the change bus drops the cache when
an admin edits them. When the store is unreachable the gate fails closed (503) unless
fail-open is set, in which case the request is metered into the ledger only and the
counters are rebuilt from the ledger once the store answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from pricing.money import format_usd
from service.admin.schemas import StandingOut
from service.auth.principal import Principal
from service.budgets.policy import BudgetRule, applicable_budgets, rule_from_budget
from service.budgets.rebuild import RebuildResult, rebuild_team
from service.budgets.store import (
    BudgetCounter,
    BudgetStore,
    CounterState,
    Denial,
    Reservation,
    SettleResult,
)
from service.db.models import Budget
from service.errors import BudgetExceeded, BudgetStoreUnavailable
from service.ledger.event import ChargeEvent
from service.settings import Settings

log = structlog.get_logger(__name__)

_RULES_TTL_S = 30.0
_STALE_RETRY_S = 5.0
_PER = {"daily": "per day", "weekly": "per week", "monthly": "per month", "total": "in total"}
_MAINTENANCE_INTERVAL_S = 5.0
_COUNTERS_CACHE_MAX = 10_000
_SKIPPED_RETRY_S = 30.0
_Counted = tuple[tuple[BudgetRule, ...], float, float, tuple[BudgetCounter, ...]]


@dataclass(frozen=True, slots=True)
class Hold:
    """A reservation as the request path carries it; metered=False when fail-open skipped the store."""

    reservation: Reservation
    metered: bool = True


class BudgetGate:
    def __init__(
        self,
        store: BudgetStore,
        sessions: async_sessionmaker[AsyncSession],
        *,
        settings: Settings,
        team_ids: Callable[[], Awaitable[Sequence[str]]],
        before_rebuild: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.store = store
        self._sessions = sessions
        self._settings = settings
        self._team_ids = team_ids
        self._rules: dict[str, tuple[tuple[BudgetRule, ...], float]] = {}
        # (team, key, model, base, kind) -> (rules, valid from, valid until, counters): the
        # period arithmetic costs more than the Redis call's own Python, so do it once per period.
        self._counters: dict[tuple[str, str | None, str, str | None, str], _Counted] = {}
        self._task: asyncio.Task[None] | None = None
        self.before_rebuild = before_rebuild
        self.counters_stale = False  # a charge reached the ledger without the counters
        self._stale_generation = 0  # bumped by every failure that makes the counters stale
        self._next_rebuild_at = 0.0  # a rebuild that left teams as they were waits before the next

    # The request path

    async def reserve(
        self,
        principal: Principal,
        *,
        request_id: str,
        model: str,
        base_model: str | None,
        kind: str,
        amount_nano: int,
        ttl_s: int,
        at: datetime | None = None,
    ) -> Hold:
        """Hold the request's worst-case cost on every budget that applies, or refuse it (429)."""
        at = at or datetime.now(timezone.utc)
        rules = await self.rules(principal.team_id)
        counters = self._applicable(rules, principal, model, base_model, kind, at)
        reservation = Reservation(request_id, principal.team_id, amount_nano, counters, ttl_s)
        if not counters:
            return Hold(reservation)
        try:
            denial = await self.store.reserve(reservation)
        except BudgetStoreUnavailable:
            # It may come back empty (restarted without persistence): rebuild from the ledger then.
            self.mark_stale()
            if self._settings.fail_open:
                log.warning("budget_store_down_fail_open", request_id=request_id, team_id=principal.team_id)
                return Hold(reservation, metered=False)
            raise BudgetStoreUnavailable(
                "Farebox cannot reach its budget store, so it cannot check this request against "
                "your budgets; the request was not sent. Retry shortly."
            ) from None
        if denial is not None:
            raise _refusal(denial, at)
        return Hold(reservation)

    async def settle(self, hold: Hold, event: ChargeEvent) -> SettleResult | None:
        """Settle to the real cost; None means the charge must go to the ledger directly."""
        if not hold.metered:
            return None
        try:
            return await self.store.settle(hold.reservation, event)
        except BudgetStoreUnavailable:
            # The hold expires by itself; the ledger gets the charge and the counters are rebuilt.
            self.mark_stale()
            log.warning("settle_store_down", request_id=event.request_id)
            return None

    def _applicable(
        self, rules: tuple[BudgetRule, ...], principal: Principal, model: str,
        base_model: str | None, kind: str, at: datetime,
    ) -> tuple[BudgetCounter, ...]:
        """applicable_budgets, reused while the rules are unchanged and `at` is in every period."""
        key = (principal.team_id, principal.key_id, model, base_model, kind)
        ts = at.timestamp()
        hit = self._counters.get(key)
        if hit is not None and hit[0] is rules and hit[1] <= ts < hit[2]:
            return hit[3]
        counters = applicable_budgets(
            rules, key_id=principal.key_id, model=model, base_model=base_model, kind=kind,
            at=at, default_tz=self._settings.budget_timezone,
        )
        starts = [c.period_start.timestamp() for c in counters if c.period_start is not None]
        ends = [c.period_end.timestamp() for c in counters if c.period_end is not None]
        if len(self._counters) >= _COUNTERS_CACHE_MAX:
            self._counters.clear()
        valid = (max(starts, default=-math.inf), min(ends, default=math.inf))
        self._counters[key] = (rules, *valid, counters)
        return counters

    # Rules

    async def rules(self, team_id: str) -> tuple[BudgetRule, ...]:
        hit = self._rules.get(team_id)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        try:
            async with self._sessions() as session:
                rows = (await session.execute(select(Budget).where(Budget.team_id == team_id))).scalars().all()
        except Exception as exc:
            if hit is None:
                raise
            # The database is away: keep enforcing the rules last read (an admin edit cannot be
            # saved meanwhile anyway) and ask the database again in a few seconds.
            log.warning("budget_rules_stale_database_unavailable", team_id=team_id, error=type(exc).__name__)
            self._rules[team_id] = (hit[0], now + _STALE_RETRY_S)
            return hit[0]
        rules = tuple(rule_from_budget(row) for row in rows)
        self._rules[team_id] = (rules, now + _RULES_TTL_S)
        return rules

    def forget(self, team_id: str | None = None) -> None:
        if team_id is None:
            self._rules.clear()
        else:
            self._rules.pop(team_id, None)

    # Standing and rebuild

    async def standing(self, team_id: str, at: datetime | None = None) -> list[CounterState]:
        at = at or datetime.now(timezone.utc)
        tz = self._settings.budget_timezone
        counters = [rule.counter(at, tz) for rule in await self.rules(team_id)]
        if not counters:
            return []
        return await self.store.standing(counters)

    async def standing_out(self, team_id: str) -> list[StandingOut]:
        return [standing_out(state) for state in await self.standing(team_id)]

    async def rebuild_from_ledger(self, at: datetime | None = None) -> RebuildResult:
        """Bring every current counter to the ledger's truth while charges keep settling.

        Each team's counters are snapshotted with their outbox position in one store call, then
        moved by what the ledger and the outbox hold up to it (service/budgets/rebuild.py), so a
        charge settled meanwhile by any replica stays counted once. Teams that cannot be read
        exactly are left as they were and the counters stay marked stale, to be tried again.
        """
        at = at or datetime.now(timezone.utc)
        generation = self._stale_generation
        # Charges only this process holds (fail-open) go to the ledger before anything is read.
        own_written = await self.before_rebuild() if self.before_rebuild is not None else True
        tz = self._settings.budget_timezone
        async with self._sessions() as session:
            budgets = (await session.execute(select(Budget))).scalars().all()
        by_team: dict[str, list[Budget]] = {}
        for budget in budgets:
            by_team.setdefault(budget.team_id, []).append(budget)
        snapshots = []
        for team_id, team_budgets in by_team.items():
            counters = [rule_from_budget(b).counter(at, tz) for b in team_budgets]
            snapshots.append((team_budgets, await self.store.snapshot(team_id, counters)))
        moved, skipped = 0, []
        for team_budgets, snap in snapshots:
            n = await rebuild_team(self.store, self._sessions, team_budgets, snap) if own_written else None
            # n short of the counters: a later snapshot took some over (another rebuild); that one
            # may have read the ledger before this process's last direct charges, so try again.
            if n is None or n < len(snap.counters):
                skipped.append(snap.team_id)
            moved += n or 0
        if self._stale_generation == generation:  # no failure, no direct charge since it began
            self.counters_stale = bool(skipped)
        self._next_rebuild_at = time.monotonic() + (_SKIPPED_RETRY_S if skipped else 0.0)
        result = RebuildResult(counters=moved, teams=len(snapshots) - len(skipped), skipped=tuple(skipped))
        if skipped:
            log.warning("counter_rebuild_left_teams_as_they_were", teams=skipped)
        log.info("counters_rebuilt", counters=moved, teams=result.teams)
        return result

    def mark_stale(self) -> None:
        """The counters may miss charges (a store failure, a charge written straight to the ledger):
        the maintenance loop rebuilds them once the store answers."""
        self.counters_stale = True
        self._stale_generation += 1
        self._next_rebuild_at = 0.0

    # Maintenance: reap dead holds, rebuild counters once the store is back

    async def start(self) -> None:
        self._task = asyncio.create_task(self._maintain(), name="budget-maintenance")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(_MAINTENANCE_INTERVAL_S)
            try:
                reaped = await self.store.reap_expired(await self._team_ids())
                if reaped:
                    log.warning("reservations_reaped", count=reaped)
                if self.counters_stale and time.monotonic() >= self._next_rebuild_at:
                    await self.rebuild_from_ledger()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, BudgetStoreUnavailable):
                    self.mark_stale()  # even with no traffic, rebuild once the store is back
                log.warning("budget_maintenance_failed", error=str(exc))


def _refusal(denial: Denial, at: datetime) -> BudgetExceeded:
    state = denial.state
    budget = state.budget
    per = _PER[budget.period]
    message = (
        f"Budget '{budget.name or budget.budget_id}' ({budget.budget_id}) would be exceeded: limit "
        f"${format_usd(budget.limit_nano)} {per}, spent ${format_usd(state.spent_nano)}, reserved "
        f"${format_usd(state.reserved_nano)}, remaining ${format_usd(state.remaining_nano)}; this "
        f"request may cost up to ${format_usd(denial.requested_nano)}."
    )
    headers: dict[str, str] = {}
    if budget.period_end is not None:
        retry = max(1, math.ceil((budget.period_end - at).total_seconds()))
        headers["Retry-After"] = str(retry)
        message += f" The budget resets in {retry} s."
    return BudgetExceeded(message, headers=headers)


def standing_out(state: CounterState) -> StandingOut:
    b: BudgetCounter = state.budget
    utilisation = (state.spent_nano / b.limit_nano) if b.limit_nano else (1.0 if state.spent_nano else 0.0)
    return StandingOut(
        budget_id=b.budget_id, name=b.name, period=b.period, period_start=b.period_start,
        period_end=b.period_end, limit_usd=format_usd(b.limit_nano), spent_usd=format_usd(state.spent_nano),
        reserved_usd=format_usd(state.reserved_nano), remaining_usd=format_usd(state.remaining_nano),
        limit_nano=b.limit_nano, spent_nano=state.spent_nano, reserved_nano=state.reserved_nano,
        remaining_nano=state.remaining_nano, utilisation=round(utilisation, 6),
    )
