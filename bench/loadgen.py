"""Closed-loop load: wrk (the real measurement) or a small aiohttp generator (the harness smoke test).

Both keep `connections` requests in flight for a fixed time and report the same figures.
wrk stops without waiting for the requests still in flight, so up to `connections` of them
may reach the server uncounted; the Python generator lets them finish and counts them.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent


@dataclass
class LoadResult:
    tool: str
    connections: int
    requests: int  # responses received
    non_2xx: int
    socket_errors: int
    duration_s: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    loadgen_cpu_s: float
    uncounted_in_flight_max: (
        int  # requests that may have reached the server after the count stopped
    )

    @property
    def successes(self) -> int:
        return self.requests - self.non_2xx

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "rps": round(self.rps, 1), "successes": self.successes}


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str, body_file: Path, auth: str, *, stream: bool, connections: int, duration_s: float
) -> LoadResult:
    """One wrk run (one thread: the load generator shares the 2 cores with what it measures)."""
    with tempfile.TemporaryDirectory(prefix="farebox-bench-wrk-") as tmp:
        out = Path(tmp) / "out.json"
        env = {
            **os.environ,
            "BENCH_BODY_FILE": str(body_file),
            "BENCH_AUTH": auth,
            "BENCH_STREAM": "1" if stream else "0",
            "BENCH_OUT": str(out),
        }
        seconds = max(1, round(duration_s))
        cmd = [
            "wrk",
            "-t",
            "1",
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(BENCH / "chat.lua"),
            url,
        ]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
        data = json.loads(out.read_text())
    errors = data["errors"]
    lat = data["latency_us"]
    return LoadResult(
        tool="wrk",
        connections=connections,
        requests=data["requests"],
        non_2xx=errors["status"],
        socket_errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        duration_s=data["duration_us"] / 1e6,
        mean_ms=lat["mean"] / 1000,
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000,
        max_ms=lat["max"] / 1000,
        loadgen_cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        uncounted_in_flight_max=connections,
    )


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), math.ceil(pct / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def run_python(
    url: str, body_file: Path, auth: str, *, stream: bool, connections: int, duration_s: float
) -> LoadResult:
    """The same closed loop in aiohttp: slower, so used only to smoke-test the harness."""
    return asyncio.run(
        _python_load(url, body_file.read_bytes(), auth, stream, connections, duration_s)
    )


async def _python_load(
    url: str, body: bytes, auth: str, stream: bool, connections: int, duration_s: float
) -> LoadResult:
    import aiohttp

    headers = {"Content-Type": "application/json", "Authorization": auth}
    if stream:
        headers["X-Bench-Stream"] = "1"
    latencies: list[float] = []
    counts = {"non_2xx": 0, "errors": 0}
    cpu0 = time.process_time()
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        t0 = time.perf_counter()
        deadline = t0 + duration_s

        async def worker() -> None:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        if not 200 <= response.status < 300:
                            counts["non_2xx"] += 1
                except (TimeoutError, aiohttp.ClientError):
                    counts["errors"] += 1
                    continue
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - t0
    latencies.sort()
    ms = [v * 1000 for v in latencies]
    return LoadResult(
        tool="python",
        connections=connections,
        requests=len(ms),
        non_2xx=counts["non_2xx"],
        socket_errors=counts["errors"],
        duration_s=elapsed,
        mean_ms=sum(ms) / len(ms) if ms else 0.0,
        p50_ms=percentile(ms, 50),
        p90_ms=percentile(ms, 90),
        p99_ms=percentile(ms, 99),
        max_ms=ms[-1] if ms else 0.0,
        loadgen_cpu_s=time.process_time() - cpu0,
        uncounted_in_flight_max=0,
    )
