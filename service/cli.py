"""The `farebox` command: serve, migrate, demo, and admin operations straight on the database."""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from service.errors import FareboxError
from service.settings import Settings

T = TypeVar("T")
app = typer.Typer(help="Farebox: a cost-accounting and budgeting proxy for the OpenAI API.", no_args_is_help=True)
teams_app = typer.Typer(help="Teams.", no_args_is_help=True)
keys_app = typer.Typer(help="Client keys (shown once, stored hashed).", no_args_is_help=True)
budgets_app = typer.Typer(help="Budgets and their standing.", no_args_is_help=True)
counters_app = typer.Typer(help="Budget counters in Redis (or in process).", no_args_is_help=True)
app.add_typer(teams_app, name="teams")
app.add_typer(keys_app, name="keys")
app.add_typer(budgets_app, name="budgets")
app.add_typer(counters_app, name="counters")
console = Console()


def run_with_runtime(work: Callable[[Any], Awaitable[T]], settings: Settings | None = None) -> T:
    """Run one admin operation against the configured database and store, then close them."""
    from service.runtime import Runtime

    async def main() -> T:
        rt = Runtime(settings or Settings())
        try:
            return await work(rt)
        finally:
            await rt.engine.dispose()
            if rt.redis is not None:
                await rt.redis.aclose()

    try:
        return asyncio.run(main())
    except FareboxError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None


def _settings() -> Settings:
    """The settings, or a readable error and exit status 2 when the environment is inconsistent."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "settings"
            console.print(f"[red]error:[/red] {where}: {error['msg']}")
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: str = typer.Option(None, help="Interface to listen on (FAREBOX_HOST)."),
    port: int = typer.Option(None, help="Port (FAREBOX_PORT)."),
    workers: int = typer.Option(None, help="Worker processes (FAREBOX_WORKERS)."),
) -> None:
    """Serve the proxy with uvicorn (uvloop, httptools)."""
    import uvicorn

    from service.logging import configure_logging

    settings = _settings()
    host = host or settings.host
    port = port or settings.port
    workers = workers or settings.workers
    configure_logging(settings)
    writer_process = settings.ledger_writer_process
    own_metrics_dir = None
    if (workers > 1 or writer_process) and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Every worker writes its metrics here; /metrics on any worker sums them all.
        own_metrics_dir = tempfile.mkdtemp(prefix="farebox-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_metrics_dir
    if settings.auto_migrate:
        from service.db.migrate import upgrade

        upgrade(settings.database_url)  # once, before the workers fork
        os.environ["FAREBOX_AUTO_MIGRATE"] = "false"
    supervisor = None
    if writer_process:
        from service.ledger.process import WriterSupervisor

        supervisor = WriterSupervisor(settings)
        supervisor.start()
        os.environ["FAREBOX_LEDGER_WRITER"] = "external"  # the workers leave the outbox to it
    try:
        _run_uvicorn(host, port, workers, settings)
    finally:
        if supervisor is not None:
            supervisor.stop()  # after the workers: what they settled while draining gets written
        if own_metrics_dir is not None:
            shutil.rmtree(own_metrics_dir, ignore_errors=True)


def _run_uvicorn(host: str, port: int, workers: int, settings: Settings) -> None:
    import signal

    import uvicorn

    from service import serve_workers

    # uvicorn drains, then raises SIGTERM again with the handler it found installed: make that
    # an exit with status 0, so a drained stop does not read as a crash (143) to an orchestrator.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    options = dict(
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=int(settings.drain_grace_s),
        proxy_headers=True,
        forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
    )
    if workers > 1 and settings.reuse_port and serve_workers.supported():
        serve_workers.run(uvicorn.Config("service.app:create_app", **options))  # type: ignore[arg-type]
    else:
        uvicorn.run("service.app:create_app", **options)  # type: ignore[arg-type]


@app.command("ledger-writer")
def ledger_writer() -> None:
    """Drain the Redis outbox into the ledger until SIGTERM (for FAREBOX_LEDGER_WRITER=external)."""
    import uvloop

    from service.ledger.process import run_writer
    from service.logging import configure_logging

    settings = _settings()
    configure_logging(settings)
    if settings.auto_migrate:
        from service.db.migrate import upgrade

        upgrade(settings.database_url)
    try:
        left = uvloop.run(run_writer(settings))
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    raise typer.Exit(1 if left else 0)


@app.command()
def migrate(revision: str = typer.Argument("head", help="Alembic revision to upgrade to.")) -> None:
    """Create or upgrade the database schema (Alembic)."""
    from service.db.migrate import current, upgrade

    settings = Settings()
    upgrade(settings.database_url, revision)
    console.print(f"schema at revision [bold]{current(settings.database_url)}[/bold]")


@app.command()
def demo(
    port: int = typer.Option(8080, help="Port for Farebox."),
    exit_after: bool = typer.Option(False, "--exit", help="Exit after the walkthrough instead of serving."),
) -> None:
    """Start Farebox on the embedded default with the simulated upstream and show it working."""
    from service.demo import run_demo

    sys.exit(run_demo(port=port, keep_serving=not exit_after))


# Teams


@teams_app.command("create")
def teams_create(
    name: str,
    webhook: str = typer.Option(None, help="URL that receives budget alerts."),
    no_validation: bool = typer.Option(False, help="Skip training-file validation for this team."),
) -> None:
    team = run_with_runtime(lambda rt: rt.admin.create_team(name, webhook_url=webhook, validate_training_files=not no_validation))
    console.print(f"team [bold]{team.name}[/bold] created: id {team.id}")


@teams_app.command("list")
def teams_list() -> None:
    teams = run_with_runtime(lambda rt: rt.admin.list_teams())
    table = Table("id", "name", "webhook", "validates files", "created")
    for t in teams:
        table.add_row(t.id, t.name, t.webhook_url or "", "yes" if t.validate_training_files else "no", str(t.created_at)[:19])
    console.print(table)


# Keys


@keys_app.command("create")
def keys_create(
    team: str = typer.Argument(..., help="Team id or name."),
    name: str = typer.Option("", help="A label for the key."),
    expires: datetime = typer.Option(None, help="Expiry (ISO 8601, UTC when no offset)."),
) -> None:
    async def work(rt: Any) -> tuple[Any, str]:
        t = await rt.admin.get_team(team)
        return await rt.admin.create_key(t.id, name=name, expires_at=expires)

    key, secret = run_with_runtime(work)
    console.print(f"key {key.id} for team {key.team_id} (shown once, store it now):")
    print(secret)


@keys_app.command("list")
def keys_list(team: str = typer.Argument(..., help="Team id or name.")) -> None:
    async def work(rt: Any) -> list[Any]:
        return await rt.admin.list_keys((await rt.admin.get_team(team)).id)

    table = Table("id", "prefix", "name", "created", "expires", "revoked")
    for k in run_with_runtime(work):
        table.add_row(k.id, k.prefix + "…", k.name, str(k.created_at)[:19], str(k.expires_at or "")[:19], str(k.revoked_at or "")[:19])
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key; every replica stops accepting it at once."""
    run_with_runtime(lambda rt: rt.admin.revoke_key(key_id))
    console.print(f"key {key_id} revoked")


# Budgets


@budgets_app.command("set")
def budgets_set(
    team: str = typer.Argument(..., help="Team id or name."),
    limit: str = typer.Option(..., help="Limit in USD, e.g. 50 or 12.5."),
    period: str = typer.Option(..., help="daily, weekly, monthly or total."),
    name: str = typer.Option("", help="Budget name (shown in refusals and alerts)."),
    kind: str = typer.Option(None, help="Only inference or only training."),
    model: list[str] = typer.Option(None, help="Only these models (repeatable)."),
    key: str = typer.Option(None, help="Only this key id."),
    timezone: str = typer.Option(None, help="IANA time zone of the calendar period."),
    threshold: list[int] = typer.Option(None, help="Alert thresholds in percent (repeatable)."),
) -> None:
    """Create a budget for a team (or one of its keys)."""
    from service.admin.schemas import BudgetIn

    try:
        spec = BudgetIn(
            name=name, limit_usd=Decimal(limit), period=period, kind=kind, models=model or None,
            key_id=key, timezone=timezone, thresholds=threshold or None,
        )
    except (InvalidOperation, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None

    async def work(rt: Any) -> Any:
        t = await rt.admin.get_team(team)
        return await rt.admin.create_budget(t.id, spec)

    budget = run_with_runtime(work)
    console.print(f"budget {budget.id} set: ${limit} {period} for team {budget.team_id}")


@budgets_app.command("list")
def budgets_list(team: str = typer.Argument(None, help="Team id or name (all teams when omitted).")) -> None:
    from pricing.money import format_usd

    async def work(rt: Any) -> list[Any]:
        team_id = (await rt.admin.get_team(team)).id if team else None
        return await rt.admin.list_budgets(team_id)

    table = Table("id", "team", "name", "limit USD", "period", "kind", "models", "key", "source")
    for b in run_with_runtime(work):
        table.add_row(b.id, b.team_id, b.name, format_usd(b.limit_nano), b.period, b.kind or "all", ",".join(b.models or []) or "all", b.key_id or "all", b.source)
    console.print(table)


@budgets_app.command("rm")
def budgets_rm(budget_id: str) -> None:
    run_with_runtime(lambda rt: rt.admin.delete_budget(budget_id))
    console.print(f"budget {budget_id} removed")


@budgets_app.command("standing")
def budgets_standing(team: str = typer.Argument(..., help="Team id or name.")) -> None:
    """Limit, spent, reserved and remaining of each budget in its current period."""

    async def work(rt: Any) -> list[Any]:
        return await rt.budgets.standing_out((await rt.admin.get_team(team)).id)

    table = Table("budget", "period", "limit", "spent", "reserved", "remaining", "used", "resets")
    for s in run_with_runtime(work):
        table.add_row(s.name or s.budget_id, s.period, s.limit_usd, s.spent_usd, s.reserved_usd, s.remaining_usd, f"{s.utilisation:.1%}", str(s.period_end or "never")[:19])
    console.print(table)


@counters_app.command("rebuild")
def counters_rebuild() -> None:
    """Recompute every budget counter of the current periods from the ledger (Postgres is the truth)."""
    result = run_with_runtime(lambda rt: rt.budgets.rebuild_from_ledger())
    console.print(f"{result.counters} counters of {result.teams} teams rebuilt from the ledger")
    if result.skipped:
        # Their counters were left as they were: the ledger could not be read exactly for them.
        console.print(f"[red]not rebuilt, try again shortly:[/red] {', '.join(result.skipped)}")
        raise typer.Exit(1)


def _mount_optional() -> None:
    """Subcommands owned by later parts (estimate, report, jobs) register here."""
    for module in ("service.finetune.cli", "service.reports.cli"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        mod.register(app)


_mount_optional()


def main() -> None:
    app()
