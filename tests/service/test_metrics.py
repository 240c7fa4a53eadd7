"""The metrics module: exact values after a known workload, label policy, multiprocess merging."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service import metrics
from service.ledger.event import ChargeEvent

REPO = Path(__file__).resolve().parents[2]


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _render() -> dict:
    body, content_type = metrics.render_metrics()
    assert content_type.startswith("text/plain; version=0.0.4")
    return _samples(body.decode())


def test_known_workload_renders_exact_values() -> None:
    team = f"team-{uuid.uuid4().hex[:8]}"
    ep = f"/v1/test-{uuid.uuid4().hex[:6]}"
    metrics.record_usage(team, "gpt-4o-mini", "inference", 100, 40, 25, 0, 250_000_000)
    metrics.record_usage(team, "gpt-4o-mini", "inference", 10, 0, 5, 0, 500_000_000)
    metrics.record_usage(team, "ft:gpt-4o-mini:acme:x:abc", "training", 0, 0, 0, 7000, 125_000_000)
    metrics.record_usage(team, None, "inference", 3, 0, 0, 0, 0)
    for status in ("ok", "ok", "ok", "upstream_error", "refused"):
        metrics.record_request(team, ep, status)
    metrics.record_upstream_error(ep, 503)
    metrics.record_upstream_error(ep, 503)
    metrics.observe_latency(ep, 0.3, 0.0004)
    metrics.observe_latency(ep, 2.0, 0.002)
    metrics.observe_latency(ep, None, 0.0001)

    s = _render()
    tok = "farebox_tokens_total"
    base = {"team": team, "model": "gpt-4o-mini"}
    assert _value(s, tok, **base, kind="inference", direction="prompt") == 110
    assert _value(s, tok, **base, kind="inference", direction="cached") == 40
    assert _value(s, tok, **base, kind="inference", direction="completion") == 30
    assert _value(s, tok, **base, kind="training", direction="training") == 7000
    # Zero counts create no series (training direction never appears for inference).
    assert _value(s, tok, **base, kind="inference", direction="training") is None
    assert _value(s, tok, team=team, model="unpriced", kind="inference", direction="prompt") == 3
    assert _value(s, "farebox_cost_usd_total", **base, kind="inference") == 0.75
    assert _value(s, "farebox_cost_usd_total", **base, kind="training") == 0.125
    # The fine-tuned name never becomes a label.
    assert not any("ft:" in v for (_, labels) in s for _, v in labels)

    req = "farebox_requests_total"
    assert _value(s, req, team=team, endpoint=ep, status="ok") == 3
    assert _value(s, req, team=team, endpoint=ep, status="upstream_error") == 1
    assert _value(s, req, team=team, endpoint=ep, status="refused") == 1
    assert _value(s, "farebox_upstream_errors_total", endpoint=ep, status_code="503") == 2

    up = "farebox_upstream_latency_seconds"
    assert _value(s, up + "_count", endpoint=ep) == 2
    assert _value(s, up + "_sum", endpoint=ep) == 2.3
    assert _value(s, up + "_bucket", endpoint=ep, le="0.25") == 0
    assert _value(s, up + "_bucket", endpoint=ep, le="0.5") == 1
    assert _value(s, up + "_bucket", endpoint=ep, le="2.5") == 2
    added = "farebox_added_latency_seconds"
    assert _value(s, added + "_count", endpoint=ep) == 3
    assert _value(s, added + "_bucket", endpoint=ep, le="0.0001") == 1
    assert _value(s, added + "_bucket", endpoint=ep, le="0.0005") == 2
    assert _value(s, added + "_bucket", endpoint=ep, le="+Inf") == 3


def test_counters_without_team_labels_add_up() -> None:
    before = _render()
    metrics.record_refusal("budget")
    metrics.record_refusal("budget")
    metrics.record_refusal("rate_limited")
    metrics.record_ledger_written(500)
    metrics.record_ledger_written(0)
    metrics.record_ledger_write_error()
    metrics.record_alert_sent(80, "delivered")
    metrics.record_alert_sent(100, "no_webhook")
    after = _render()

    def delta(name: str, **labels: str) -> float:
        return (_value(after, name, **labels) or 0) - (_value(before, name, **labels) or 0)

    assert delta("farebox_refused_total", reason="budget") == 2
    assert delta("farebox_refused_total", reason="rate_limited") == 1
    assert delta("farebox_ledger_rows_written_total") == 500
    assert delta("farebox_ledger_write_errors_total") == 1
    assert delta("farebox_alerts_sent_total", threshold="80", status="delivered") == 1
    assert delta("farebox_alerts_sent_total", threshold="100", status="no_webhook") == 1


def test_gauges_hold_the_last_value_set() -> None:
    team = f"team-{uuid.uuid4().hex[:8]}"
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    end = datetime(2026, 12, 1, tzinfo=timezone.utc)
    metrics.set_budget_gauges(team, "main", "monthly", 4_000_000_000, 1_000_000_000, 5, start, end)
    metrics.set_budget_gauges(team, "main", "monthly", 4_000_000_000, 3_000_000_000, 0, start, end)
    metrics.set_budget_gauges(team, "frozen", "total", 0, 1, 0, None, None)
    metrics.set_budget_gauges(team, "idle", "total", 0, 0, 0, None, None)
    metrics.set_ledger_pending(17)
    metrics.set_finetune_jobs({"running": 2, "succeeded": 5})
    metrics.request_started()
    metrics.request_started()
    metrics.request_finished()
    s = _render()

    b = {"team": team, "budget": "main", "period": "monthly"}
    assert _value(s, "farebox_budget_limit_usd", **b) == 4.0
    assert _value(s, "farebox_budget_spent_usd", **b) == 3.0
    assert _value(s, "farebox_budget_reserved_usd", **b) == 0.0
    assert _value(s, "farebox_budget_utilisation_ratio", **b) == 0.75
    assert _value(s, "farebox_budget_period_start_timestamp_seconds", **b) == start.timestamp()
    assert _value(s, "farebox_budget_period_end_timestamp_seconds", **b) == end.timestamp()
    frozen = {"team": team, "budget": "frozen", "period": "total"}
    assert _value(s, "farebox_budget_utilisation_ratio", **frozen) == float("inf")
    assert _value(s, "farebox_budget_period_end_timestamp_seconds", **frozen) is None
    idle = {"team": team, "budget": "idle", "period": "total"}
    assert _value(s, "farebox_budget_utilisation_ratio", **idle) == 0.0
    assert _value(s, "farebox_ledger_pending_events") == 17
    assert _value(s, "farebox_finetune_jobs", status="running") == 2
    assert _value(s, "farebox_finetune_jobs", status="succeeded") == 5
    metrics.request_finished()  # leave the shared in-flight gauge as this test found it


def test_labels_outside_the_closed_sets_count_as_other() -> None:
    team = f"team-{uuid.uuid4().hex[:8]}"
    before = _render()
    metrics.record_request(team, "/v1/x", "failed")
    metrics.record_refusal("because")
    metrics.record_usage(team, "gpt-4o", "batch", 7, 0, 0, 0, 0)
    metrics.record_alert_sent(80, "sent")
    s = _render()
    assert _value(s, "farebox_requests_total", team=team, endpoint="/v1/x", status="other") == 1
    assert _value(s, "farebox_requests_total", team=team, endpoint="/v1/x", status="failed") is None
    refused_other = (_value(s, "farebox_refused_total", reason="other") or 0) - (
        _value(before, "farebox_refused_total", reason="other") or 0
    )
    assert refused_other == 1
    assert _value(s, "farebox_refused_total", reason="because") is None
    tok = {"team": team, "model": "gpt-4o", "direction": "prompt"}
    assert _value(s, "farebox_tokens_total", **tok, kind="other") == 7
    assert _value(s, "farebox_alerts_sent_total", threshold="80", status="sent") is None


def test_record_charge_counts_usage_unpriced_and_the_request() -> None:
    team = f"team-{uuid.uuid4().hex[:8]}"
    now = datetime.now(timezone.utc)
    common = {"team_id": "t1", "started_at": now, "finished_at": now}
    metrics.record_charge(
        team,
        ChargeEvent(
            request_id="r1",
            kind="inference",
            status="stream_broken",
            endpoint="/v1/chat/completions",
            model_requested="ft:gpt-4o-mini:acme::xyz",
            base_model="gpt-4o-mini",
            fine_tuned=True,
            prompt_tokens=12,
            cached_tokens=0,
            completion_tokens=8,
            cost_nano=2_000_000_000,
            **common,
        ),
    )
    metrics.record_charge(
        team,
        ChargeEvent(
            request_id="r2",
            kind="inference",
            status="ok",
            endpoint="/v1/chat/completions",
            model_requested=f"mystery-{team}",
            base_model=None,
            priced=False,
            prompt_tokens=5,
            **common,
        ),
    )
    metrics.record_charge(
        team,
        ChargeEvent(
            request_id="r3",
            kind="training",
            status="succeeded",
            endpoint="/v1/fine_tuning/jobs",
            base_model="gpt-4o-mini",
            trained_tokens=900,
            cost_nano=500_000_000,
            **common,
        ),
    )
    s = _render()
    base = {"team": team, "model": "gpt-4o-mini"}
    assert _value(s, "farebox_tokens_total", **base, kind="inference", direction="prompt") == 12
    assert _value(s, "farebox_tokens_total", **base, kind="inference", direction="completion") == 8
    assert _value(s, "farebox_tokens_total", **base, kind="training", direction="training") == 900
    assert _value(s, "farebox_cost_usd_total", **base, kind="inference") == 2.0
    assert _value(s, "farebox_cost_usd_total", **base, kind="training") == 0.5
    unpriced = {"team": team, "model": "unpriced", "kind": "inference", "direction": "prompt"}
    assert _value(s, "farebox_tokens_total", **unpriced) == 5
    assert _value(s, "farebox_unpriced_requests_total", model=f"mystery-{team}") == 1
    req = {"team": team, "endpoint": "/v1/chat/completions"}
    assert _value(s, "farebox_requests_total", **req, status="stream_broken") == 1
    assert _value(s, "farebox_requests_total", **req, status="ok") == 1
    # A training charge is not a proxied request.
    assert not any(
        name == "farebox_requests_total" and dict(lbl).get("endpoint") == "/v1/fine_tuning/jobs"
        for name, lbl in s
    )


def test_model_labels_fold_fine_tuned_names() -> None:
    assert metrics.model_label("gpt-4o-mini-2024-07-18") == "gpt-4o-mini-2024-07-18"
    assert metrics.model_label("ft:gpt-4o-mini-2024-07-18:org:suffix:id123") == (
        "gpt-4o-mini-2024-07-18"
    )
    assert metrics.model_label(None) == "unpriced"
    assert metrics.model_label("") == "unpriced"


def test_unpriced_labels_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_seen_unpriced", set())
    assert metrics.unpriced_label("ft:My Model/v2:org:x") == "my_model_v2"
    long = metrics.unpriced_label("Z" * 500)
    assert long == "z" * metrics.UNPRICED_LABEL_MAX_CHARS
    labels = {metrics.unpriced_label(f"made-up-{uuid.uuid4().hex}") for _ in range(300)}
    assert len(metrics._seen_unpriced) == metrics.UNPRICED_LABEL_MAX_DISTINCT
    assert metrics.OTHER in labels
    assert all(len(label) <= metrics.UNPRICED_LABEL_MAX_CHARS for label in labels)
    metrics.record_unpriced(f"yet-another-{uuid.uuid4().hex}")
    other = _value(_render(), "farebox_unpriced_requests_total", model="other")
    assert other is not None and other >= 1
    # A name seen before the cap keeps its own label.
    assert metrics.unpriced_label("ft:My Model/v2:org:y") == "my_model_v2"


_WORKER = textwrap.dedent(
    """
    import sys
    from datetime import datetime, timezone
    from service import metrics

    assert metrics.MULTIPROCESS
    share = float(sys.argv[1])
    for _ in range(int(sys.argv[2])):
        metrics.record_usage("alpha", "gpt-4o", "inference", 10, 4, 3, 0, 125_000_000)
        metrics.record_request("alpha", "/v1/chat/completions", "ok")
        metrics.observe_latency("/v1/chat/completions", 0.2, 0.001)
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    end = datetime(2026, 12, 1, tzinfo=timezone.utc)
    spent = int(share * 10**10)
    metrics.set_budget_gauges("alpha", "main", "monthly", 10**10, spent, 0, start, end)
    for _ in range(int(sys.argv[3])):
        metrics.request_started()
    if sys.argv[4] == "exit":
        metrics.process_exiting()
    """
)

_RENDER = textwrap.dedent(
    """
    import sys
    from service import metrics

    body, _ = metrics.render_metrics()
    sys.stdout.write(body.decode())
    """
)


def _run(script: str, *args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_multiprocess_mode_merges_two_writer_processes(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    # Two writers at once for the counters and histograms; the gauge check needs an order.
    first = subprocess.Popen(
        [sys.executable, "-c", _WORKER, "0.25", "3", "2", "stay"], env=env, cwd=REPO
    )
    second = subprocess.Popen(
        [sys.executable, "-c", _WORKER, "0.10", "5", "0", "stay"], env=env, cwd=REPO
    )
    assert first.wait(timeout=60) == 0
    assert second.wait(timeout=60) == 0
    # A later writer: its budget value is the most recent, its in-flight gauge leaves on exit.
    _run(_WORKER, "0.5", "2", "4", "exit", env=env)
    assert len(list(tmp_path.glob("counter_*.db"))) == 3

    s = _samples(_run(_RENDER, env=env))
    base = {"team": "alpha", "model": "gpt-4o", "kind": "inference"}
    assert _value(s, "farebox_tokens_total", **base, direction="prompt") == 100
    assert _value(s, "farebox_tokens_total", **base, direction="cached") == 40
    assert _value(s, "farebox_tokens_total", **base, direction="completion") == 30
    assert _value(s, "farebox_cost_usd_total", **base) == 1.25
    ok = {"team": "alpha", "endpoint": "/v1/chat/completions", "status": "ok"}
    assert _value(s, "farebox_requests_total", **ok) == 10
    ep = {"endpoint": "/v1/chat/completions"}
    assert _value(s, "farebox_upstream_latency_seconds_count", **ep) == 10
    assert _value(s, "farebox_upstream_latency_seconds_bucket", **ep, le="0.25") == 10
    assert _value(s, "farebox_added_latency_seconds_bucket", **ep, le="0.0005") == 0
    assert _value(s, "farebox_added_latency_seconds_bucket", **ep, le="0.001") == 10
    budget = {"team": "alpha", "budget": "main", "period": "monthly"}
    assert _value(s, "farebox_budget_spent_usd", **budget) == 5.0
    assert _value(s, "farebox_budget_utilisation_ratio", **budget) == 0.5
    # mostrecent gauges carry no pid label; every worker agrees on one series.
    assert not any(name.startswith("farebox_budget") and dict(lbl).get("pid") for name, lbl in s)
    # Live sum: 2 from the first writer; the third marked itself dead and dropped its 4.
    assert _value(s, "farebox_inflight_requests") == 2
