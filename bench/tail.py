"""Where the c=1 latency tail comes from: every request's latency, timed one after another.

    .venv/bin/python bench/tail.py [--requests 8000] [--pause-writer]

Starts the benchmark's stack (nginx upstream, Farebox with Postgres, Redis, budgets, ledger and
metrics), then sends requests one at a time over one keep-alive connection and prints the
percentiles and how many took more than 2 ms. `--pause-writer` stops the ledger-writer process
(SIGSTOP) for the measurement and resumes it after, so the run shows the tail without ledger
writes; the outbox keeps every charge meanwhile and the writer catches up when resumed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import procstat
import stack
import ttfb
from loadgen import percentile

BENCH = Path(__file__).resolve().parent


async def _timeline(url: str, body: bytes, auth: str, n: int) -> list[float]:
    return (await ttfb.sequence(url, body, auth, n))[1]


def _summary(name: str, ms: list[float]) -> str:
    s = sorted(ms)
    slow = sum(1 for x in ms if x > 2.0)
    return (
        f"| {name} | {len(ms):,} | {percentile(s, 50):.3f} | {percentile(s, 99):.3f} | "
        f"{percentile(s, 99.9):.3f} | {s[-1]:.3f} | {slow} |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=8000)
    p.add_argument("--pause-writer", action="store_true", help="SIGSTOP the ledger writer while measuring")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--env", action="append", default=[], metavar="FAREBOX_NAME=VALUE",
                   help="a Farebox setting to change from production defaults")
    args = p.parse_args(argv)
    extra_env = dict(item.split("=", 1) for item in args.env)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out_dir = BENCH / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    body = (stack.FIXTURES / "request_chat.json").read_bytes()
    with ExitStack() as cleanup:
        upstream, _, fb = stack.start_stack(
            cleanup, redis_url=args.redis_url, workers=2, log_dir=out_dir, prefix="fbtail", extra_env=extra_env
        )
        url, auth = f"{fb.v1}/chat/completions", f"Bearer {fb.key}"
        asyncio.run(_timeline(url, body, auth, 500))  # warm-up
        direct = asyncio.run(
            _timeline(f"{upstream.direct_url}/chat/completions", body, f"Bearer {stack.DIRECT_KEY}", args.requests)
        )
        writer_pid = stack.writer_pid(fb.process.pid)
        writer = writer_pid if args.pause_writer else None
        if writer is not None:
            os.kill(writer, signal.SIGSTOP)
        groups = {
            "Farebox workers": [p for p in procstat.tree(fb.process.pid) if p != writer_pid],
            "ledger writer": [writer_pid],
            "postgres": procstat.by_name("postgres"),
            "redis-server": procstat.by_name("redis-server"),
        }
        before = {name: procstat.cpu_by_pid(pids) for name, pids in groups.items()}
        started = time.monotonic()
        try:
            through = asyncio.run(_timeline(url, body, auth, args.requests))
        finally:
            if writer is not None:
                os.kill(writer, signal.SIGCONT)
        seconds = time.monotonic() - started
        cpu = {name: procstat.cpu_delta(before[name], procstat.cpu_by_pid(pids)) for name, pids in groups.items()}
        print(f"c=1, one keep-alive connection, {args.requests:,} requests each; ledger writer "
              f"{'PAUSED' if writer else 'running'} ({seconds:.1f} s through Farebox); settings changed: {extra_env}\n")
        print("| target | requests | p50 ms | p99 ms | p99.9 ms | max ms | over 2 ms |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        print(_summary("direct", direct))
        print(_summary("farebox", through))
        print("\nCPU seconds while timing through Farebox: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
