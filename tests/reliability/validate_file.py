"""python -m tests.reliability.validate_file PATH: validate a training file as the upload path does, print JSON.

Run in its own process so its peak memory is its own: the report says how far the peak (Linux's
VmHWM, reset once the tokenizers are loaded) rose above the size of the process at that point.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import orjson

from pricing.training import TrainingFileValidator

CHUNK = 1024 * 1024  # what the upload spool hands the validator at a time


def _status_mib(field: str) -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def _reset_peak() -> None:
    """Start the peak (VmHWM) again from the current size, so loading tokenizers does not mask a rise."""
    Path("/proc/self/clear_refs").write_text("5")


def main(path: str) -> None:
    warm = TrainingFileValidator()  # loads every tokenizer, which the baseline must include
    warm.feed_bytes(b'{"prompt": "warm", "completion": "up"}\n')
    warm.finish()
    _reset_peak()
    baseline = _status_mib("VmRSS")
    validator = TrainingFileValidator()
    started = time.perf_counter()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            size += len(chunk)
            validator.feed_bytes(chunk)
    report = validator.finish()
    print(orjson.dumps({
        "bytes": size,
        "lines": report.lines,
        "examples": report.examples,
        "error_count": report.error_count,
        "errors": [{"line": e.line, "reason": e.reason} for e in report.errors],
        "seconds": round(time.perf_counter() - started, 1),
        "baseline_mib": round(baseline, 1),
        "peak_rise_mib": round(_status_mib("VmHWM") - baseline, 1),
    }).decode())


if __name__ == "__main__":
    main(sys.argv[1])
