"""Injected faults (per request, queued, global) and the introspection endpoints."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from service.simulator.config import SimulatorConfig
from service.simulator.server import run_in_thread
from tests.service.simulator.reference import TEST_KEY

MESSAGES = [{"role": "user", "content": "fault injection"}]
AUTH = {"authorization": f"Bearer {TEST_KEY}"}


def _chat(client: openai.OpenAI, **headers: str) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers=headers
    )


def test_rate_limit_error_with_retry_after(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as raised:
        _chat(client, **{"x-sim-error": "429"})
    error = raised.value
    assert error.status_code == 429 and error.code == "rate_limit_exceeded"
    assert error.response.headers["retry-after"] == "1"
    assert error.response.headers["x-request-id"].startswith("req_")
    assert set(error.response.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("status", ["500", "502", "503"])
def test_server_errors(client: openai.OpenAI, status: str) -> None:
    with pytest.raises(openai.InternalServerError) as raised:
        _chat(client, **{"x-sim-error": status})
    assert raised.value.status_code == int(status)
    assert raised.value.body["type"] == "server_error"


def test_quota_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as raised:
        _chat(client, **{"x-sim-error": "quota"})
    assert raised.value.code == "insufficient_quota" and raised.value.type == "insufficient_quota"


def test_garbage_body_fails_to_parse(client: openai.OpenAI) -> None:
    with pytest.raises((json.JSONDecodeError, openai.APIResponseValidationError)):
        _chat(client, **{"x-sim-error": "garbage"})


def test_timeout_keeps_the_client_waiting(sim_url: str) -> None:
    with openai.OpenAI(base_url=sim_url, api_key=TEST_KEY, max_retries=0, timeout=0.3) as impatient:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            _chat(impatient, **{"x-sim-error": "timeout"})
    assert time.monotonic() - started >= 0.3


def test_broken_stream_raises_in_the_sdk(client: openai.OpenAI) -> None:
    received = []
    with pytest.raises((openai.APIConnectionError, httpx.RemoteProtocolError)):
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            extra_headers={"x-sim-break-after": "3"},
        )
        for chunk in stream:
            received.append(chunk)
    assert len(received) == 3


def test_broken_stream_on_the_wire_has_no_done(sim_url: str) -> None:
    lines: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream(
            "POST",
            f"{sim_url}/chat/completions",
            headers={**AUTH, "x-sim-break-after": "5"},
            json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True},
        ) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line:
                    lines.append(line)
    assert len(lines) == 5 and "data: [DONE]" not in lines


def test_broken_non_streaming_body(client: openai.OpenAI) -> None:
    with pytest.raises((openai.APIConnectionError, httpx.RemoteProtocolError)):
        _chat(client, **{"x-sim-break-after": "0"})


def test_queued_faults_hit_the_next_requests_only(sim_url: str, client: openai.OpenAI) -> None:
    queued = httpx.post(
        f"{sim_url}/_sim/faults", json={"faults": [{"error": "500"}, {"error": "429"}]}
    )
    assert queued.json() == {"queued": 2}
    with pytest.raises(openai.InternalServerError):
        _chat(client)
    with pytest.raises(openai.RateLimitError):
        _chat(client)
    assert _chat(client).choices[0].finish_reason == "stop"


def test_sdk_retries_through_a_queued_fault(sim_url: str) -> None:
    httpx.post(f"{sim_url}/_sim/reset")
    httpx.post(f"{sim_url}/_sim/faults", json={"faults": [{"error": "503"}]})
    with openai.OpenAI(base_url=sim_url, api_key=TEST_KEY, max_retries=1) as retrying:
        retrying = retrying.with_options(timeout=5)
        assert _chat(retrying).usage is not None
    stats = httpx.get(f"{sim_url}/_sim/stats").json()
    assert stats["by_endpoint"]["POST /v1/chat/completions"] == 2
    assert stats["by_status"] == {"503": 1, "200": 1}


def test_stats_and_last_request_show_what_arrived(sim_url: str, client: openai.OpenAI) -> None:
    assert httpx.post(f"{sim_url}/_sim/reset").json() == {"reset": True}
    assert httpx.get(f"{sim_url}/_sim/stats").json()["requests"] == 0
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        max_tokens=3,
        user="u-1",
        extra_headers={"x-trace": "abc"},
    )
    httpx.post(
        f"{sim_url}/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES}
    )  # no key
    stats = httpx.get(f"{sim_url}/_sim/stats").json()
    assert stats["requests"] == 2 and stats["by_status"] == {"200": 1, "401": 1}
    history = httpx.get(f"{sim_url}/_sim/requests").json()["data"]
    first = history[0]
    assert first["body"] == {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "max_tokens": 3,
        "user": "u-1",
    }
    assert (
        first["headers"]["x-trace"] == "abc"
        and first["headers"]["authorization"] == f"Bearer {TEST_KEY}"
    )
    last = httpx.get(f"{sim_url}/_sim/last_request").json()
    assert last["status"] == 401 and "authorization" not in last["headers"]


def test_latency_pacing_headers_and_unknown_paths(sim_url: str, client: openai.OpenAI) -> None:
    started = time.monotonic()
    _chat(client, **{"x-sim-latency-ms": "150"})
    assert time.monotonic() - started >= 0.15
    started = time.monotonic()
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            extra_headers={"x-sim-chunk-delay-ms": "20", "x-sim-completion-tokens": "4"},
        )
    )
    assert len(chunks) == 6 and time.monotonic() - started >= 6 * 0.02  # role, 4 tokens, finish
    unknown = httpx.post(f"{sim_url}/no/such/thing", headers=AUTH)
    assert (
        unknown.status_code == 404
        and unknown.json()["error"]["message"] == "Invalid URL (POST /v1/no/such/thing)"
    )
    assert unknown.headers["x-request-id"].startswith("req_")
    bad = httpx.post(
        f"{sim_url}/chat/completions",
        headers={**AUTH, "x-sim-error": "teapot"},
        json={"model": "gpt-4o-mini", "messages": MESSAGES},
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-sim-error"


def test_global_error_rate_and_paced_streams() -> None:
    config = SimulatorConfig(error_rate=1.0, error_kinds=("503",), fast=True)
    with (
        run_in_thread(config) as url,
        openai.OpenAI(base_url=url, api_key=TEST_KEY, max_retries=0) as client,
    ):
        for _ in range(3):
            with pytest.raises(openai.InternalServerError):
                _chat(client)
        assert httpx.get(f"{url}/_sim/stats").json()["by_status"] == {"503": 3}

    paced = SimulatorConfig(stream_chunk_delay_ms=25, completion_tokens=8, fast=True)
    with (
        run_in_thread(paced) as url,
        openai.OpenAI(base_url=url, api_key=TEST_KEY, max_retries=0) as client,
    ):
        started = time.monotonic()
        arrivals = [
            time.monotonic() - started
            for _ in client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True
            )
        ]
    # 11 chunks (role, 8 tokens, finish, [DONE]) 25 ms apart: the first arrives before the last.
    assert arrivals[-1] >= 10 * 0.025
    assert arrivals[0] < arrivals[-1] / 2
