"""How fast this interpreter runs plain Python on this host right now: one fixed loop, best of five.

Every bench run records it at its start and its end. Absolute figures from runs on other hosts,
at other times or on other interpreters can then be compared: the loop's time follows the
interpreter's cost per bytecode on this CPU at that moment, which the proxy's own CPU follows too.
"""

from __future__ import annotations

import time


def loop_ms(rounds: int = 5, n: int = 200_000) -> float:
    """The best wall time, in ms, of `rounds` runs of the loop."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        _loop(n)
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 2)


def _loop(n: int) -> int:
    counts: dict[str, int] = {}
    total = 0
    for i in range(n):
        key = f"k{i & 255}"
        counts[key] = counts.get(key, 0) + i
        total += len(key)
    return total


if __name__ == "__main__":
    print(f"{loop_ms()} ms")
