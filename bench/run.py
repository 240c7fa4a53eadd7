"""Farebox's hot-path benchmark: one command, fixed upstream, production configuration.

    .venv/bin/python bench/run.py [--duration 10] [--soak 600] [--install]

Starts nginx as a fixed-answer upstream, Farebox on a fresh Postgres database and a fresh
Redis namespace (budgets, ledger and metrics on, 2 workers), then measures with wrk,
direct and through Farebox, non-streaming and streaming, at concurrency 1 and 64, plus
streaming time to first byte. Prints Markdown; writes bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import calibrate
import loadgen
import procstat
import redis
import report
import stack
import ttfb

BENCH = Path(__file__).resolve().parent
APT = "apt-get update && apt-get install -y nginx wrk"
MODES = {"chat": ("request_chat.json", False), "chat_stream": ("request_chat_stream.json", True)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=".venv/bin/python bench/run.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--duration", type=_seconds, default=10.0, help="seconds per measured run (10 or 10s)"
    )
    p.add_argument("--warmup", type=_seconds, default=3.0, help="seconds of warm-up load per mode")
    p.add_argument("--concurrency", default="1,64", help="comma list of connection counts")
    p.add_argument("--modes", default="chat,chat_stream", help="comma list of: chat, chat_stream")
    p.add_argument(
        "--ttfb-requests",
        type=int,
        default=500,
        help="streamed requests timed for TTFB, each way (0: skip)",
    )
    p.add_argument(
        "--soak",
        type=_seconds,
        default=0.0,
        help="then hold c=64 this long, reporting RSS (600 = 10 min)",
    )
    p.add_argument(
        "--workers", type=int, default=2, help="Farebox worker processes (FAREBOX_WORKERS)"
    )
    p.add_argument("--upstream", choices=("nginx", "simulator"), default="nginx")
    p.add_argument(
        "--loadgen",
        choices=("wrk", "python"),
        default="wrk",
        help="python: the aiohttp generator, for the harness smoke test only",
    )
    p.add_argument(
        "--no-floor",
        dest="floor",
        action="store_false",
        help="skip the bare relay (bench/floor_relay.py) measured beside Farebox",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="FAREBOX_NAME=VALUE",
        help="a Farebox setting to change from production defaults (a what-if run; recorded in the JSON)",
    )
    p.add_argument(
        "--pause-writer",
        action="store_true",
        help="what-if: SIGSTOP the ledger writer during each Farebox run (resumed before the ledger check)",
    )
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--output", type=Path, default=BENCH / "results" / "latest.json")
    p.add_argument(
        "--install", action="store_true", help=f"run `{APT}` when nginx or wrk is missing"
    )
    return p.parse_args(argv)


def _seconds(text: str) -> float:
    return float(text.removesuffix("s"))


def ensure_tools(args: argparse.Namespace) -> int:
    """0 when the tools are there; prints the install command and returns 2 when not."""
    needed = ([args.upstream] if args.upstream == "nginx" else []) + (
        ["wrk"] if args.loadgen == "wrk" else []
    )
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if not missing:
        return 0
    if not args.install:
        print(
            f"missing: {', '.join(missing)}. Install them with:\n    {APT}\n"
            "or rerun with --install to have this script run that command.",
            file=sys.stderr,
        )
        return 2
    print(f"+ {APT}", file=sys.stderr)
    subprocess.run(APT, shell=True, check=True)
    return 0


class Bench:
    """One benchmark run: the stack, the measurements, and the totals the ledger is checked against."""

    def __init__(
        self,
        args: argparse.Namespace,
        upstream: stack.Upstream,
        farebox: stack.Farebox,
        db: stack.Database,
        floor: stack.FloorRelay | None,
    ) -> None:
        self.args = args
        self.upstream = upstream
        self.farebox = farebox
        self.floor = floor
        self.db = db
        self.fb_pids = procstat.tree(farebox.process.pid)
        self.up_pids = procstat.tree(upstream.process.pid)
        self.proxies = {"farebox": self.fb_pids}
        if floor is not None:
            self.proxies["floor"] = procstat.tree(floor.process.pid)
        self.sent_successes = 0  # 2xx answers Farebox gave, as the load tools counted them
        self.uncounted_max = 0  # in-flight requests a tool may have dropped from its count
        self.load = loadgen.run_wrk if args.loadgen == "wrk" else loadgen.run_python
        self.redis = redis.Redis.from_url(args.redis_url)
        # The outbox stream of the team's settled charges (service/budgets/redis_store.py layout).
        self.outbox_key = f"{farebox.namespace}:{{t:{farebox.team_id}}}:outbox"

    def targets(self) -> tuple[str, ...]:
        return ("direct", "floor", "farebox") if self.floor is not None else ("direct", "farebox")

    def url(self, target: str) -> str:
        base = {"direct": self.upstream.direct_url, "farebox": self.farebox.v1}.get(target)
        if base is None and self.floor is not None:
            base = self.floor.v1
        return f"{base}/chat/completions"

    def auth(self, target: str) -> str:
        return f"Bearer {stack.DIRECT_KEY if target == 'direct' else self.farebox.key}"

    def run(self, mode: str, target: str, connections: int, duration_s: float) -> dict[str, Any]:
        body, stream = MODES[mode]
        proxy = self.proxies.get(target, [])
        px0, up0 = procstat.cpu_seconds(proxy), procstat.cpu_seconds(self.up_pids)
        # Redis and Postgres share the 2 cores too (other users of them add to this figure);
        # Postgres starts a backend per new connection, so they are looked up for every run.
        sv0 = procstat.cpu_by_pid(procstat.by_name("redis-server", "postgres"))
        paused = stack.writer_pid(self.farebox.process.pid) if self.args.pause_writer and target == "farebox" else None
        if paused is not None:
            os.kill(paused, signal.SIGSTOP)
        split: list[int] = []
        sampler = None
        if proxy and connections > 1:
            # How the connections spread over the workers, read once the load tool has opened them.
            port = int(self.url(target).split("/")[2].rsplit(":", 1)[1])
            sampler = threading.Timer(
                min(1.5, duration_s / 2), lambda: split.extend(procstat.connections_per_process(port, proxy))
            )
            sampler.start()
        try:
            result = self.load(
                self.url(target),
                stack.FIXTURES / body,
                self.auth(target),
                stream=stream,
                connections=connections,
                duration_s=duration_s,
            )
        finally:
            if sampler is not None:
                sampler.cancel()
                sampler.join()
            if paused is not None:
                os.kill(paused, signal.SIGCONT)
        drain_s = None
        if target == "farebox":
            self.sent_successes += result.successes
            self.uncounted_max += result.uncounted_in_flight_max
            # The ledger writes of this run's requests are part of their cost: wait for them.
            drain_s = self.ledger_drained()
        px_cpu = procstat.cpu_seconds(proxy) - px0
        up_cpu = procstat.cpu_seconds(self.up_pids) - up0
        sv_cpu = procstat.cpu_delta(sv0, procstat.cpu_by_pid(list(sv0)))
        per_k = 1000 / result.requests if result.requests else 0.0
        out = {
            "mode": mode,
            "target": target,
            **result.as_dict(),
            "upstream_cpu_s_per_1k": round(up_cpu * per_k, 4),
            "loadgen_cpu_s_per_1k": round(result.loadgen_cpu_s * per_k, 4),
            "redis_postgres_cpu_s_per_1k": round(sv_cpu * per_k, 4),
        }
        if proxy:
            out["proxy_cpu_s_per_1k"] = round(px_cpu * per_k, 4)
        if split:
            out["connections_per_worker"] = split
        if drain_s is not None:
            out["ledger_drain_s"] = round(drain_s, 2)
        return out

    def ledger_drained(self, timeout_s: float = 120.0) -> float:
        """Seconds until the ledger writer has taken and acknowledged every outbox entry.

        Reads the consumer group's lag and pending count (O(1) in Redis), not the ledger table.
        """
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            try:
                groups = self.redis.xinfo_groups(self.outbox_key)
            except redis.ResponseError:  # no settle has created the stream yet
                groups = []
            if groups and all(g["pending"] == 0 and g.get("lag") == 0 for g in groups):
                return time.monotonic() - t0
            time.sleep(0.02)
        return time.monotonic() - t0

    def time_to_first_byte(self, target: str) -> ttfb.TtfbResult:
        body = (stack.FIXTURES / MODES["chat_stream"][0]).read_bytes()
        result = ttfb.measure(self.url(target), body, self.auth(target), self.args.ttfb_requests)
        if target == "farebox":
            self.sent_successes += (
                result.requests + ttfb.WARMUP
            )  # its warm-up requests were charged too
        return result

    def check_ledger(self, timeout_s: float = 120.0) -> dict[str, Any]:
        """Poll until the writer has drained: rows must equal the answers Farebox relayed."""
        deadline = time.monotonic() + timeout_s
        low, high = self.sent_successes, self.sent_successes + self.uncounted_max
        counts: dict[str, int] = {}
        stable_since, last = time.monotonic(), -1
        while time.monotonic() < deadline:
            counts = self.db.ledger_counts(self.farebox.team_id)
            if counts["rows"] != last:
                stable_since, last = time.monotonic(), counts["rows"]
            if counts["rows"] >= low and time.monotonic() - stable_since > 2.0:
                break
            time.sleep(0.2)
        answered = self.upstream.answered()
        rows = counts.get("rows", 0)
        ok = rows == counts.get("distinct_request_ids") and low <= rows <= high
        if answered is not None:
            ok = ok and rows == answered
        return {
            "rows": rows,
            **counts,
            "client_counted_successes": low,
            "uncounted_in_flight_max": self.uncounted_max,
            "upstream_answered": answered,
            "ok": ok,
        }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the database, Redis keys and processes are still removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if (code := ensure_tools(args)) != 0:
        return code
    concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    extra_env = dict(item.split("=", 1) for item in args.env)
    if bad := [k for k in extra_env if not k.startswith("FAREBOX_")]:
        print(f"--env takes FAREBOX_* settings only, not {', '.join(bad)}", file=sys.stderr)
        return 2
    if unknown := set(modes) - set(MODES):
        print(f"unknown mode(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    started = datetime.now(UTC)
    log_dir = Path(os.environ.get("FAREBOX_BENCH_LOG_DIR") or (BENCH / "results"))
    log_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"meta": _meta(args, started)}

    with ExitStack() as cleanup:
        upstream, db, farebox = stack.start_stack(
            cleanup, redis_url=args.redis_url, workers=args.workers, log_dir=log_dir,
            extra_env=extra_env, upstream_kind=args.upstream,
        )
        namespace = farebox.namespace
        floor = None
        if args.floor:
            floor = stack.start_floor(
                upstream.direct_url, args.redis_url, namespace + "floor", args.workers, log_dir
            )
            cleanup.callback(stack.drop_namespace, args.redis_url, floor.namespace)
            cleanup.callback(floor.stop)
        results["meta"].update(
            settings_changed=extra_env,
            writer_paused_during_farebox_runs=args.pause_writer,
            upstream=upstream.version,
            farebox_workers=args.workers,
            redis_namespace=namespace,
            database=db.name,
            budgets=len(farebox.budgets),
        )
        bench = Bench(args, upstream, farebox, db, floor)
        cleanup.callback(bench.redis.close)
        sampler = procstat.RssSampler(farebox.process.pid).start()
        cleanup.callback(sampler.stop)

        _log("warming up")
        for mode in modes:
            for target in bench.targets():
                bench.run(
                    mode,
                    target,
                    64,
                    args.warmup if target == "farebox" else max(1.0, args.warmup / 2),
                )
        rss_start = sampler.sample()

        runs = []
        for mode in modes:
            for c in concurrency:
                for target in bench.targets():
                    _log(f"{mode} c={c} {target}")
                    runs.append(bench.run(mode, target, c, args.duration))
        results["runs"] = runs
        _log("streaming time to first byte")
        if args.ttfb_requests > 0:
            results["ttfb"] = {t: bench.time_to_first_byte(t).as_dict() for t in bench.targets()}

        if args.soak:
            results["soak"] = _soak(bench, sampler, args.soak)
        _log("checking the ledger")
        results["ledger"] = bench.check_ledger()
        hwm = procstat.peak_rss_bytes(bench.fb_pids)
        results["memory"] = {
            "rss_after_warmup_mb": _mb(rss_start),
            "rss_end_mb": _mb(sampler.sample()),
            "peak_rss_sum_mb": _mb(sampler.peak),
            "peak_rss_per_process_mb": {str(pid): _mb(v) for pid, v in hwm.items()},
            "processes": len(bench.fb_pids),
        }
    results["summary"] = report.summarise(results, concurrency)
    results["meta"]["load_average_at_end"] = os.getloadavg()
    results["meta"]["machine"]["calibration_loop_ms"].append(calibrate.loop_ms())
    results["meta"]["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(report.markdown(results))
    print(f"\nJSON: {args.output}")
    return 0


def _soak(bench: Bench, sampler: procstat.RssSampler, seconds: float) -> dict[str, Any]:
    """Saturation for `seconds`, in slices, with the RSS after each slice."""
    series = [(0.0, _mb(sampler.sample()))]
    done, requests = 0.0, 0
    while done < seconds:
        part = min(30.0, seconds - done)
        _log(f"soak {done:.0f}/{seconds:.0f} s")
        requests += int(bench.run("chat", "farebox", 64, part)["requests"])
        done += part
        series.append((round(done), _mb(sampler.sample())))
    start, end = series[0][1], series[-1][1]
    return {
        "seconds": seconds,
        "requests": requests,
        "rss_start_mb": start,
        "rss_end_mb": end,
        "growth_pct": round(100 * (end - start) / start, 2) if start else 0.0,
        "series_mb": series,
    }


def _meta(args: argparse.Namespace, started: datetime) -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    wrk = None
    if shutil.which("wrk"):
        proc = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        wrk = (proc.stdout + proc.stderr).strip().split("\n")[0]
    return {
        "started": started.isoformat(timespec="seconds"),
        "command": " ".join([_shown(sys.executable), "bench/run.py", *sys.argv[1:]]),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": cpu,
            "kernel": platform.release(),
            "python": platform.python_version(),
            "executable": _shown(sys.executable),
            "calibration_loop_ms": [calibrate.loop_ms()],
            "load_average_at_start": os.getloadavg(),
        },
        "loadgen": wrk if args.loadgen == "wrk" else "bench/loadgen.py (aiohttp)",
        "duration_s": args.duration,
    }


def _shown(path: str) -> str:
    """The interpreter as a reader would type it: relative to the checkout when it lies inside."""
    p = Path(path)
    return str(p.relative_to(BENCH.parent)) if p.is_relative_to(BENCH.parent) else path


def _mb(n: int) -> float:
    return round(n / 2**20, 1)


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
