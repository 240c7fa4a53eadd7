"""Benchmark: upload a 200 MB training file through Farebox and measure the Farebox process's peak RSS.

Starts the simulated upstream and a Farebox on the embedded SQLite default, warms both tokenizers
with a small upload, then uploads the big file with purpose fine-tune (so every byte is validated
and counted) and reports time, throughput and how much the peak resident memory grew. A Farebox
that held the file would grow by at least its size; the spool keeps the growth to a few MiB.

    .venv/bin/python bench/upload_200mb.py [--size-mb 200] [--max-growth-mib 64]

Exits 1 when the growth exceeds --max-growth-mib. Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness import Admin, FareboxConfig, start_farebox, start_simulator  # noqa: E402
from tests.service.finetune.data import write_training_file  # noqa: E402
from tests.service.finetune.memory import reset_peak, rss_kib, write_big_training_file  # noqa: E402


def upload(base_url: str, key: str, path: Path) -> dict:
    with path.open("rb") as handle:  # httpx streams the file part from the handle
        answer = httpx.post(
            f"{base_url}/v1/files", headers={"Authorization": f"Bearer {key}"},
            data={"purpose": "fine-tune"}, files={"file": (path.name, handle, "application/jsonl")}, timeout=3600,
        )
    answer.raise_for_status()
    return answer.json()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--max-growth-mib", type=float, default=64.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="farebox-bench-") as tmp:
        work = Path(tmp)
        print(f"writing a {args.size_mb} MB training file ...", flush=True)
        big = write_big_training_file(work / "big.jsonl", args.size_mb * 1024 * 1024)
        sim = start_simulator(work)
        config = FareboxConfig(f"sqlite+aiosqlite:///{work / 'farebox.db'}", sim.base_url)
        farebox = start_farebox(config, work)
        try:
            admin = Admin(farebox.base_url, config.admin_token)
            _, key = admin.team_with_key()
            pid = farebox.process.pid
            upload(farebox.base_url, key, write_training_file(work / "warm.jsonl", count=20))

            baseline = rss_kib(pid)
            reset_peak(pid)
            samples: list[int] = []
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.05):
                    samples.append(rss_kib(pid))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = time.perf_counter()
            answer = upload(farebox.base_url, key, big)
            elapsed = time.perf_counter() - started
            done.set()
            sampler.join()
            peak = rss_kib(pid, "VmHWM")
        finally:
            farebox.stop()
            sim.stop()

    size = answer["bytes"]
    growth_mib = (peak - baseline) / 1024
    print(f"uploaded {answer['id']}: {size / 2**20:.1f} MiB in {elapsed:.1f} s ({size / 2**20 / elapsed:.1f} MiB/s)")
    print(f"farebox RSS: baseline {baseline / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB "
          f"(sampled max {max(samples, default=baseline) / 1024:.1f} MiB), growth {growth_mib:.1f} MiB")
    ok = growth_mib <= args.max_growth_mib
    print(("PASS" if ok else "FAIL") + f": growth {'<=' if ok else '>'} {args.max_growth_mib} MiB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
