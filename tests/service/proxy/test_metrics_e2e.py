"""What /metrics says after a known workload through a running Farebox."""

from __future__ import annotations

import re

import httpx
import openai

from tests.conftest import Stack
from tests.harness import wait_until


def _value(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not (line.startswith(name + "{") or line.startswith(name + " ")):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.find("}") + 1]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_tokens_cost_refusals_and_budget_gauges_after_a_known_workload(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    team, key = stack.admin.team_with_key()
    stack.admin.budget(team["id"], "0.001", "daily", name="tiny")
    client = openai.OpenAI(base_url=stack.v1, api_key=key, max_retries=0)
    answers = [
        client.chat.completions.create(model="gpt-4.1-mini", messages=[{"role": "user", "content": f"q{i}"}], max_tokens=10)
        for i in range(3)
    ]
    try:
        client.chat.completions.create(model="gpt-4.1-mini", messages=[{"role": "user", "content": "x"}], max_tokens=5000)
    except openai.RateLimitError:
        pass
    rows = stack.ledger.wait_rows(team["id"], 3)
    text = httpx.get(f"{stack.farebox.base_url}/metrics").text
    name = team["name"]
    prompt = sum(a.usage.prompt_tokens for a in answers)
    completion = sum(a.usage.completion_tokens for a in answers)
    labels = {"team": name, "model": "gpt-4.1-mini", "kind": "inference"}
    assert _value(text, "farebox_tokens_total", direction="prompt", **labels) == prompt
    assert _value(text, "farebox_tokens_total", direction="completion", **labels) == completion
    cost_usd = sum(r["cost_nano"] for r in rows) / 1e9
    assert abs(_value(text, "farebox_cost_usd_total", **labels) - cost_usd) < 1e-12
    assert _value(text, "farebox_requests_total", team=name, endpoint="chat.completions", status="ok") == 3
    assert _value(text, "farebox_requests_total", team=name, endpoint="chat.completions", status="refused") == 1
    assert _value(text, "farebox_refused_total", reason="budget") >= 1
    assert _value(text, "farebox_budget_limit_usd", team=name, budget="tiny") == 0.001
    assert abs(_value(text, "farebox_budget_spent_usd", team=name, budget="tiny") - cost_usd) < 1e-12
    # Counted just after the rows commit: poll rather than race the writer.
    wait_until(lambda: _value(httpx.get(f"{stack.farebox.base_url}/metrics").text, "farebox_ledger_rows_written_total") >= 3,
               10, what="ledger rows counted")
    assert "farebox_added_latency_seconds_bucket" in text and "farebox_inflight_requests" in text
