"""Grafana and the alert rules use only metrics service/metrics.py defines, in valid PromQL."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from service import metrics
from tests.deploy import tools

DASHBOARD = tools.DEPLOY / "grafana" / "dashboards" / "farebox.json"
ALERTS = tools.DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = tools.DEPLOY / "prometheus" / "alerts_test.yml"
METRIC = re.compile(r"farebox_[a-z_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Defined for completeness (dashboards may show it) but no panel or rule needs it yet.
NOT_YET_USED = {"farebox_budget_period_start_timestamp_seconds"}


def defined_metrics() -> tuple[set[str], set[str]]:
    """Every series name the registry exposes (counters with _total), and the histogram names."""
    names: set[str] = set()
    histograms: set[str] = set()
    for family in metrics.REGISTRY.collect():
        if not family.name.startswith("farebox_"):
            continue
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            histograms.add(family.name)
            names.add(family.name)
        else:
            names.add(family.name)
    return names, histograms


def unknown_metrics(expressions: list[str]) -> set[str]:
    """Names in the expressions that no defined metric exposes."""
    names, histograms = defined_metrics()
    unknown = set()
    for expr in expressions:
        for name in METRIC.findall(expr):
            if name in names:
                continue
            base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), None)
            if base is not None and base in histograms:
                continue
            unknown.add(name)
    return unknown


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [v for k, v in _walk(dashboard["panels"]) if k == "expr"]
    for var in dashboard["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if var.get("type") == "query" and query:
            exprs.append(query)
    return exprs


def alert_expressions() -> list[str]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in doc["groups"] for rule in group["rules"]]


def alert_test_series() -> list[str]:
    doc = yaml.safe_load(ALERT_TESTS.read_text())
    return [s["series"] for t in doc["tests"] for s in t["input_series"]]


def test_the_registry_defines_the_contracted_metrics() -> None:
    names, histograms = defined_metrics()
    assert histograms == {"farebox_upstream_latency_seconds", "farebox_added_latency_seconds"}
    for name in (
        "farebox_tokens_total", "farebox_cost_usd_total", "farebox_requests_total",
        "farebox_refused_total", "farebox_upstream_errors_total",
        "farebox_unpriced_requests_total", "farebox_budget_limit_usd",
        "farebox_budget_spent_usd", "farebox_budget_reserved_usd",
        "farebox_budget_utilisation_ratio", "farebox_budget_period_end_timestamp_seconds",
        "farebox_budget_period_start_timestamp_seconds", "farebox_ledger_pending_events",
        "farebox_ledger_rows_written_total", "farebox_ledger_write_errors_total",
        "farebox_alerts_sent_total", "farebox_finetune_jobs", "farebox_inflight_requests",
    ):  # fmt: skip
        assert name in names, name


def test_the_checker_catches_a_metric_that_does_not_exist() -> None:
    assert unknown_metrics(["sum(rate(farebox_made_up_total[5m]))"]) == {"farebox_made_up_total"}
    # A histogram suffix on a counter is as wrong as a made-up name.
    assert unknown_metrics(["farebox_cost_usd_total_bucket"]) == {"farebox_cost_usd_total_bucket"}
    assert unknown_metrics(["rate(farebox_added_latency_seconds_bucket[1m])"]) == set()


def test_dashboard_uses_only_defined_metrics() -> None:
    exprs = dashboard_expressions()
    assert len(exprs) >= 20
    assert unknown_metrics(exprs) == set()


def test_alert_rules_use_only_defined_metrics() -> None:
    exprs = alert_expressions()
    assert len(exprs) >= 6
    assert unknown_metrics(exprs) == set()


def test_alert_unit_tests_feed_only_defined_metrics() -> None:
    assert unknown_metrics(alert_test_series()) == set()


def test_every_defined_metric_is_shown_or_alerted_on() -> None:
    used = {m for e in dashboard_expressions() + alert_expressions() for m in METRIC.findall(e)}
    used |= {m[: -len(s)] for m in used for s in HISTOGRAM_SUFFIXES if m.endswith(s)}
    names, _ = defined_metrics()
    assert names - used - NOT_YET_USED == set()


def test_dashboard_has_the_panels_operators_need() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = " | ".join(p["title"].lower() for p in panels)
    for needed in (
        "spend per team", "burn rate", "days left", "top models by spend", "tokens by kind",
        "refusals by reason", "upstream latency", "added latency", "ledger backlog",
        "alerts sent",
    ):  # fmt: skip
        assert needed in titles, needed
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys()
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus() -> None:
    prov = tools.DEPLOY / "grafana" / "provisioning"
    provider = yaml.safe_load((prov / "dashboards" / "farebox.yml").read_text())["providers"][0]
    compose = yaml.safe_load((tools.DEPLOY / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    source = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source[0]["type"] == "prometheus"
    assert source[0]["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]


def _as_promql(expr: str) -> str:
    """Grafana's variables replaced so promtool can parse the query."""
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$__range", "1h")
        .replace("$__interval", "1m")
        .replace("$team", ".*")
    )


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = tools.promtool()
    exprs = [e for e in dashboard_expressions() if not e.startswith("label_values(")]
    rules = [
        {"record": f"farebox:dashboard_query_{i}", "expr": _as_promql(e)}
        for i, e in enumerate(exprs)
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


@pytest.mark.parametrize("variable", ["$__rate_interval", "$__range", "$team"])
def test_grafana_variables_are_all_replaced(variable: str) -> None:
    assert any(variable in e for e in dashboard_expressions())
    assert not any(variable in _as_promql(e) for e in dashboard_expressions())
