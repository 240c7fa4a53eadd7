"""What a worker does before it serves: schema, declared budgets, counters, tokenizer."""

from __future__ import annotations

import asyncio

import structlog

from pricing.tokens import warm
from service.admin.declarations import apply_declarations
from service.budgets.memory_store import MemoryBudgetStore
from service.runtime import Runtime

log = structlog.get_logger(__name__)


async def prepare(rt: Runtime) -> None:
    settings = rt.settings
    if settings.auto_migrate:
        from service.db.migrate import upgrade

        await asyncio.to_thread(upgrade, settings.database_url)
    if settings.budgets_file is not None:
        counts = await apply_declarations(rt.admin, settings.budgets_file)
        log.info("budgets_file_applied", path=str(settings.budgets_file), **counts)
    # The in-process store starts empty: its counters always come from the ledger.
    if settings.rebuild_counters_at_start or isinstance(rt.store, MemoryBudgetStore):
        try:
            await rt.budgets.rebuild_from_ledger()
        except Exception as exc:  # a replica must still start when Redis is briefly away
            rt.budgets.mark_stale()
            log.warning("counter_rebuild_at_start_failed", error=str(exc))
    await asyncio.to_thread(warm)
