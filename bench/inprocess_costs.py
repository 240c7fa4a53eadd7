"""Client CPU of two per-request costs measured alone: the upstream POST and the metrics.

    .venv/bin/python bench/inprocess_costs.py [--calls 3000] [--rounds 3]

1. One POST of the benchmark's chat request to the fixed-answer nginx (started here, as
   bench/run.py starts it) and reading the answer: through the pool inference requests take
   (`service/proxy/upstream_pool.py`), through the aiohttp session Farebox keeps for files and
   fine-tuning jobs (`service/proxy/upstream.py`), and through a bare aiohttp session (default
   connector, no timeouts) for comparison. Interleaved, best of the rounds, `time.process_time` (the kernel's
   share of the socket calls included).
2. The metrics one settled request records in multiprocess mode (in-flight gauge up and down,
   the charge's counters, the two latency histograms), in a temporary metrics directory.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import aiohttp  # noqa: E402
import stack  # noqa: E402
import uvloop  # noqa: E402
from redis_call import per_call_us  # noqa: E402

from service.proxy.upstream import Upstream  # noqa: E402


async def upstream_post(base_url: str, calls: int, rounds: int) -> None:
    body = (stack.FIXTURES / "request_chat.json").read_bytes()
    farebox = Upstream(base_url, "sk-bench")
    await farebox.start()
    bare = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256),
        timeout=aiohttp.ClientTimeout(total=None),
        skip_auto_headers=("User-Agent",),
    )
    url = farebox.url("/chat/completions")
    headers = farebox.request_headers({}, "application/json")

    async def pooled() -> None:
        answer = await farebox.post_json("/chat/completions", "", body, [(b"accept", b"application/json")])
        assert answer.status == 200
        await answer.read()
        answer.release()

    def post(session: aiohttp.ClientSession) -> Callable[[], Awaitable[None]]:
        async def one() -> None:
            response = await session.post(url, data=body, headers=headers)
            assert response.status == 200
            await response.read()
            response.release()

        return one

    ways = {
        "inference pool": pooled,
        "aiohttp, as Farebox's": post(farebox.session),
        "aiohttp, bare": post(bare),
    }
    results: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, call in ways.items():
            results[name].append(await per_call_us(call, calls))
    print(f"client CPU per upstream POST + read, {calls} calls x {rounds} rounds (best, all):")
    for name, values in results.items():
        print(f"  {name:22} {min(values):6.1f} us   ({', '.join(f'{v:.1f}' for v in values)})")
    await farebox.close()
    await bare.close()


def metrics_per_request(calls: int, rounds: int) -> None:
    from service import metrics
    from service.ledger.event import ChargeEvent

    now = datetime.now(timezone.utc)
    event = ChargeEvent(
        request_id="fbr_bench", team_id="team", key_id="key", kind="inference", status="ok",
        endpoint="chat.completions", started_at=now, finished_at=now, cost_nano=12_345,
        model_requested="gpt-4o-mini", base_model="gpt-4o-mini", prompt_tokens=60,
        completion_tokens=64, priced=True,
    )

    def one() -> None:
        metrics.request_started()
        metrics.record_charge("team", event)
        metrics.observe_latency("chat.completions", 0.0003, 0.0007)
        metrics.request_finished()

    assert metrics.MULTIPROCESS, "PROMETHEUS_MULTIPROC_DIR must be set before service.metrics loads"
    for _ in range(2000):
        one()
    values = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(calls * 5):
            one()
        values.append((time.process_time() - start) / (calls * 5) * 1e6)
    print(f"metrics of one settled request, multiprocess mode: {min(values):.1f} us "
          f"({', '.join(f'{v:.1f}' for v in values)})")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="farebox-bench-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        metrics_per_request(args.calls, args.rounds)
    upstream = stack.start_nginx()
    try:
        uvloop.run(upstream_post(upstream.metered_url, args.calls, args.rounds))
    finally:
        upstream.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
