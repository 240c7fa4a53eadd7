"""The benchmark's fixed upstream must be cheap: a chat answer well under 1 ms of CPU."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from service.simulator import SimulatorConfig, create_app
from service.simulator.tokens import encoding

BODY = orjson.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {
                "role": "user",
                "content": "What is the capital of France? Answer in one short sentence, please.",
            },
        ],
    }
)


async def _cpu_per_request(fast: bool, data_dir: Path, count: int = 400) -> float:
    """Drive the ASGI app directly (no sockets), so only the simulator's own work is measured."""
    app = create_app(SimulatorConfig(fast=fast, data_dir=data_dir))
    headers = [
        (b"authorization", b"Bearer sk-perf"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
    ]
    statuses: list[int] = []

    async def call() -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "server": ("127.0.0.1", 80),
            "client": ("127.0.0.1", 1),
            "app": app,
        }
        messages = [{"type": "http.request", "body": BODY, "more_body": False}]

        async def receive() -> dict:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)

    for _ in range(20):  # warm caches
        await call()
    started = time.process_time()
    for _ in range(count):
        await call()
    per_request = (time.process_time() - started) / count
    assert set(statuses) == {200}
    return per_request


@pytest.mark.parametrize("fast", [True, False])
async def test_non_streaming_chat_costs_well_under_a_millisecond(
    fast: bool, tmp_path: Path
) -> None:
    encoding("o200k_base")  # loaded once per process, not part of a request
    per_request = await _cpu_per_request(fast, tmp_path)
    assert per_request < 0.0005, f"{per_request * 1e6:.0f} us of CPU per request"
