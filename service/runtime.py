"""Everything one Farebox worker holds for its lifetime, built at start and closed at stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable
from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.requests import Request

from service import metrics
from service.admin.service import AdminService
from service.alerts import install as install_alerts
from service.auth.authenticator import Authenticator
from service.auth.principal import Principal
from service.budgets.gate import BudgetGate, Hold
from service.budgets.memory_store import MemoryBudgetStore
from service.budgets.redis_store import RedisBudgetStore
from service.budgets.store import BudgetStore
from service.change_bus import ChangeBus
from service.db.engine import make_engine, make_sessions
from service.db.models import FineTuneJob, Team
from service.ledger.event import ChargeEvent
from service.ledger.writer import LedgerWriter
from service.models_access import ModelAccess
from service.proxy.upstream import Upstream
from service.settings import Settings

log = structlog.get_logger(__name__)

SIMULATED_UPSTREAM_KEY = "sk-farebox-simulated"


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: AsyncEngine = make_engine(settings.database_url)
        self.sessions: async_sessionmaker[AsyncSession] = make_sessions(self.engine)
        self.redis: Any = None
        if settings.redis_url:
            import redis.asyncio as redis

            self.redis = redis.Redis.from_url(
                settings.redis_url, socket_connect_timeout=2.0, socket_timeout=5.0,
                health_check_interval=30, max_connections=512,
            )
            self.store: BudgetStore = RedisBudgetStore(self.redis, namespace=settings.redis_namespace)
        else:
            self.store = MemoryBudgetStore()
        self.bus = ChangeBus(self.redis, channel=f"{settings.redis_namespace}:changes")
        self.auth = Authenticator(
            self.sessions,
            pepper=settings.key_pepper.get_secret_value(),
            cache_ttl_s=settings.auth_cache_ttl_s,
            fail_limit=settings.auth_fail_limit,
            fail_window_s=settings.auth_fail_window_s,
        )
        self.models = ModelAccess(self.sessions)
        self.admin = AdminService(
            self.sessions, self.bus, pepper=settings.key_pepper.get_secret_value(),
            default_timezone=settings.budget_timezone, default_thresholds=settings.alert_thresholds,
        )
        self.budgets = BudgetGate(
            self.store, self.sessions, settings=settings, team_ids=self.team_ids,
            before_rebuild=self.drain_for_rebuild,
        )
        self.ledger = LedgerWriter(
            self.store,
            self.sessions,
            team_ids=self.team_ids,
            batch_size=settings.ledger_batch_size,
            flush_interval_s=settings.ledger_flush_interval_s,
            on_written=lambda request_ids: metrics.record_ledger_written(len(request_ids)),
            read_outbox=settings.ledger_writer_inline,
            help_backlog=settings.ledger_help_backlog,
        )
        upstream_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else SIMULATED_UPSTREAM_KEY
        self.upstream = Upstream(
            settings.upstream_url,
            upstream_key,
            organization=settings.openai_organization,
            pool_size=settings.upstream_pool_size,
            connect_timeout_s=settings.upstream_connect_timeout_s,
            total_timeout_s=settings.upstream_timeout_s,
            proxy_url=settings.upstream_proxy_url.get_secret_value() if settings.upstream_proxy_url else None,
            ca_file=settings.upstream_ca_file,
        )
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}"
        self.draining = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._team_ids: tuple[list[str], float] = ([], 0.0)
        self.settle_hooks: list[Any] = []  # alerts and gauges subscribe to settled spend
        self.bus.subscribe(self._on_change)
        self.alerts = install_alerts(self)  # settle hook + webhook dispatcher (service/alerts)

    async def start(self) -> None:
        await self.upstream.start()
        await self.bus.start()
        await self.budgets.start()
        await self.ledger.start()
        await self.alerts.start()

    async def stop(self) -> None:
        """Drain: let in-flight settles finish, flush the ledger, then close connections."""
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.drain_grace_s
        while self._tasks and (left := deadline - loop.time()) > 0:  # settles started meanwhile too
            await asyncio.wait(list(self._tasks), timeout=left)
        await self.alerts.stop()
        await self.budgets.stop()
        await self.ledger.stop(drain=True)
        await self.bus.stop()
        await self.upstream.close()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.store.close()  # its own request-path connections
            with contextlib.suppress(Exception):
                await self.redis.aclose()
        await self.engine.dispose()

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run a coroutine that must finish even if the request that started it is gone."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def authenticate(self, request: Request) -> Principal:
        client = request.client.host if request.client else "unknown"
        principal = await self.auth.authenticate(request.headers.get("authorization"), client)
        request.state.principal = principal
        return principal

    async def settle(self, principal: Principal, hold: Hold, event: ChargeEvent) -> None:
        result = await self.budgets.settle(hold, event)
        if result is None:  # unmetered (fail-open): the ledger writer takes it directly
            self.charge_directly(event)
            return
        for hook in self.settle_hooks:
            hook(principal, hold, result)

    def charge_directly(self, event: ChargeEvent) -> None:
        """A charge the counters never saw goes straight to the ledger; the counters are rebuilt."""
        self.ledger.submit_direct(event)
        self.budgets.mark_stale()

    def observe(self, principal: Principal, event: ChargeEvent, *, upstream_s: float, added_s: float) -> None:
        metrics.record_charge(principal.team_name, event)
        metrics.observe_latency(event.endpoint, upstream_s, added_s)

    async def drain_ledger(self, max_rounds: int = 1000) -> int:
        """Write everything the outbox holds now into the ledger (before a rebuild, at stop)."""
        total = 0
        # Batches a dead reader left pending count too, or the ledger would look short of them.
        claiming = getattr(self.store, "claiming_all_pending", None)
        with claiming() if claiming is not None else contextlib.nullcontext():
            for _ in range(max_rounds):
                written = await self.ledger.flush_once()
                total += written
                if written == 0:
                    break
        return total

    async def drain_for_rebuild(self, max_rounds: int = 100) -> bool:
        """Before a counter rebuild: write the charges only this process holds (fail-open, never in
        the outbox); True once all are in the ledger. The outbox is the writer's: a rebuild reads it."""
        for _ in range(max_rounds):
            if not self.ledger.direct_backlog:
                return True
            await self.ledger.flush_once(outbox=False)
        return not self.ledger.direct_backlog

    async def refresh_gauges(self) -> None:
        """Budget gauges are read at scrape time, not on the hot path."""
        # The whole outbox, whichever process drains it, plus the charges only this one holds.
        pending = self.ledger.pending_estimate
        try:
            pending += await self.store.outbox_backlog(await self.team_ids())
        except Exception as exc:  # Redis away: the budget metrics say so; keep what is known
            log.warning("ledger_backlog_unknown", error=str(exc))
        metrics.set_ledger_pending(pending)
        async with self.sessions() as session:
            jobs = (await session.execute(select(FineTuneJob.status, func.count()).group_by(FineTuneJob.status))).all()
        metrics.set_finetune_jobs({status: count for status, count in jobs})
        async with self.sessions() as session:
            teams = {t.id: t.name for t in (await session.execute(select(Team))).scalars()}
        for team_id, team_name in teams.items():
            try:
                states = await self.budgets.standing(team_id)
            except Exception as exc:
                log.warning("gauge_refresh_failed", team_id=team_id, error=str(exc))
                continue
            for state in states:
                b = state.budget
                metrics.set_budget_gauges(
                    team_name, b.name or b.budget_id, b.period, b.limit_nano, state.spent_nano,
                    state.reserved_nano, b.period_start, b.period_end,
                )

    async def team_ids(self) -> list[str]:
        """The ids of every team (for the outbox reader and the reaper), refreshed every few seconds."""
        ids, at = self._team_ids
        loop = asyncio.get_running_loop()
        if loop.time() - at < 5.0 and ids:
            return ids
        async with self.sessions() as session:
            ids = list((await session.execute(select(Team.id))).scalars().all())
        self._team_ids = (ids, loop.time())
        return ids

    async def _on_change(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "key_revoked":
            self.auth.forget_key(message["key_id"])
        elif kind == "team_changed":
            self.auth.forget_team(message["team_id"])
            self.budgets.forget(message["team_id"])
            self._team_ids = ([], 0.0)
        elif kind == "budgets_changed":
            self.budgets.forget(message["team_id"])
        elif kind == "model_access_changed":
            self.models.forget(message.get("model"))
