"""Delivers claimed alerts to team webhooks, retrying with exponential backoff until one is delivered.

Every replica runs a dispatcher. A replica takes an alert by moving its next_attempt_at to the
end of a lease in one conditional UPDATE (compare-and-set on the value it read), so two replicas
never send the same alert at once; a replica that dies mid-attempt lets the lease lapse and
another one retries. Outcomes are recorded only by the lease holder.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import structlog
from sqlalchemy import Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import metrics
from service.alerts.payload import AlertFacts, body_for
from service.alerts.thresholds import TOTAL_PERIOD_START
from service.budgets.periods import period_bounds
from service.db.models import AlertSent, Budget, Team

log = structlog.get_logger(__name__)

ALERTS: Table = AlertSent.__table__  # type: ignore[assignment]
RETRYABLE = ("pending", "failed")

Post = Callable[[str, dict[str, Any]], Awaitable[None]]


class DeliveryFailed(Exception):
    """The webhook did not accept the alert (an HTTP error status, a timeout, a refused connection)."""


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    retry_initial_s: float = 1.0
    retry_max_s: float = 300.0
    lease_s: float = 60.0  # far longer than one POST may take (the poster's timeout)
    poll_s: float = 2.0  # how often a replica looks for alerts another replica claimed or left
    batch_size: int = 20
    default_tz: str = "UTC"
    webhook_format: str = "auto"


def _utc(ts: datetime | None) -> datetime | None:
    # SQLite returns naive timestamps; everything stored is UTC.
    if ts is None:
        return None
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


def backoff_s(attempts: int, initial_s: float, max_s: float) -> float:
    """The wait after the n-th failed attempt: initial, 2x, 4x ... capped, with ±10 % jitter."""
    delay = min(max_s, initial_s * (2 ** max(0, attempts - 1)))
    return delay * random.uniform(0.9, 1.1)


class Dispatcher:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], post: Post, config: DispatchConfig | None = None) -> None:
        self._sessions = sessions
        self._post = post
        self.config = config or DispatchConfig()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """A new alert was claimed here: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver due alerts until cancelled; database errors are logged and retried at the next poll."""
        while True:
            self._wake.clear()
            delay = self.config.poll_s
            try:
                await self.dispatch_due()
                delay = await self._until_next_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("alert_dispatch_failed", error=repr(exc))
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.01, delay))
            except TimeoutError:
                pass

    async def dispatch_due(self, now: datetime | None = None) -> int:
        """Take every due alert this replica can lease and attempt it; returns how many were attempted."""
        now = now or datetime.now(timezone.utc)
        async with self._sessions() as session:
            due = (
                await session.execute(
                    select(ALERTS.c.id, ALERTS.c.next_attempt_at)
                    .where(ALERTS.c.status.in_(RETRYABLE), ALERTS.c.next_attempt_at <= now)
                    .order_by(ALERTS.c.next_attempt_at, ALERTS.c.id)
                    .limit(self.config.batch_size)
                )
            ).all()
        leased = []
        for alert_id, seen in due:
            lease_until = now + timedelta(seconds=self.config.lease_s)
            if await self._lease(alert_id, seen, lease_until):
                leased.append((alert_id, lease_until))
        await asyncio.gather(*(self._attempt(alert_id, lease) for alert_id, lease in leased))
        return len(leased)

    async def _lease(self, alert_id: int, seen: datetime, lease_until: datetime) -> bool:
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                update(ALERTS)
                .where(ALERTS.c.id == alert_id, ALERTS.c.status.in_(RETRYABLE), ALERTS.c.next_attempt_at == seen)
                .values(next_attempt_at=lease_until)
            )
        return result.rowcount == 1  # type: ignore[attr-defined]

    async def _attempt(self, alert_id: int, lease_until: datetime) -> None:
        try:
            async with self._sessions() as session:
                alert = await session.get(AlertSent, alert_id)
                team = await session.get(Team, alert.team_id) if alert is not None else None
                budget = await session.get(Budget, alert.budget_id) if alert is not None else None
        except Exception as exc:
            log.warning("alert_load_failed", alert_id=alert_id, error=repr(exc))
            return  # the lease lapses and the alert is tried again
        if alert is None:
            return
        if team is None or not team.webhook_url:
            await self._finish(alert_id, lease_until, status="no_webhook", attempts=alert.attempts, next_at=None)
            metrics.record_alert_sent(alert.threshold, "no_webhook")
            return
        url = team.webhook_url
        body = body_for(url, self._facts(alert, team, budget), self.config.webhook_format)
        attempts = alert.attempts + 1
        try:
            await self._post(url, body)
        except Exception as exc:
            error = str(exc) if isinstance(exc, DeliveryFailed) else f"{type(exc).__name__}: {exc}"
            retry_in = backoff_s(attempts, self.config.retry_initial_s, self.config.retry_max_s)
            now = datetime.now(timezone.utc)
            await self._finish(
                alert_id, lease_until, status="failed", attempts=attempts,
                next_at=now + timedelta(seconds=retry_in), error=error[:1000],
            )
            metrics.record_alert_sent(alert.threshold, "failed")
            log.warning("alert_delivery_failed", alert_id=alert_id, attempts=attempts, error=error, retry_in_s=round(retry_in, 2))
            return
        await self._finish(
            alert_id, lease_until, status="delivered", attempts=attempts, next_at=None,
            delivered_at=datetime.now(timezone.utc),
        )
        metrics.record_alert_sent(alert.threshold, "delivered")
        log.info("alert_delivered", alert_id=alert_id, team_id=alert.team_id, budget_id=alert.budget_id, threshold=alert.threshold, attempts=attempts)

    async def _finish(
        self,
        alert_id: int,
        lease_until: datetime,
        *,
        status: str,
        attempts: int,
        next_at: datetime | None,
        error: str | None = None,
        delivered_at: datetime | None = None,
    ) -> None:
        values: dict[str, Any] = {"status": status, "attempts": attempts, "next_attempt_at": next_at}
        if error is not None:
            values["last_error"] = error
        if delivered_at is not None:
            values["delivered_at"] = delivered_at
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                update(ALERTS).where(ALERTS.c.id == alert_id, ALERTS.c.next_attempt_at == lease_until).values(**values)
            )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            log.error("alert_lease_lost", alert_id=alert_id, status=status)

    def _facts(self, alert: AlertSent, team: Team, budget: Budget | None) -> AlertFacts:
        start = _utc(alert.period_start)
        period = budget.period if budget is not None else ""
        end = None
        if start == TOTAL_PERIOD_START or period == "total":
            start = None
        elif budget is not None and start is not None:
            end = period_bounds(budget.period, budget.timezone or self.config.default_tz, start)[1]
        return AlertFacts(
            alert_id=int(alert.id or 0),
            team_id=team.id,
            team_name=team.name,
            budget_id=alert.budget_id,
            budget_name=(budget.name if budget is not None else "") or "",
            period=period,
            threshold=alert.threshold,
            spent_nano=int(alert.spent_nano),
            limit_nano=int(alert.limit_nano),
            period_start=start,
            period_end=end,
            detected_at=_utc(alert.created_at) or datetime.now(timezone.utc),
        )

    async def _until_next_due(self) -> float:
        """Seconds until the earliest retry (or a lapsing lease) is due, at most one poll interval."""
        async with self._sessions() as session:
            earliest = (
                await session.execute(select(func.min(ALERTS.c.next_attempt_at)).where(ALERTS.c.status.in_(RETRYABLE)))
            ).scalar_one()
        if earliest is None:
            return self.config.poll_s
        wait = (_utc(earliest) - datetime.now(timezone.utc)).total_seconds()  # type: ignore[operator]
        return min(self.config.poll_s, max(0.0, wait))
