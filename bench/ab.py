"""Two versions of Farebox side by side, timed in interleaved segments: small effects on a noisy host.

    .venv/bin/python bench/ab.py [--base HEAD] [--rounds 12] [--requests 400] [--mode chat|chat_stream]
                                 [--connections 64 --seconds 3] [--base-python .venv-opt/bin/python]
                                 [--base-env FAREBOX_NAME=VALUE ...]

Checks `--base` out into a temporary git worktree and starts it beside the working tree's
Farebox, both in the benchmark's production configuration (2 workers, the ledger-writer process,
budgets, ledger and metrics on), each with its own Postgres database and Redis namespace, in
front of one nginx upstream. Both run on this venv's packages, unless `--base-python` names
another venv's interpreter for the base: with `--base HEAD` and a clean tree, that compares two
interpreters running the same code; `--base-env` gives the base a setting of its own, so the
same code can be compared with one setting changed. Then, round after round, it sends
`--requests` requests one after another over one keep-alive connection to nginx directly, to the
base and to the working tree, in an order that alternates each round, so the host's drift falls
on both alike. Per segment it records the median latency (and, for streams, the median time to
the first body byte) and the proxy's CPU per request (its whole process tree, from /proc).
With `--connections 64`, each segment is instead a wrk run at saturation, and the figures are
requests/s, p50, p99 and CPU per request, and each segment's spread of connections over the
workers is listed round by round.

Prints each figure's median over the rounds for both versions and the median of the per-round
differences (working tree minus base) with their range and in how many rounds the working tree
was lower: the paired difference cancels what the shared machine does to both in the same
minute, which a pair of whole `bench/run.py` runs minutes apart does not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from contextlib import ExitStack
from pathlib import Path
from statistics import median

import calibrate
import loadgen
import procstat
import stack
import ttfb

BENCH = Path(__file__).resolve().parent
REQUESTS = {"chat": "request_chat.json", "chat_stream": "request_chat_stream.json"}


def _worktree(rev: str, cleanup: ExitStack) -> Path:
    where = Path(tempfile.mkdtemp(prefix="farebox-ab-")) / "base"
    subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(where), rev], cwd=stack.ROOT, check=True)
    cleanup.callback(shutil.rmtree, where.parent, ignore_errors=True)
    cleanup.callback(
        subprocess.run, ["git", "worktree", "remove", "--force", str(where)], cwd=stack.ROOT, check=False
    )
    return where


def _start(
    cleanup: ExitStack, label: str, root: Path, python: str, upstream: stack.Upstream, redis_url: str,
    log_dir: Path, extra_env: dict[str, str] | None = None,
) -> stack.Farebox:
    db = stack.Database().create()
    cleanup.callback(db.drop)
    namespace = f"fbab{uuid.uuid4().hex[:10]}"
    cleanup.callback(stack.drop_namespace, redis_url, namespace)
    fb = stack.start_farebox(
        upstream.metered_url, db.url, redis_url, namespace, 2, log_dir, extra_env, root=root, python=python,
        log_name=f"farebox-{label}.log",
    )
    cleanup.callback(fb.stop)
    fb.setup_team()
    return fb


def _spread(values: list[float]) -> str:
    lower = sum(1 for v in values if v < 0)
    return (
        f"{median(values):+.3f} ({min(values):+.3f} to {max(values):+.3f}; "
        f"lower in {lower} of {len(values)} rounds)"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog=".venv/bin/python bench/ab.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--base", default="HEAD", help="the git revision to compare the working tree with")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--requests", type=int, default=400, help="requests per segment")
    p.add_argument("--mode", choices=tuple(REQUESTS), default="chat")
    p.add_argument(
        "--connections", type=int, default=1,
        help="above 1: each segment is a wrk run of --seconds at this many connections (saturation)",
    )
    p.add_argument("--seconds", type=float, default=3.0, help="wrk seconds per segment (--connections > 1)")
    p.add_argument(
        "--base-python", default=sys.executable,
        help="the interpreter (a venv's bin/python) that runs the base: compares interpreters",
    )
    p.add_argument(
        "--base-env", action="append", default=[], metavar="FAREBOX_NAME=VALUE",
        help="a setting for the base only (repeatable): with --base HEAD, compares settings",
    )
    p.add_argument(
        "--upstream", choices=("nginx", "simulator"), default="nginx",
        help="simulator: for the smoke test only (it is not 10x faster than the proxy)",
    )
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = p.parse_args(argv)
    base_env = dict(item.split("=", 1) for item in args.base_env)
    if any(not name.startswith("FAREBOX_") for name in base_env):
        p.error("--base-env takes FAREBOX_NAME=VALUE")
    if args.upstream == "nginx" and shutil.which("nginx") is None:
        print("nginx is missing: apt-get update && apt-get install -y nginx", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    body = (stack.FIXTURES / REQUESTS[args.mode]).read_bytes()
    stream = args.mode == "chat_stream"
    log_dir = Path(os.environ.get("FAREBOX_BENCH_LOG_DIR") or (BENCH / "results"))
    log_dir.mkdir(parents=True, exist_ok=True)
    rev = subprocess.run(
        ["git", "rev-parse", "--short", args.base], cwd=stack.ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()

    loops = [calibrate.loop_ms()]
    with ExitStack() as cleanup:
        upstream = stack.start_nginx() if args.upstream == "nginx" else stack.start_simulator()
        cleanup.callback(upstream.stop)
        arms = {
            "base": _start(
                cleanup, "base", _worktree(rev, cleanup), args.base_python, upstream, args.redis_url, log_dir,
                base_env,
            ),
            "tree": _start(cleanup, "tree", stack.ROOT, sys.executable, upstream, args.redis_url, log_dir),
        }
        targets = {name: (f"{fb.v1}/chat/completions", f"Bearer {fb.key}") for name, fb in arms.items()}
        targets["direct"] = (f"{upstream.direct_url}/chat/completions", f"Bearer {stack.DIRECT_KEY}")
        for url, auth in targets.values():
            asyncio.run(ttfb.sequence(url, body, auth, 300, stream=stream))  # warm-up
        rows: dict[str, dict[str, list[float]]] = {
            name: {"p50": [], "p99": [], "first": [], "cpu": [], "rps": []} for name in targets
        }
        saturating = args.connections > 1
        splits: dict[str, list[str]] = {name: [] for name in arms}  # connections per worker, per round
        for r in range(args.rounds):
            order = ["base", "tree"] if r % 2 == 0 else ["tree", "base"]
            if not saturating:
                order.insert(0, "direct")
            for name in order:
                url, auth = targets[name]
                pids = procstat.tree(arms[name].process.pid) if name in arms else []
                before = procstat.cpu_by_pid(pids)
                if saturating:
                    split: list[int] = []
                    port = int(arms[name].base_url.rsplit(":", 1)[1])
                    sampler = threading.Timer(
                        min(1.5, args.seconds / 2), lambda: split.extend(procstat.connections_per_process(port, pids))
                    )
                    sampler.start()
                    load = loadgen.run_wrk(
                        url, stack.FIXTURES / REQUESTS[args.mode], auth, stream=stream,
                        connections=args.connections, duration_s=args.seconds,
                    )
                    sampler.join()
                    splits[name].append("/".join(map(str, split)) or "?")
                    if load.non_2xx or load.socket_errors:
                        raise RuntimeError(f"{name}: {load.non_2xx} non-2xx, {load.socket_errors} socket errors")
                    done, first, total = load.requests, [load.p50_ms], [load.p50_ms]
                    rows[name]["rps"].append(load.requests / load.duration_s)
                    rows[name]["p99"].append(load.p99_ms)
                else:
                    done = args.requests
                    first, total = asyncio.run(ttfb.sequence(url, body, auth, done, stream=stream))
                cpu = procstat.cpu_delta(before, procstat.cpu_by_pid(pids))
                rows[name]["p50"].append(median(total))
                rows[name]["first"].append(median(first))
                rows[name]["cpu"].append(1000 * cpu / done)
            print(f"[ab] round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)

    if saturating:
        figures = [
            ("requests/s", "rps"), ("p50 latency, ms", "p50"), ("p99 latency, ms", "p99"),
            ("proxy CPU per request, ms", "cpu"),
        ]
        each = f"c={args.connections}, {args.rounds} rounds of {args.seconds:g} s of wrk each"
    else:
        figures = [("added latency p50, ms", "p50"), ("proxy CPU per request, ms", "cpu")]
        each = f"c=1, {args.rounds} rounds of {args.requests} requests each"
        if args.mode == "chat_stream":
            figures.insert(1, ("time to first byte over direct, p50, ms", "first"))
    loops.append(calibrate.loop_ms())
    print(f"## bench/ab.py: working tree against {rev}, {args.mode}, {each}\n")
    base_python = "" if args.base_python == sys.executable else f" The base ran on {args.base_python}."
    if base_env:
        base_python += " The base ran with " + ", ".join(f"{k}={v}" for k, v in base_env.items()) + "."
    print(
        f"Working tree on {sys.executable}.{base_python} Calibration loop (bench/calibrate.py): "
        f"{loops[0]:.1f} ms at start, {loops[1]:.1f} ms at end.\n"
    )
    print(f"| figure | base {rev} | working tree | tree - base, per round: median (range) |")
    print("|---|---:|---:|---:|")
    for title, key in figures:
        if key in ("cpu", "rps") or saturating:
            a, b = rows["base"][key], rows["tree"][key]
        else:  # against the direct segment of the same round
            a = [x - d for x, d in zip(rows["base"][key], rows["direct"][key], strict=True)]
            b = [x - d for x, d in zip(rows["tree"][key], rows["direct"][key], strict=True)]
        diffs = [y - x for x, y in zip(a, b, strict=True)]
        print(f"| {title} | {median(a):.3f} | {median(b):.3f} | {_spread(diffs)} |")
    if saturating:
        print("\nConnections per worker, round by round (read from /proc during each segment), with requests/s:\n")
        for name in arms:
            rounds = ", ".join(f"{sp} {rps:,.0f}" for sp, rps in zip(splits[name], rows[name]["rps"], strict=True))
            print(f"- {name}: {rounds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
