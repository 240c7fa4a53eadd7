"""`farebox report spend | statement | reconcile`: the finance reports on the command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import typer

from service.errors import FareboxError

report_app = typer.Typer(help="Finance reports from the ledger.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Called by service/cli.py: adds the `report` command group."""
    app.add_typer(report_app, name="report")


def _fail(message: str, code: int = 2) -> typer.Exit:
    from service.cli import console

    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
    else:
        output.write_text(text, encoding="utf-8")


@report_app.command("spend")
def spend(
    group_by: str = typer.Option("", "--group-by", help="Comma-separated: team, key, model, base_model, kind."),
    granularity: str = typer.Option("day", help="hour, day, week, month or none."),
    since: str = typer.Option(None, help="Start, included: 2026-11-01, 2026-11 or ISO 8601 (UTC)."),
    until: str = typer.Option(None, help="End, excluded; same forms."),
    team: str = typer.Option(None, help="Only this team (id or name)."),
    key: str = typer.Option(None, help="Only this key id."),
    model: str = typer.Option(None, help="Only this requested model."),
    kind: str = typer.Option(None, help="inference or training."),
    status: str = typer.Option(None, help="Only ledger rows of this status (answered from the ledger)."),
    source: str = typer.Option("auto", help="auto, rollup or ledger."),
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
    output: Path = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
) -> None:
    """Spend and tokens grouped by team/key/model/base_model/kind and day/week/month."""
    from service.cli import run_with_runtime
    from service.reports.params import spend_query
    from service.reports.render import spend_csv, spend_json
    from service.reports.spend import spend_report

    if fmt not in ("table", "csv", "json"):
        raise _fail("--format must be table, csv or json")
    try:
        query = spend_query(
            group_by=group_by, granularity=granularity, since=since, until=until, key=key, model=model,
            kind=kind, status=status, source=source,
        )
    except FareboxError as exc:
        raise _fail(exc.message) from None

    async def work(rt: Any) -> Any:
        q = query.for_team((await rt.admin.get_team(team)).id) if team else query
        async with rt.sessions() as session:
            return await spend_report(session, q)

    report = run_with_runtime(work)
    if fmt == "csv":
        _emit(spend_csv(report), output)
    elif fmt == "json":
        _emit(orjson.dumps(spend_json(report), option=orjson.OPT_INDENT_2).decode(), output)
    else:
        _print_table(spend_json(report), f"spend ({report.source})")


_TABLE_SUMS = ("requests", "tokens", "cost_usd")


def _print_table(body: dict[str, Any], title: str) -> None:
    """A compact table for people (names rather than ids, tokens in one column); CSV and JSON have it all."""
    from rich.table import Table

    from service.cli import console

    labels = [c for c in (body["rows"][0] if body["rows"] else {}) if c not in (*_TABLE_SUMS, "team_id", "key_id")]
    labels = [c for c in labels if c not in ("prompt_tokens", "cached_tokens", "completion_tokens", "trained_tokens", "cost_nano")]
    table = Table(title=title)
    for column in labels:
        table.add_column(column, no_wrap=column == "period_start", overflow="fold")
    for column in _TABLE_SUMS:
        table.add_column(column, justify="right", no_wrap=True)
    for row in body["rows"]:
        table.add_row(*("" if row.get(c) is None else str(row[c]) for c in (*labels, *_TABLE_SUMS)))
    if labels:
        totals = body["totals"]
        table.add_row("TOTAL", *([""] * (len(labels) - 1)), *(str(totals[c]) for c in _TABLE_SUMS), style="bold")
    console.print(table)


@report_app.command("statement")
def statement(
    team: str = typer.Argument(..., help="Team id or name."),
    month: str = typer.Option(..., help="Calendar month in UTC, e.g. 2026-11."),
    fmt: str = typer.Option("csv", "--format", help="csv or html."),
    output: Path = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
) -> None:
    """A team's monthly statement: every model and kind with tokens, rates and cost."""
    from service.cli import run_with_runtime
    from service.reports.params import parse_month
    from service.reports.statement import build_statement, statement_csv
    from service.reports.statement_html import statement_html

    if fmt not in ("csv", "html"):
        raise _fail("--format must be csv or html")
    try:
        start, end = parse_month(month)
    except FareboxError as exc:
        raise _fail(exc.message) from None

    async def work(rt: Any) -> Any:
        team_row = await rt.admin.get_team(team)
        async with rt.sessions() as session:
            return await build_statement(session, team_row, start, end)

    st = run_with_runtime(work)
    _emit(statement_csv(st) if fmt == "csv" else statement_html(st), output)


@report_app.command("reconcile")
def reconcile_cmd(
    team: str = typer.Option(None, help="Only this team (id or name)."),
    fmt: str = typer.Option("table", "--format", help="table or json."),
    no_drain: bool = typer.Option(False, "--no-drain", help="Do not write the outbox to the ledger first."),
) -> None:
    """Each budget's counter (Redis) against the ledger for its current period; exits 1 on a mismatch."""
    from rich.table import Table

    from service.budgets.memory_store import MemoryBudgetStore
    from service.cli import console, run_with_runtime
    from service.reports.reconcile import reconcile, reconciliation_json

    async def work(rt: Any) -> Any:
        if isinstance(rt.store, MemoryBudgetStore):
            raise _fail("the embedded budget store lives inside the server; use GET /admin/reports/reconciliation")
        team_id = (await rt.admin.get_team(team)).id if team else None
        return await reconcile(
            rt.sessions, rt.store, default_tz=rt.settings.budget_timezone, team_id=team_id,
            drain=None if no_drain else rt.drain_ledger,
        )

    body = reconciliation_json(run_with_runtime(work))
    if fmt == "json":
        _emit(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode(), None)
    else:
        table = Table("budget", "team", "period", "start", "counter USD", "ledger USD", "difference USD", "status")
        for b in body["budgets"]:
            table.add_row(
                b["name"] or b["budget_id"], b["team_id"], b["period"], (b["period_start"] or "")[:10],
                b["counter_usd"], b["ledger_usd"], b["difference_usd"],
                "ok" if b["status"] == "ok" else "[red]MISMATCH[/red]",
            )
        console.print(table)
        console.print(f"{len(body['budgets'])} budgets, {body['mismatches']} mismatched; {body['drained']} outbox charges written first")
    if body["mismatches"]:
        raise typer.Exit(1)
