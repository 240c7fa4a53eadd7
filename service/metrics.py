"""Every Prometheus metric Farebox exports, with the cheap helpers the hot path records through.

Label policy (cardinality must stay bounded; see deploy/README-metrics.md):
- team: the team name (or id), bounded by the number of teams. Never a key id.
- model: the BASE model from the price catalog; fine-tuned names ("ft:BASE:org:..") fold to
  BASE, and a request with no price is labelled "unpriced". Never a fine-tuned model name.
- farebox_unpriced_requests_total{model}: the requested name folded, lower-cased, cut to
  48 safe characters; past 50 distinct names per process every new name counts as "other".
- endpoint: the route name (a fixed set), never a raw path with ids in it.
- status, reason, direction, kind: the closed sets in the constants below; any other value is
  counted as "other": metrics never fail a request, so callers test the labels they send.
With several worker processes, prometheus-client's multiprocess mode is used when
PROMETHEUS_MULTIPROC_DIR is set before this module is first imported (the CLI does that).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import values as _values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

if TYPE_CHECKING:
    from service.ledger.event import ChargeEvent

NANO_PER_USD = 1_000_000_000

DIRECTIONS = frozenset({"prompt", "cached", "completion", "training"})
KINDS = frozenset({"inference", "training"})
REQUEST_STATUSES = frozenset(
    {"ok", "upstream_error", "client_disconnected", "stream_broken", "refused"}
)
REFUSAL_REASONS = frozenset(
    {
        "budget",
        "auth",
        "bad_request",
        "too_large",
        "budget_store_down",
        "rate_limited",
        "not_found",
        "forbidden",
    }
)
ALERT_STATUSES = frozenset({"delivered", "no_webhook", "failed"})

UNPRICED = "unpriced"
UNKNOWN_TEAM = "unknown"
OTHER = "other"
UNPRICED_LABEL_MAX_CHARS = 48
UNPRICED_LABEL_MAX_DISTINCT = 50
_LABEL_MAX_CHARS = 64

# 0.1 ms (Farebox's own overhead) up to 60 s (a long completion); roughly 1-2.5-5 per decade.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05,
    0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
    10.0, 30.0, 60.0,
)  # fmt: skip

# prometheus-client picks its value class from PROMETHEUS_MULTIPROC_DIR when it is first
# imported; asking it (not the environment) keeps recording and rendering in the same mode.
MULTIPROCESS: bool = bool(getattr(_values.ValueClass, "_multiprocess", False))

# _created series double the series count and Grafana/alerts never read them.
disable_created_metrics()

REGISTRY = CollectorRegistry(auto_describe=True)
if not MULTIPROCESS:
    # Process metrics only make sense for a single process; multiprocess mode cannot merge them.
    ProcessCollector(registry=REGISTRY)
    PlatformCollector(registry=REGISTRY)

TOKENS = Counter(
    "farebox_tokens_total",
    "Tokens metered; direction=cached is the cached part of prompt (OpenAI usage semantics).",
    ["team", "model", "kind", "direction"],
    registry=REGISTRY,
)
COST = Counter(
    "farebox_cost_usd_total",
    "Settled cost in USD (display only; the ledger holds the exact nano-USD).",
    ["team", "model", "kind"],
    registry=REGISTRY,
)
REQUESTS = Counter(
    "farebox_requests_total",
    "Proxied requests by outcome.",
    ["team", "endpoint", "status"],
    registry=REGISTRY,
)
REFUSED = Counter(
    "farebox_refused_total",
    "Requests Farebox answered itself without forwarding, by reason.",
    ["reason"],
    registry=REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "farebox_upstream_errors_total",
    "Upstream answers with an error status (status_code 0: no answer at all).",
    ["endpoint", "status_code"],
    registry=REGISTRY,
)
UNPRICED_REQUESTS = Counter(
    "farebox_unpriced_requests_total",
    "Requests for a model the price catalog does not know (model label bucketed).",
    ["model"],
    registry=REGISTRY,
)
UPSTREAM_LATENCY = Histogram(
    "farebox_upstream_latency_seconds",
    "Time from sending upstream to the last byte of its answer.",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
ADDED_LATENCY = Histogram(
    "farebox_added_latency_seconds",
    "Farebox's own overhead per request: total time minus upstream time.",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)

_BUDGET_LABELS = ["team", "budget", "period"]


def _budget_gauge(name: str, doc: str) -> Gauge:
    # Budget standing comes from the shared store, so the latest writer in any process is right.
    return Gauge(name, doc, _BUDGET_LABELS, multiprocess_mode="mostrecent", registry=REGISTRY)


BUDGET_LIMIT = _budget_gauge("farebox_budget_limit_usd", "Budget limit in USD.")
BUDGET_SPENT = _budget_gauge("farebox_budget_spent_usd", "Spent in the current period, USD.")
BUDGET_RESERVED = _budget_gauge(
    "farebox_budget_reserved_usd", "Held by in-flight requests in the current period, USD."
)
BUDGET_UTILISATION = _budget_gauge(
    "farebox_budget_utilisation_ratio", "spent / limit (0..1, +Inf when a zero budget is spent)."
)
BUDGET_PERIOD_START = _budget_gauge(
    "farebox_budget_period_start_timestamp_seconds", "Start of the current period (unix time)."
)
BUDGET_PERIOD_END = _budget_gauge(
    "farebox_budget_period_end_timestamp_seconds", "End of the current period (unix time)."
)

LEDGER_PENDING = Gauge(
    "farebox_ledger_pending_events",
    "Charge events settled but not yet written to the ledger (outbox backlog).",
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
LEDGER_ROWS = Counter(
    "farebox_ledger_rows_written_total", "Ledger rows written.", registry=REGISTRY
)
LEDGER_ERRORS = Counter(
    "farebox_ledger_write_errors_total", "Failed ledger write attempts.", registry=REGISTRY
)
ALERTS_SENT = Counter(
    "farebox_alerts_sent_total",
    "Budget threshold alerts by threshold percent and delivery status.",
    ["threshold", "status"],
    registry=REGISTRY,
)
FINETUNE_JOBS = Gauge(
    "farebox_finetune_jobs",
    "Fine-tuning jobs Farebox tracks, by status.",
    ["status"],
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
# Each process counts its own requests; live processes add up, dead ones drop out.
INFLIGHT = Gauge(
    "farebox_inflight_requests",
    "Requests being proxied right now.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)

_UNSAFE = re.compile(r"[^a-z0-9._:-]+")
_seen_unpriced: set[str] = set()


def _closed(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else OTHER


def _bounded(value: str | None, default: str) -> str:
    return value[:_LABEL_MAX_CHARS] if value else default


def model_label(base_model: str | None) -> str:
    """The model label for a priced request: its base model; "unpriced" when there is none."""
    if not base_model:
        return UNPRICED
    if base_model.startswith("ft:"):
        base_model = base_model[3:].split(":", 1)[0] or UNPRICED
    return base_model[:_LABEL_MAX_CHARS]


def unpriced_label(requested: str) -> str:
    """The bucketed label of an unknown model name: folded, sanitised, cut, capped per process."""
    name = requested.strip().lower()
    if name.startswith("ft:"):
        name = name[3:].split(":", 1)[0]
    name = _UNSAFE.sub("_", name)[:UNPRICED_LABEL_MAX_CHARS] or "empty"
    if name in _seen_unpriced:
        return name
    if len(_seen_unpriced) >= UNPRICED_LABEL_MAX_DISTINCT:
        return OTHER
    _seen_unpriced.add(name)
    return name


@lru_cache(maxsize=8192)
def _token_child(team: str, model: str, kind: str, direction: str) -> Counter:
    return TOKENS.labels(team, model, _closed(kind, KINDS), direction)


@lru_cache(maxsize=4096)
def _cost_child(team: str, model: str, kind: str) -> Counter:
    return COST.labels(team, model, _closed(kind, KINDS))


@lru_cache(maxsize=4096)
def _request_child(team: str, endpoint: str, status: str) -> Counter:
    return REQUESTS.labels(team, endpoint, _closed(status, REQUEST_STATUSES))


@lru_cache(maxsize=64)
def _refusal_child(reason: str) -> Counter:
    return REFUSED.labels(_closed(reason, REFUSAL_REASONS))


@lru_cache(maxsize=1024)
def _upstream_error_child(endpoint: str, status_code: int) -> Counter:
    return UPSTREAM_ERRORS.labels(endpoint, str(status_code))


@lru_cache(maxsize=256)
def _latency_children(endpoint: str) -> tuple[Histogram, Histogram]:
    return UPSTREAM_LATENCY.labels(endpoint), ADDED_LATENCY.labels(endpoint)


@lru_cache(maxsize=4096)
def _budget_children(team: str, budget: str, period: str) -> tuple[Gauge, ...]:
    gauges = (BUDGET_LIMIT, BUDGET_SPENT, BUDGET_RESERVED, BUDGET_UTILISATION)
    return tuple(g.labels(team, budget, period) for g in gauges)


def record_usage(
    team: str,
    model: str | None,
    kind: str,
    prompt: int,
    cached: int,
    completion: int,
    training: int,
    cost_nano: int,
) -> None:
    """Count one settled charge's tokens and cost; model is the base model (None: unpriced)."""
    team_l = _bounded(team, UNKNOWN_TEAM)
    model_l = model_label(model)
    for direction, n in (
        ("prompt", prompt),
        ("cached", cached),
        ("completion", completion),
        ("training", training),
    ):
        if n:
            _token_child(team_l, model_l, kind, direction).inc(n)
    if cost_nano:
        _cost_child(team_l, model_l, kind).inc(cost_nano / NANO_PER_USD)


def record_charge(team: str, event: ChargeEvent) -> None:
    """Count a settled charge: its tokens and cost, an unpriced model, and (inference) the request.

    Every inference request that reached the upstream ends in exactly one charge, so the
    requests counter is fed here; callers use record_request only for refused requests.
    """
    priced = event.priced and bool(event.base_model)
    record_usage(
        team,
        event.base_model if priced else None,
        event.kind,
        event.prompt_tokens,
        event.cached_tokens,
        event.completion_tokens,
        event.trained_tokens,
        event.cost_nano,
    )
    if not priced:
        record_unpriced(event.model_requested)
    if event.kind == "inference":
        record_request(team, event.endpoint, event.status)


def record_request(team: str | None, endpoint: str, status: str) -> None:
    """Count one finished request by outcome; team None when it was refused before auth."""
    _request_child(_bounded(team, UNKNOWN_TEAM), endpoint, status).inc()


def record_refusal(reason: str) -> None:
    _refusal_child(reason).inc()


def record_upstream_error(endpoint: str, status_code: int) -> None:
    """Count an upstream error answer; status_code 0 when the upstream did not answer."""
    _upstream_error_child(endpoint, int(status_code)).inc()


def record_unpriced(requested_model: str) -> None:
    """Count a request for a model with no price, under its bucketed name."""
    UNPRICED_REQUESTS.labels(unpriced_label(requested_model)).inc()


def observe_latency(endpoint: str, upstream_s: float | None, added_s: float) -> None:
    """Record upstream time (None when nothing was forwarded) and Farebox's own overhead."""
    upstream, added = _latency_children(endpoint)
    if upstream_s is not None:
        upstream.observe(upstream_s)
    added.observe(max(0.0, added_s))


def set_budget_gauges(
    team: str,
    budget: str,
    period: str,
    limit_nano: int,
    spent_nano: int,
    reserved_nano: int,
    period_start: datetime | None,
    period_end: datetime | None,
) -> None:
    """Publish one budget's standing; budget is its name (or id), period its kind (daily..total)."""
    team = _bounded(team, UNKNOWN_TEAM)
    limit, spent, reserved, ratio = _budget_children(team, budget, period)
    limit.set(limit_nano / NANO_PER_USD)
    spent.set(spent_nano / NANO_PER_USD)
    reserved.set(reserved_nano / NANO_PER_USD)
    if limit_nano > 0:
        ratio.set(spent_nano / limit_nano)
    else:
        ratio.set(float("inf") if spent_nano > 0 else 0.0)
    # A "total" budget has no period; its series stay absent so time-left alerts ignore it.
    if period_start is not None:
        BUDGET_PERIOD_START.labels(team, budget, period).set(period_start.timestamp())
    if period_end is not None:
        BUDGET_PERIOD_END.labels(team, budget, period).set(period_end.timestamp())


def set_ledger_pending(count: int) -> None:
    LEDGER_PENDING.set(count)


def record_ledger_written(rows: int) -> None:
    if rows:
        LEDGER_ROWS.inc(rows)


def record_ledger_write_error() -> None:
    LEDGER_ERRORS.inc()


def record_alert_sent(threshold: int, status: str) -> None:
    """Count one alert delivery outcome; status is delivered | no_webhook | failed."""
    ALERTS_SENT.labels(str(int(threshold)), _closed(status, ALERT_STATUSES)).inc()


def set_finetune_jobs(counts: Mapping[str, int]) -> None:
    """Publish how many tracked jobs are in each status (statuses missing here are left as is)."""
    for status, n in counts.items():
        FINETUNE_JOBS.labels(status).set(n)


def request_started() -> None:
    INFLIGHT.inc()


def request_finished() -> None:
    INFLIGHT.dec()


def process_exiting() -> None:
    """Drop this worker's live gauges (in-flight count); call it at the end of app shutdown."""
    if MULTIPROCESS:
        mark_process_dead(os.getpid())


def render_metrics() -> tuple[bytes, str]:
    """The exposition text of every metric (merged over worker processes) and its content type."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4
    return generate_latest(REGISTRY), CONTENT_TYPE_PLAIN_0_0_4
