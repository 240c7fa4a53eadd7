"""The helpers others reuse: run_in_thread, serve_in_thread, and the CLI."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

from service.simulator.__main__ import parse_args
from service.simulator.server import run_in_thread
from tests.service.simulator.reference import TEST_KEY

ROOT = Path(__file__).resolve().parents[3]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_run_in_thread_serves_then_releases_the_port() -> None:
    with run_in_thread() as url:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with openai.OpenAI(base_url=url, api_key=TEST_KEY, max_retries=0) as client:
            assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    assert not _port_open(port)


def test_two_simulators_keep_separate_state() -> None:
    with run_in_thread() as first, run_in_thread() as second:
        httpx.post(f"{first}/chat/completions", json={})
        assert httpx.get(f"{first}/_sim/stats").json()["requests"] == 1
        assert httpx.get(f"{second}/_sim/stats").json()["requests"] == 0


def test_cli_flags_map_to_config() -> None:
    args, config = parse_args(
        [
            "--port",
            "9200",
            "--latency-ms",
            "5",
            "--error-rate",
            "0.25",
            "--error-kinds",
            "429, 500,garbage",
            "--chunk-delay-ms",
            "2",
            "--fast",
            "--job-phase-s",
            "0.5",
            "--null-partial-trained-tokens",
        ]
    )
    assert args.port == 9200
    assert (config.latency_ms, config.error_rate, config.stream_chunk_delay_ms) == (5.0, 0.25, 2.0)
    assert config.error_kinds == ("429", "500", "garbage")
    assert config.fast and config.job_phase_s == 0.5 and not config.partial_trained_tokens


def test_cli_serves_under_uvicorn() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "service.simulator", "--port", str(port), "--fast"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not _port_open(port):
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() < deadline, "the CLI simulator never opened its port"
            time.sleep(0.02)
        with openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key=TEST_KEY, max_retries=0
        ) as client:
            answer = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
        assert answer.usage.prompt_tokens == 12  # --fast answers fixed usage
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr:
            process.stderr.close()
