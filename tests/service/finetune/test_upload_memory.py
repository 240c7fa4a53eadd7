"""A 50 MB training file streams through Farebox without being held in memory (bench/ has 200 MB)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Stack
from tests.service.finetune.data import write_training_file
from tests.service.finetune.memory import reset_peak, rss_kib, write_big_training_file
from tests.service.finetune.test_end_to_end import sdk

SIZE = 50 * 1024 * 1024
# Spool buffers (~5 MiB), tokenizer caches and allocator slack; holding the file would add 50 MiB.
MAX_GROWTH_KIB = 25 * 1024


@pytest.mark.slow
def test_a_50_mb_upload_is_validated_and_forwarded_in_bounded_memory(ft_pg_stack: Stack, tmp_path: Path) -> None:
    _, key = ft_pg_stack.admin.team_with_key()
    client = sdk(ft_pg_stack, key).with_options(timeout=300)
    pid = ft_pg_stack.farebox.process.pid
    small = write_training_file(tmp_path / "warm.jsonl", count=20)
    with small.open("rb") as handle:  # warm both tokenizers and every code path first
        client.files.create(file=handle, purpose="fine-tune")
    big = write_big_training_file(tmp_path / "big.jsonl", SIZE)

    baseline = rss_kib(pid)
    reset_peak(pid)
    with big.open("rb") as handle:
        uploaded = client.files.create(file=handle, purpose="fine-tune")
    peak = rss_kib(pid, "VmHWM")

    assert uploaded.bytes == big.stat().st_size
    assert peak - baseline < MAX_GROWTH_KIB, f"peak RSS grew by {(peak - baseline) / 1024:.1f} MiB"
