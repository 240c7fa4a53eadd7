"""What the ledger writer's CPU scheduling does to the c=1 tail: an interleaved A/B on one stack.

    sudo .venv/bin/python bench/sched_ab.py [--rounds 6] [--requests 3000]

Starts the benchmark's stack once (nginx upstream, Farebox with Postgres, Redis, budgets, ledger
and metrics), then times requests one after another over one keep-alive connection (as
bench/tail.py does) in segments of `--requests`, cycling through three settings of the running
ledger-writer process, in alternating order each round so that drift in the machine's load falls
on all three alike:

- `idle`: the writer under SCHED_IDLE (Farebox's default, FAREBOX_LEDGER_WRITER_IDLE=true);
- `normal`: the writer under SCHED_OTHER, as any process starts (what FAREBOX_LEDGER_WRITER_IDLE=false gives);
- `paused`: the writer stopped (SIGSTOP) for the segment: no ledger work at all while timing.
  The outbox keeps every charge; the writer catches up in the next segment.

Prints, per setting, the requests timed, p50/p99/p99.9 and how many took over 2 ms. Moving a
process back from SCHED_IDLE to SCHED_OTHER needs root (CAP_SYS_NICE); it refuses to run without.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from contextlib import ExitStack
from pathlib import Path

import stack
import tail
from loadgen import percentile

BENCH = Path(__file__).resolve().parent
SETTINGS = ("idle", "normal", "paused")


def _set_policy(pid: int, policy: int) -> None:
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setscheduler(int(tid), policy, os.sched_param(0))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--requests", type=int, default=3000, help="requests per segment")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/sched_ab.py needs root: only root may move a process back from SCHED_IDLE", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out_dir = BENCH / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    body = (stack.FIXTURES / "request_chat.json").read_bytes()
    timings: dict[str, list[float]] = {name: [] for name in SETTINGS}
    with ExitStack() as cleanup:
        _, _, fb = stack.start_stack(cleanup, redis_url=args.redis_url, workers=2, log_dir=out_dir, prefix="fbsched")
        url, auth = f"{fb.v1}/chat/completions", f"Bearer {fb.key}"
        asyncio.run(tail._timeline(url, body, auth, 500))  # warm-up
        writer = stack.writer_pid(fb.process.pid)
        if os.sched_getscheduler(writer) != os.SCHED_IDLE:
            print("note: the writer did not start under SCHED_IDLE (FAREBOX_LEDGER_WRITER_IDLE=false?)")
        for round_ in range(args.rounds):
            for name in SETTINGS if round_ % 2 == 0 else SETTINGS[::-1]:
                _set_policy(writer, os.SCHED_OTHER if name == "normal" else os.SCHED_IDLE)
                if name == "paused":
                    os.kill(writer, signal.SIGSTOP)
                try:
                    timings[name].extend(asyncio.run(tail._timeline(url, body, auth, args.requests)))
                finally:
                    if name == "paused":
                        os.kill(writer, signal.SIGCONT)
        _set_policy(writer, os.SCHED_IDLE)
    print(f"c=1, one keep-alive connection; {args.rounds} rounds of {args.requests:,} requests per setting, interleaved\n")
    print("| ledger writer | requests | p50 ms | p99 ms | p99.9 ms | over 2 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, ms in timings.items():
        s = sorted(ms)
        slow = sum(1 for x in ms if x > 2.0)
        print(f"| {name} | {len(ms):,} | {percentile(s, 50):.3f} | {percentile(s, 99):.3f} | "
              f"{percentile(s, 99.9):.3f} | {slow} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
