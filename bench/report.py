"""The benchmark's verdict: derived figures (added latency, ratios, targets) and the Markdown report."""

from __future__ import annotations

from typing import Any

# The targets on a 2-core machine, everything on.
ADDED_P50_MAX_MS = 1.0
ADDED_P99_MAX_MS = 3.0
SATURATION_MIN_RPS = 2000.0
TTFB_DELTA_MAX_MS = 1.0
SOAK_GROWTH_MAX_PCT = 10.0
UPSTREAM_FLOOR_RATIO = 10.0


def _run(runs: list[dict[str, Any]], mode: str, target: str, c: int) -> dict[str, Any] | None:
    return next(
        (r for r in runs if r["mode"] == mode and r["target"] == target and r["connections"] == c),
        None,
    )


def summarise(results: dict[str, Any], concurrency: list[int]) -> dict[str, Any]:
    runs = results["runs"]
    low, high = min(concurrency), max(concurrency)
    out: dict[str, Any] = {"added_latency_ms": {}, "saturation": {}}
    for mode in ("chat", "chat_stream"):
        direct, fb, floor = (_run(runs, mode, t, low) for t in ("direct", "farebox", "floor"))
        if direct and fb:
            added = out["added_latency_ms"][mode] = {
                "concurrency": low,
                "p50": round(fb["p50_ms"] - direct["p50_ms"], 3),
                "p99": round(fb["p99_ms"] - direct["p99_ms"], 3),
            }
            if floor:
                added["floor_p50"] = round(floor["p50_ms"] - direct["p50_ms"], 3)
                added["floor_p99"] = round(floor["p99_ms"] - direct["p99_ms"], 3)
        direct, fb, floor = (_run(runs, mode, t, high) for t in ("direct", "farebox", "floor"))
        if direct and fb:
            sat = out["saturation"][mode] = {
                "concurrency": high,
                "direct_rps": direct["rps"],
                "farebox_rps": fb["rps"],
                "upstream_to_farebox_ratio": round(direct["rps"] / fb["rps"], 1)
                if fb["rps"]
                else None,
                "farebox_cpu_s_per_1k": fb["proxy_cpu_s_per_1k"],
                "ledger_drain_s": fb.get("ledger_drain_s"),
                "farebox_connections_per_worker": fb.get("connections_per_worker"),
            }
            if floor:
                sat["floor_rps"] = floor["rps"]
                sat["farebox_to_floor_ratio"] = (
                    round(fb["rps"] / floor["rps"], 2) if floor["rps"] else None
                )
                sat["floor_cpu_s_per_1k"] = floor["proxy_cpu_s_per_1k"]
                sat["floor_connections_per_worker"] = floor.get("connections_per_worker")
    if t := results.get("ttfb"):
        out["ttfb_ms"] = {
            "direct_p50": round(t["direct"]["p50_ms"], 3),
            "farebox_p50": round(t["farebox"]["p50_ms"], 3),
            "delta_p50": round(t["farebox"]["p50_ms"] - t["direct"]["p50_ms"], 3),
            "delta_p99": round(t["farebox"]["p99_ms"] - t["direct"]["p99_ms"], 3),
        }
        if "floor" in t:
            out["ttfb_ms"]["floor_delta_p50"] = round(
                t["floor"]["p50_ms"] - t["direct"]["p50_ms"], 3
            )
    out["targets"] = _targets(out, results)
    return out


def _targets(s: dict[str, Any], results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    targets: dict[str, dict[str, Any]] = {}

    def check(name: str, value: float | None, limit: float, below: bool) -> None:
        if value is not None:
            met = value < limit if below else value >= limit
            targets[name] = {
                "value": value,
                "target": f"{'<' if below else '>='} {limit:g}",
                "met": met,
            }

    chat = s["added_latency_ms"].get("chat", {})
    if chat.get("concurrency") != 1:  # the latency targets are at c=1; a run without it says nothing
        chat = {}
    check("added_p50_ms_c1", chat.get("p50"), ADDED_P50_MAX_MS, True)
    check("added_p99_ms_c1", chat.get("p99"), ADDED_P99_MAX_MS, True)
    sat = s["saturation"].get("chat", {})
    check("farebox_rps_saturation", sat.get("farebox_rps"), SATURATION_MIN_RPS, False)
    check(
        "ttfb_delta_p50_ms", s.get("ttfb_ms", {}).get("delta_p50"), TTFB_DELTA_MAX_MS + 1e-9, True
    )
    check("upstream_floor_ratio", sat.get("upstream_to_farebox_ratio"), UPSTREAM_FLOOR_RATIO, False)
    if "soak" in results:
        check("soak_rss_growth_pct", results["soak"]["growth_pct"], SOAK_GROWTH_MAX_PCT, True)
    targets["ledger_rows_equal_answers"] = {
        "value": results["ledger"]["rows"],
        "target": "== answers relayed",
        "met": results["ledger"]["ok"],
    }
    return targets


def _calibration(m: dict[str, Any]) -> str:
    """The interpreter and its speed on this host during the run (bench/calibrate.py)."""
    if "calibration_loop_ms" not in m:
        return ""
    start, end = m["calibration_loop_ms"]
    return (
        f" Interpreter {m['executable']}; its calibration loop (bench/calibrate.py, lower is faster) "
        f"took {start:.1f} ms at start and {end:.1f} ms at end."
    )


def markdown(results: dict[str, Any]) -> str:
    meta, s = results["meta"], results["summary"]
    m = meta["machine"]
    lines = [
        f"## Farebox benchmark, {meta['started']}",
        "",
        f"{m['cpus']} cores ({m['cpu_model']}), kernel {m['kernel']}, Python {m['python']}; "
        f"upstream {meta['upstream']}; load {meta['loadgen']}; Farebox {meta['farebox_workers']} workers, "
        f"Postgres + Redis, {meta['budgets']} budgets, ledger and metrics on; {meta['duration_s']:g} s per run. "
        f"Load average (1 min) {m['load_average_at_start'][0]:.2f} at start, "
        f"{meta.get('load_average_at_end', [float('nan')])[0]:.2f} at end: the machine is shared."
        + _calibration(m)
        + (
            f" Settings changed for this run: {meta['settings_changed']}."
            if meta.get("settings_changed")
            else ""
        )
        + (
            " WHAT-IF: the ledger writer was paused (SIGSTOP) during every Farebox run."
            if meta.get("writer_paused_during_farebox_runs")
            else ""
        ),
        "",
        "| mode | conc. | target | req/s | p50 ms | p99 ms | errors | proxy CPU s / 1k req | Redis+PG CPU s / 1k req |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["runs"]:
        cpu = r.get("proxy_cpu_s_per_1k")
        lines.append(
            f"| {r['mode']} | {r['connections']} | {r['target']} | {r['rps']:,.0f} | {r['p50_ms']:.3f} | "
            f"{r['p99_ms']:.3f} | {r['non_2xx'] + r['socket_errors']} | {'' if cpu is None else f'{cpu:.3f}'} | "
            f"{r.get('redis_postgres_cpu_s_per_1k', 0):.3f} |"
        )
    lines += ["", "| figure | value |", "|---|---|"]
    for mode, a in s["added_latency_ms"].items():
        floor = (
            f" (bare relay: p50 {a['floor_p50']:.3f}, p99 {a['floor_p99']:.3f})"
            if "floor_p50" in a
            else ""
        )
        lines.append(
            f"| added latency, {mode}, c={a['concurrency']} | p50 {a['p50']:.3f} ms, p99 {a['p99']:.3f} ms{floor} |"
        )
    for mode, sat in s["saturation"].items():
        floor = (
            f"; bare relay {sat['floor_rps']:,.0f} req/s, Farebox at {sat['farebox_to_floor_ratio']:.0%} of it"
            if sat.get("floor_rps")
            else ""
        )
        spread = "/".join(map(str, sat.get("farebox_connections_per_worker") or []))
        if spread:
            floor_spread = "/".join(map(str, sat.get("floor_connections_per_worker") or []))
            spread = f"; connections per worker {spread}" + (f" (bare relay {floor_spread})" if floor_spread else "")
        lines.append(
            f"| saturation, {mode}, c={sat['concurrency']} | {sat['farebox_rps']:,.0f} req/s through Farebox, "
            f"{sat['direct_rps']:,.0f} direct ({sat['upstream_to_farebox_ratio']}x){floor}{spread}; ledger caught "
            f"up {sat['ledger_drain_s']} s after the load stopped |"
        )
    if t := s.get("ttfb_ms"):
        lines.append(
            f"| streaming TTFB, c=1 | direct p50 {t['direct_p50']:.3f} ms, Farebox p50 {t['farebox_p50']:.3f} ms "
            f"(+{t['delta_p50']:.3f} p50, +{t['delta_p99']:.3f} p99)"
            + (f"; bare relay +{t['floor_delta_p50']:.3f} p50" if "floor_delta_p50" in t else "")
            + " |"
        )
    mem = results["memory"]
    lines.append(
        f"| Farebox RSS ({mem['processes']} processes) | {mem['rss_after_warmup_mb']} MB after warm-up, "
        f"{mem['rss_end_mb']} MB at end, peak {mem['peak_rss_sum_mb']} MB |"
    )
    if "soak" in results:
        soak = results["soak"]
        lines.append(
            f"| soak, c=64, {soak['seconds']:g} s | RSS {soak['rss_start_mb']} -> {soak['rss_end_mb']} MB "
            f"({soak['growth_pct']:+.1f} %), {soak['requests']:,} requests |"
        )
    led = results["ledger"]
    lines.append(
        f"| ledger | {led['rows']:,} rows, {led['distinct_request_ids']:,} distinct ids; answers relayed "
        f"{led['upstream_answered'] if led['upstream_answered'] is not None else 'n/a'} (upstream count), "
        f"{led['client_counted_successes']:,} counted by the load tools (+ up to {led['uncounted_in_flight_max']} "
        f"in flight when a run stopped): {'OK' if led['ok'] else 'MISMATCH'} |"
    )
    lines += ["", "| target | value | goal | met |", "|---|---:|---|---|"]
    for name, tgt in s["targets"].items():
        lines.append(
            f"| {name} | {tgt['value']} | {tgt['target']} | {'yes' if tgt['met'] else 'NO'} |"
        )
    return "\n".join(lines)
