"""Bad and huge training files: refused with the line and the reason, in bounded memory, never forwarded."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import Stack, make_stack
from tests.harness import ROOT, FareboxConfig, Proc
from tests.reliability.results import Recorder

pytestmark = pytest.mark.timeout(300)

UPLOAD_LIMIT = 1024 * 1024
EXAMPLE = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
BOUNDARY = "farebox-test-boundary"


@pytest.fixture(scope="module")
def spool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spool")


@pytest.fixture(scope="module")
def upload_stack(simulator: Proc, log_dir: Path, pg_url: str, redis_url: str, spool: Path) -> Iterator[Stack]:
    config = FareboxConfig(pg_url, simulator.base_url, redis_url, f"fbt{uuid.uuid4().hex[:10]}", extra_env={
        "FAREBOX_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT), "FAREBOX_SPOOL_DIR": str(spool),
    })
    stack = make_stack("postgres", config, log_dir)
    yield stack
    stack.farebox.stop()


def _uploads_seen(simulator: Proc) -> int:
    return httpx.get(f"{simulator.base_url}/_sim/stats").json()["by_endpoint"].get("POST /v1/files", 0)


def _multipart(chunks: Iterator[bytes]) -> Iterator[bytes]:
    yield (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
           f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"train.jsonl\"\r\n"
           "Content-Type: application/jsonl\r\n\r\n").encode()
    yield from chunks
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def _framing_bytes() -> int:
    return sum(len(part) for part in _multipart(iter(())))


def _upload(stack: Stack, key: str, chunks: Iterator[bytes], size: int | None = None, timeout: float = 60) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    if size is not None:
        headers["Content-Length"] = str(size + _framing_bytes())
    return httpx.post(f"{stack.v1}/files", content=_multipart(chunks), headers=headers, timeout=timeout)


def _refused(resp: httpx.Response) -> dict:
    assert resp.status_code == 400, resp.text[:500]
    error = resp.json()["error"]
    assert error["code"] == "invalid_training_file" and error["type"] == "invalid_request_error"
    return error


BAD_FILES = [
    ("CSV, not JSONL", b"prompt,completion\nhello,world\n", 1, "not valid JSON"),
    ("a JSON array of examples", b"[" + EXAMPLE.strip() + b", " + EXAMPLE.strip() + b"]\n", 1, "expected a JSON object, got list"),
    ("a truncated last line", EXAMPLE * 12 + EXAMPLE[:40], 13, "not valid JSON"),
    ("a line cut in the middle", EXAMPLE * 3 + EXAMPLE[:25] + b"\n" + EXAMPLE * 8, 4, "not valid JSON"),
    ("binary, not UTF-8", EXAMPLE * 2 + b"\xff\xd8\xff\xe0\x00\x10JFIF\n" + EXAMPLE * 9, 3, "not valid UTF-8"),
    ("a blank line inside", EXAMPLE * 5 + b"\n" + EXAMPLE * 6, 6, "blank line"),
    ("an example with no assistant", EXAMPLE * 10 + b'{"messages": [{"role": "user", "content": "x"}]}\n', 11, "no assistant message"),
]


@pytest.mark.parametrize(("name", "content", "line", "reason"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_a_bad_training_file_is_refused_naming_the_line_and_the_reason(
    upload_stack: Stack, simulator: Proc, spool: Path, name: str, content: bytes, line: int, reason: str,
    record_figures: Recorder,
) -> None:
    _, key = upload_stack.admin.team_with_key()
    before = _uploads_seen(simulator)
    error = _refused(_upload(upload_stack, key, iter([content])))
    first = error["errors"][0]
    assert first["line"] == line and reason in first["reason"], error
    assert f"line {line}: " in error["message"] and reason in error["message"]
    assert _uploads_seen(simulator) == before, "a refused file reached the upstream"
    assert list(spool.iterdir()) == [], "the spooled upload was not removed"
    record_figures(fault=f"training file: {name}", requests=1, during=1, ledger_rows=0, status=400,
                   error=f"line {first['line']}: {first['reason']}", differences=0)


def test_an_upload_over_the_limit_is_a_413_declared_or_streamed(
    upload_stack: Stack, simulator: Proc, spool: Path, record_figures: Recorder,
) -> None:
    _, key = upload_stack.admin.team_with_key()
    before = _uploads_seen(simulator)
    size = 2 * UPLOAD_LIMIT

    def body() -> Iterator[bytes]:
        for _ in range(size // len(EXAMPLE) + 1):
            yield EXAMPLE

    declared = _upload(upload_stack, key, body(), size=size // len(EXAMPLE) * len(EXAMPLE) + len(EXAMPLE))
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "request_too_large"
    streamed = _upload(upload_stack, key, body())
    assert streamed.status_code == 413 and str(UPLOAD_LIMIT) in streamed.json()["error"]["message"]

    def two_gib() -> Iterator[bytes]:  # refused on its declared length: none of it is read
        for _ in range(2048):
            yield b"\0" * (1 << 20)

    huge = _upload(upload_stack, key, two_gib(), size=2 << 30)
    assert huge.status_code == 413 and f"the limit is {UPLOAD_LIMIT} bytes" in huge.json()["error"]["message"]
    assert _uploads_seen(simulator) == before
    assert list(spool.iterdir()) == []
    record_figures(fault="upload over FAREBOX_MAX_UPLOAD_BYTES (2 MiB chunked, 2 MiB and 2 GiB declared)", requests=3, during=3,
                   ledger_rows=0, status=413, differences=0)


def _validate_in_own_process(path: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "tests.reliability.validate_file", str(path)], cwd=ROOT,
                         capture_output=True, check=True, timeout=280)
    return orjson.loads(out.stdout)


@pytest.mark.slow
def test_ten_million_tiny_lines_in_bounded_memory(tmp_path: Path, record_figures: Recorder) -> None:
    path = tmp_path / "tiny.jsonl"
    with path.open("wb") as handle:
        for _ in range(10):
            handle.write(b"{}\n" * 1_000_000)
    report = _validate_in_own_process(path)
    record_figures(fault="training file of 10 million tiny lines", requests=1, during=10_000_000,
                   ledger_rows=0, lines=report["lines"], seconds=report["seconds"],
                   peak_memory_rise_mib=report["peak_rise_mib"], error=report["errors"][0], differences=0)
    assert report["lines"] == report["error_count"] == 10_000_000
    assert len(report["errors"]) == 100, "the kept errors must be capped, not one per line"
    assert report["errors"][0] == {"line": 1, "reason": "no 'messages' list (chat format) or 'prompt'/'completion' pair"}
    assert report["errors"][-1]["line"] == 100
    assert report["peak_rise_mib"] < 32, report


@pytest.mark.slow
def test_a_two_gigabyte_file_in_bounded_memory(tmp_path: Path, record_figures: Recorder) -> None:
    """A sparse 2 GiB file with no newline: one line far past the 64 MiB line limit."""
    path = tmp_path / "huge.jsonl"
    with path.open("wb") as handle:
        handle.write(EXAMPLE * 3)
        handle.truncate(2 << 30)
    report = _validate_in_own_process(path)
    record_figures(fault="training file of 2 GiB (one endless line)", requests=1, during=1, ledger_rows=0,
                   seconds=report["seconds"], peak_memory_rise_mib=report["peak_rise_mib"],
                   error=report["errors"][0], differences=0)
    assert report["bytes"] == 2 << 30
    assert report["examples"] == 3 and report["error_count"] == 1
    assert report["errors"] == [{"line": 4, "reason": "line is longer than 67108864 bytes"}]
    assert report["peak_rise_mib"] < 160, report  # the line buffer stops at 64 MiB


def _memory_mib(pid: int, field: str) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


@pytest.mark.slow
def test_a_half_gigabyte_upload_is_refused_in_bounded_memory(
    simulator: Proc, log_dir: Path, pg_url: str, redis_url: str, tmp_path: Path, record_figures: Recorder,
) -> None:
    """Through the real upload path (spool + validator, a 1 GiB limit): refused, memory flat.

    512 MiB keeps it quick; the file's size does not matter to memory, which the 2 GiB file above shows.
    """
    spool = tmp_path / "spool"
    config = FareboxConfig(pg_url, simulator.base_url, redis_url, f"fbt{uuid.uuid4().hex[:10]}", extra_env={
        "FAREBOX_MAX_UPLOAD_BYTES": str(1 << 30), "FAREBOX_SPOOL_DIR": str(spool)})
    stack = make_stack("postgres", config, log_dir)
    try:
        _, key = stack.admin.team_with_key()
        before_uploads = _uploads_seen(simulator)
        pid = stack.farebox.process.pid
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here
        baseline = _memory_mib(pid, "VmRSS")
        size = 512 << 20
        line = b'{"prompt": "' + b"a" * (1 << 20) + b'"}\n'  # 511 one-MiB lines, each missing its completion

        def body() -> Iterator[bytes]:
            for _ in range(size // len(line)):
                yield line
            yield b"x" * (size % len(line))

        error = _refused(_upload(stack, key, body(), size=size, timeout=240))
        peak_rise = _memory_mib(pid, "VmHWM") - baseline
        record_figures(fault="512 MiB upload through the HTTP spool", requests=1, during=1, ledger_rows=0,
                       status=400, peak_memory_rise_mib=round(peak_rise, 1),
                       error=error["errors"][0], differences=0)
        assert error["errors"][0] == {"line": 1, "reason": "'completion' must be a string"}
        assert f"{size // len(line) + 1} invalid line(s)" in error["message"]
        assert _uploads_seen(simulator) == before_uploads
        assert list(spool.iterdir()) == []
        assert peak_rise < 160, f"the upload raised the process's peak memory by {peak_rise:.0f} MiB"
    finally:
        stack.farebox.stop()
