"""The report routes on a running Farebox (embedded SQLite and Postgres + Redis), driven by the SDK."""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import httpx
import pytest
from click.testing import Result
from openai import OpenAI
from typer.testing import CliRunner

from tests.conftest import Stack


def spend_with(stack: Stack, key: str, model: str, n: int) -> None:
    with OpenAI(base_url=stack.v1, api_key=key, max_retries=0, timeout=30) as client:
        for _ in range(n):
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=8)


def seeded_team(stack: Stack) -> tuple[dict[str, Any], str, str, list[dict[str, Any]]]:
    """A team with a monthly budget, two keys and five charges on two models."""
    team, key1 = stack.admin.team_with_key()
    key2 = stack.admin.key(team["id"], name="second")["key"]
    stack.admin.budget(team["id"], "100", period="monthly", name="month")
    spend_with(stack, key1, "gpt-4o-mini", 3)
    spend_with(stack, key2, "gpt-4o", 2)
    rows = stack.ledger.wait_rows(team["id"], 5)
    return team, key1, key2, rows


def month_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m")


def test_admin_spend_report_matches_the_ledger_in_json_and_csv(stack: Stack) -> None:
    team, _, _, rows = seeded_team(stack)
    http = stack.admin.http
    body = http.get("/reports/spend", params={"team": team["id"], "group_by": "key,model", "granularity": "month"}).raise_for_status().json()
    assert body["source"] == "rollup"
    assert body["totals"]["cost_nano"] == stack.ledger.total(team["id"]) == sum(r["cost_nano"] for r in rows)
    by_group = {(r["key_id"], r["model"]): (r["requests"], r["cost_nano"]) for r in body["rows"]}
    want: dict[tuple, list[int]] = {}
    for r in rows:
        acc = want.setdefault((r["key_id"], r["model_requested"]), [0, 0])
        acc[0] += 1
        acc[1] += r["cost_nano"]
    assert by_group == {k: tuple(v) for k, v in want.items()}
    assert {r["key_name"] for r in body["rows"]} == {"", "second"}

    # The raw path (sub-day bound) agrees with the rollup.
    raw = http.get("/reports/spend", params={"team": team["id"], "group_by": "key,model", "granularity": "none",
                                              "since": "2000-01-01T00:00:01Z"}).raise_for_status().json()
    assert raw["source"] == "ledger" and raw["totals"] == body["totals"]

    response = http.get("/reports/spend", params={"team": team["name"], "group_by": "model", "format": "csv"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    lines = list(csv.DictReader(io.StringIO(response.text)))
    assert lines[-1]["period_start"] == "TOTAL"
    assert sum(Decimal(r["cost_usd"]) for r in lines[:-1]) == Decimal(lines[-1]["cost_usd"])
    assert int(lines[-1]["cost_nano"]) == body["totals"]["cost_nano"]


def test_a_team_key_sees_only_its_own_spend(stack: Stack) -> None:
    team, key1, _, rows = seeded_team(stack)
    other, other_key = stack.admin.team_with_key()
    spend_with(stack, other_key, "gpt-4o-mini", 1)
    stack.ledger.wait_rows(other["id"], 1)
    with httpx.Client(base_url=stack.farebox.base_url, timeout=30) as http:
        mine = http.get("/v1/farebox/spend", params={"group_by": "team,model", "team": other["id"]},
                        headers={"Authorization": f"Bearer {key1}"}).raise_for_status().json()
        theirs = http.get("/v1/farebox/spend", params={"group_by": "team", "granularity": "none"},
                          headers={"Authorization": f"Bearer {other_key}"}).raise_for_status().json()
        anonymous = http.get("/v1/farebox/spend")
        as_admin_on_team_route = http.get("/v1/farebox/spend", headers={"Authorization": f"Bearer {stack.config.admin_token}"})
        team_on_admin_route = http.get("/admin/reports/spend", headers={"Authorization": f"Bearer {key1}"})
    assert {r["team_id"] for r in mine["rows"]} == {team["id"]}
    assert mine["totals"]["cost_nano"] == sum(r["cost_nano"] for r in rows)
    assert [r["team_id"] for r in theirs["rows"]] == [other["id"]]
    assert theirs["totals"]["cost_nano"] == stack.ledger.total(other["id"])
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "missing_api_key"
    assert as_admin_on_team_route.status_code == 401
    assert team_on_admin_route.status_code == 401


def test_statement_reconciliation_and_alert_listing(stack: Stack) -> None:
    team, _, _, rows = seeded_team(stack)
    http = stack.admin.http
    html = http.get("/reports/statement", params={"team": team["id"], "month": month_now()})
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "gpt-4o-mini" in html.text and team["name"] in html.text and "@media print" in html.text
    statement = http.get("/reports/statement", params={"team": team["id"], "month": month_now(), "format": "csv"})
    lines = list(csv.DictReader(io.StringIO(statement.text)))
    assert {r["model"] for r in lines[:-1]} == {"gpt-4o-mini", "gpt-4o"}
    assert int(lines[-1]["cost_nano"]) == sum(r["cost_nano"] for r in rows)
    assert int(lines[-1]["requests"]) == 5

    rec = http.get("/reports/reconciliation", params={"team": team["id"]}).raise_for_status().json()
    [budget] = rec["budgets"]
    assert rec["mismatches"] == 0 and budget["status"] == "ok"
    assert budget["counter_nano"] == budget["ledger_nano"] == sum(r["cost_nano"] for r in rows)

    alerts = http.get("/alerts", params={"team": team["id"]}).raise_for_status().json()
    assert alerts["data"] == []  # 5 small charges are far below 50 % of $100

    bad = http.get("/reports/spend", params={"group_by": "colour"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"
    assert http.get("/reports/statement", params={"team": team["id"], "month": "November"}).status_code == 400


def farebox_cli(stack: Stack, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    """Run `farebox ...` in process against the stack's database and Redis."""
    from service.cli import app

    for name in [k for k in os.environ if k.startswith("FAREBOX_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FAREBOX_DATABASE_URL", stack.config.database_url)
    if stack.config.redis_url:
        monkeypatch.setenv("FAREBOX_REDIS_URL", stack.config.redis_url)
        monkeypatch.setenv("FAREBOX_REDIS_NAMESPACE", stack.config.redis_namespace or "")
    return CliRunner().invoke(app, list(args))


def test_the_report_commands(pg_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    team, _, _, rows = seeded_team(pg_stack)
    spend = farebox_cli(pg_stack, monkeypatch, "report", "spend", "--team", team["name"], "--group-by", "model",
                        "--granularity", "month", "--format", "csv")
    assert spend.exit_code == 0, spend.output
    lines = list(csv.DictReader(io.StringIO(spend.stdout)))
    assert int(lines[-1]["cost_nano"]) == sum(r["cost_nano"] for r in rows)
    statement = farebox_cli(pg_stack, monkeypatch, "report", "statement", team["id"], "--month", month_now(), "--format", "html")
    assert statement.exit_code == 0 and "<!DOCTYPE html>" in statement.stdout
    reconcile = farebox_cli(pg_stack, monkeypatch, "report", "reconcile", "--team", team["id"], "--format", "json")
    assert reconcile.exit_code == 0, reconcile.output
    assert json.loads(reconcile.stdout)["mismatches"] == 0
    bad = farebox_cli(pg_stack, monkeypatch, "report", "spend", "--granularity", "fortnight")
    assert bad.exit_code == 2 and "fortnight" in bad.output
