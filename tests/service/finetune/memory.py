"""Peak resident memory of a process (Linux /proc), for the upload memory test and benchmark."""

from __future__ import annotations

from pathlib import Path


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """VmRSS (now) or VmHWM (peak since start or since reset_peak) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def reset_peak(pid: int) -> None:
    """Start VmHWM afresh from the current RSS (Linux clear_refs: 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def write_big_training_file(path: Path, size_bytes: int) -> Path:
    """A valid chat JSONL file of at least size_bytes, written line by line (never held in memory)."""
    import json

    words = "the ledger settles every training token at the rate in force when the job began".split()
    with path.open("w") as out:
        written, i = 0, 0
        while written < size_bytes:
            text = " ".join(words[(i + k) % len(words)] for k in range(200))
            line = json.dumps({"messages": [
                {"role": "user", "content": f"Summarise item {i}: {text}"},
                {"role": "assistant", "content": f"Item {i}: {text[:300]}"},
            ]}) + "\n"
            written += out.write(line)
            i += 1
    return path
