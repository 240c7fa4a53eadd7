"""The Prometheus alert rules and config: promtool accepts them and their unit tests pass."""

from __future__ import annotations

import subprocess

import yaml

from tests.deploy import tools

PROM = tools.DEPLOY / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tools.promtool(), *args], cwd=PROM, capture_output=True, text=True, timeout=120
    )


def test_promtool_accepts_the_alert_rules() -> None:
    done = _promtool("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_accepts_the_prometheus_config_and_its_rule_files() -> None:
    done = _promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 rule files found" in done.stdout


def test_alert_unit_tests_pass() -> None:
    done = _promtool("test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_rejects_a_broken_rule(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Guards the tests above: a bad expression must make promtool fail."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "groups:\n- name: x\n  rules:\n  - alert: Broken\n"
        "    expr: sum by (team (farebox_cost_usd_total)\n"
    )
    done = subprocess.run(
        [tools.promtool(), "check", "rules", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0


def _rules() -> list[dict]:
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_every_alert_has_a_severity_and_a_summary() -> None:
    rules = _rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]


def test_the_required_alerts_exist() -> None:
    by_name = {r["alert"]: r for r in _rules()}
    assert "0.8" in by_name["FareboxBudgetAt80Percent"]["expr"]
    assert by_name["FareboxBudgetAt80Percent"]["labels"]["severity"] == "warning"
    assert ">= 1" in by_name["FareboxBudgetExhausted"]["expr"]
    assert by_name["FareboxBudgetExhausted"]["labels"]["severity"] == "critical"
    burn = by_name["FareboxBudgetBurnRateTooHigh"]["expr"]
    assert "farebox_budget_period_end_timestamp_seconds" in burn and "time()" in burn
    assert "0.05" in by_name["FareboxUpstreamErrorRateHigh"]["expr"]
    assert "[5m]" in by_name["FareboxUpstreamErrorRateHigh"]["expr"]
    for name in ("FareboxLedgerBacklogGrowing", "FareboxLedgerWriteErrors", "FareboxDown"):
        assert name in by_name


def test_the_unit_tests_exercise_existing_alerts() -> None:
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())
    names = {r["alert"] for r in _rules()}
    tested = {case["alertname"] for t in tests["tests"] for case in t["alert_rule_test"]}
    assert tested <= names, tested - names
    assert "FareboxBudgetAt80Percent" in tested
