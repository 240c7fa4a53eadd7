"""Client CPU of one request-path Redis call: redis-py's `evalsha` against the store's own lanes.

    .venv/bin/python bench/redis_call.py [--calls 4000] [--rounds 3] [--redis redis://127.0.0.1:6379/0]

Both send the same EVALSHA (a script that only counts its arguments, with the reserve call's
shape: 6 keys and 9 arguments) one after another on one connection, and report the worker's
CPU per call (`time.process_time`, the kernel's share of the socket calls included), best of
the rounds. The client is built as the proxy builds it (service/runtime.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import redis.asyncio as redis
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.budgets.redis_lanes import ScriptLanes, pack  # noqa: E402

SCRIPT = "return #KEYS + #ARGV"
KEYS = [f"fbbench:{{t:team}}:c:{i}" for i in range(6)]
ARGS: list[bytes | str | int] = [123_456_789, 600_000, 630, "fbr_0123456789abcdef01234567", 1, 2, 3, 4, 5]


async def per_call_us(call, calls: int) -> float:  # type: ignore[no-untyped-def]
    """Client CPU per awaited call, in µs, after a warm-up (the kernel's share included)."""
    for _ in range(500):
        await call()
    start = time.process_time()
    for _ in range(calls):
        await call()
    return (time.process_time() - start) / calls * 1e6


async def main(url: str, calls: int, rounds: int) -> None:
    client = redis.Redis.from_url(
        url, socket_connect_timeout=2.0, socket_timeout=5.0, health_check_interval=30, max_connections=512
    )
    sha = await client.script_load(SCRIPT)
    lanes = ScriptLanes(client)
    packed = pack(["EVALSHA", sha, len(KEYS), *KEYS, *ARGS])
    expected = len(KEYS) + len(ARGS)

    async def via_redis_py() -> None:
        assert await client.evalsha(sha, len(KEYS), *KEYS, *ARGS) == expected

    async def via_lanes() -> None:
        assert await lanes.call(packed) == expected

    results: dict[str, list[float]] = {"redis-py evalsha": [], "ScriptLanes.call": []}
    for _ in range(rounds):  # interleaved, so both see the same machine
        results["redis-py evalsha"].append(await per_call_us(via_redis_py, calls))
        results["ScriptLanes.call"].append(await per_call_us(via_lanes, calls))
    print(f"client CPU per EVALSHA, {calls} calls x {rounds} rounds (best, all):")
    for name, values in results.items():
        print(f"  {name:18} {min(values):6.1f} us   ({', '.join(f'{v:.1f}' for v in values)})")
    await lanes.close()
    await client.aclose()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=4000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    a = p.parse_args()
    uvloop.run(main(a.redis, a.calls, a.rounds))
