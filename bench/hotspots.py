"""Profile a Farebox worker under saturation: the benchmark's stack, wrk at c=64, py-spy on each worker.

    .venv/bin/pip install py-spy==0.4.3     # once; a profiler, not a Farebox dependency
    .venv/bin/python bench/hotspots.py [--mode chat|chat_stream] [--seconds 15] [--connections 64]

Writes one collapsed-stack file per worker to bench/results/ (py-spy's "raw" format) and prints
the functions with the most samples, inclusive and self.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import loadgen
import procstat
import stack

BENCH = Path(__file__).resolve().parent
REQUESTS = {"chat": ("request_chat.json", False), "chat_stream": ("request_chat_stream.json", True)}


def _frame(raw: str) -> str:
    """'func (pkg/file.py:123)' -> 'func (pkg/file.py)': one node per function, not per line."""
    name, _, where = raw.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def load_stacks(collapsed: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in collapsed.read_text().splitlines():
        stack_text, _, count = line.rpartition(" ")
        if stack_text:
            out.append(([_frame(f) for f in stack_text.split(";")], int(count)))
    return out


def top_self(stacks: list[tuple[list[str], int]], n: int = 25) -> list[tuple[str, float]]:
    own: Counter[str] = Counter()
    for frames, count in stacks:
        own[frames[-1]] += count
    total = sum(own.values()) or 1
    return [(f, round(100 * v / total, 1)) for f, v in own.most_common(n)]


def by_package(stacks: list[tuple[list[str], int]], n: int = 20) -> list[tuple[str, float]]:
    """Self samples per library (aiohttp, redis, uvicorn, ...) or per Farebox package (service/proxy)."""
    own: Counter[str] = Counter()
    for frames, count in stacks:
        parts = frames[-1].rpartition(" (")[2].rstrip(")").split("/")
        own[
            "/".join(parts[:2])
            if parts[0] in ("service", "pricing") and len(parts) > 2
            else parts[0]
        ] += count
    return top_self([([k], v) for k, v in own.items()], n)


def call_tree(
    stacks: list[tuple[list[str], int]], root: str, min_pct: float = 1.0, depth: int = 6
) -> list[str]:
    """The merged call tree below the first frame named `root`, nodes above min_pct of all samples."""
    total = sum(c for _, c in stacks) or 1
    tree: dict[tuple[str, ...], int] = Counter()
    for frames, count in stacks:
        if root not in frames:
            continue
        below = frames[frames.index(root) :]
        for i in range(1, min(len(below), depth + 1) + 1):
            tree[tuple(below[:i])] += count
    lines = []

    def walk(prefix: tuple[str, ...]) -> None:
        kids = sorted(
            (k for k in tree if len(k) == len(prefix) + 1 and k[: len(prefix)] == prefix),
            key=lambda k: -tree[k],
        )
        for kid in kids:
            pct = 100 * tree[kid] / total
            if pct >= min_pct:
                lines.append(f"{pct:6.1f}  {'  ' * (len(kid) - 1)}{kid[-1]}")
                walk(kid)

    walk(())
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--mode", choices=tuple(REQUESTS), default="chat")
    p.add_argument("--seconds", type=int, default=15)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument(
        "--root",
        default="Runner.run (asyncio/runners.py)",
        help="where the printed call tree starts",
    )
    p.add_argument("--depth", type=int, default=8)
    args = p.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the database, Redis keys and processes are still removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists() or not shutil.which("wrk") or not shutil.which("nginx"):
        print(
            "needs py-spy (.venv/bin/pip install py-spy==0.4.3), nginx and wrk "
            "(apt-get install -y nginx wrk)",
            file=sys.stderr,
        )
        return 2
    out_dir = BENCH / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    body, stream = REQUESTS[args.mode]
    with ExitStack() as cleanup:
        _, _, fb = stack.start_stack(
            cleanup, redis_url="redis://127.0.0.1:6379/0", workers=args.workers, log_dir=out_dir, prefix="fbprof"
        )
        url, auth = f"{fb.v1}/chat/completions", f"Bearer {fb.key}"
        loadgen.run_wrk(
            url,
            stack.FIXTURES / body,
            auth,
            stream=stream,
            connections=args.connections,
            duration_s=3,
        )
        workers = [
            pid
            for pid in procstat.tree(fb.process.pid)
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        files = [out_dir / f"profile-{args.mode}-{pid}.txt" for pid in workers]
        spies = [
            subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    str(args.rate),
                    "--duration",
                    str(args.seconds),
                    "--format",
                    "raw",
                    "--output",
                    str(f),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for pid, f in zip(workers, files)
        ]
        result = loadgen.run_wrk(
            url,
            stack.FIXTURES / body,
            auth,
            stream=stream,
            connections=args.connections,
            duration_s=args.seconds,
        )
        for spy_proc in spies:
            spy_proc.wait(timeout=60)
    print(
        f"{args.mode} c={args.connections}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms while profiled"
    )
    for f in files:
        if not f.exists() or not f.stat().st_size:
            continue
        stacks = load_stacks(f)
        print(f"\n== {f.name}: call tree below {args.root} (% of all samples)")
        print("\n".join(call_tree(stacks, args.root, depth=args.depth)))
        print(f"\n== {f.name}: self %")
        for name, pct in top_self(stacks):
            print(f"{pct:6.1f}  {name}")
        print(f"\n== {f.name}: self % by package")
        for name, pct in by_package(stacks):
            print(f"{pct:6.1f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
