"""Upstream faults not covered in tests/service/proxy: timeouts, a stalled stream, 429s, an unreachable upstream.

Each answers the client in OpenAI's shape, ledgers what was delivered (nothing, or the partial
stream), and releases the reservation.
"""

from __future__ import annotations

import socketserver
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import Stack, make_stack
from tests.harness import FareboxConfig, Proc, free_port, wait_until
from tests.reliability.load import MESSAGES, MODEL, usage_cost
from tests.reliability.results import Recorder

pytestmark = pytest.mark.timeout(120)

UPSTREAM_TIMEOUT_S = "1.5"


@pytest.fixture(scope="module")
def timeout_stack(simulator: Proc, log_dir: Path, pg_url: str, redis_url: str) -> Iterator[Stack]:
    config = FareboxConfig(pg_url, simulator.base_url, redis_url, f"fbt{uuid.uuid4().hex[:10]}",
                           extra_env={"FAREBOX_UPSTREAM_TIMEOUT_S": UPSTREAM_TIMEOUT_S})
    stack = make_stack("postgres", config, log_dir)
    yield stack
    stack.farebox.stop()


@pytest.fixture(scope="module")
def unreachable_stack(log_dir: Path, pg_url: str, redis_url: str) -> Iterator[Stack]:
    """A Farebox whose upstream port has nothing listening."""
    config = FareboxConfig(pg_url, f"http://127.0.0.1:{free_port()}/v1", redis_url, f"fbt{uuid.uuid4().hex[:10]}")
    stack = make_stack("postgres", config, log_dir)
    yield stack
    stack.farebox.stop()


class _Misbehaving(socketserver.BaseRequestHandler):
    """Reads a request, then answers with bytes that are not HTTP or closes without a word."""

    def handle(self) -> None:
        self.request.recv(65536)
        if self.server.mode == "garbage":  # type: ignore[attr-defined]
            self.request.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")


@pytest.fixture(scope="module")
def misbehaving_stack(log_dir: Path, pg_url: str, redis_url: str) -> Iterator[tuple[Stack, socketserver.TCPServer]]:
    """A Farebox whose upstream is a raw TCP server that never speaks HTTP (mode set per test)."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Misbehaving)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    config = FareboxConfig(pg_url, f"http://127.0.0.1:{port}/v1", redis_url, f"fbt{uuid.uuid4().hex[:10]}")
    stack = make_stack("postgres", config, log_dir)
    yield stack, server
    stack.farebox.stop()
    server.shutdown()


@pytest.mark.parametrize(("mode", "message"), [
    ("garbage", "answered with bytes that are not HTTP"),
    ("silent", "closed the connection without answering"),
])
def test_an_upstream_that_does_not_speak_http_is_a_502_ledgered_at_zero(
    misbehaving_stack: tuple[Stack, socketserver.TCPServer], mode: str, message: str
) -> None:
    stack, server = misbehaving_stack
    server.mode = mode  # type: ignore[attr-defined]
    team_id, key = _team(stack)
    resp = _chat(stack, key, {})
    assert resp.status_code == 502
    error = resp.json()["error"]
    assert error["code"] == "upstream_error" and message in error["message"]
    [row] = stack.ledger.wait_rows(team_id, 1)
    assert (row["status"], row["http_status"], row["cost_nano"]) == ("upstream_error", 502, 0)
    assert _released(stack, team_id)["spent_nano"] == 0


def _team(stack: Stack) -> tuple[str, str]:
    team, key = stack.admin.team_with_key()
    stack.admin.budget(team["id"], "5", "daily")
    return team["id"], key


def _released(stack: Stack, team_id: str) -> dict:
    """The standing once the hold is gone (settle runs as the response ends)."""
    return wait_until(lambda: (s := stack.admin.standing(team_id)[0])["reserved_nano"] == 0 and s, 10,
                      what="the reservation released")


def _chat(stack: Stack, key: str, headers: dict[str, str], **extra: object) -> httpx.Response:
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 20, **extra}
    return httpx.post(f"{stack.v1}/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {key}", **headers})


def test_upstream_timeout_is_a_504_ledgered_at_zero(timeout_stack: Stack, record_figures: Recorder) -> None:
    team_id, key = _team(timeout_stack)
    resp = _chat(timeout_stack, key, {"x-sim-error": "timeout"})
    assert resp.status_code == 504
    assert resp.json() == {"error": {
        "message": "The upstream did not answer in time.", "type": "server_error", "param": None, "code": "upstream_timeout",
    }}
    [row] = timeout_stack.ledger.wait_rows(team_id, 1)
    assert row["request_id"] == resp.headers["x-farebox-request-id"]
    assert (row["status"], row["http_status"], row["cost_nano"], row["usage_source"]) == ("upstream_timeout", 504, 0, "none")
    standing = _released(timeout_stack, team_id)
    record_figures(fault="upstream timeout", requests=1, during=1, ledger_rows=1,
                   differences=standing["spent_nano"] + standing["reserved_nano"])
    assert standing["spent_nano"] == 0


def test_a_stream_that_stalls_past_the_timeout_is_cut_and_billed_for_what_was_delivered(
    timeout_stack: Stack, record_figures: Recorder,
) -> None:
    team_id, key = _team(timeout_stack)
    headers = {"x-sim-chunk-delay-ms": "400", "x-sim-completion-tokens": "20"}
    with httpx.stream("POST", f"{timeout_stack.v1}/chat/completions", timeout=30,
                      json={"model": MODEL, "messages": MESSAGES, "max_tokens": 20, "stream": True},
                      headers={"Authorization": f"Bearer {key}", **headers}) as resp:
        assert resp.status_code == 200
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1].startswith('{"error"') and "upstream_stream_broken" in events[-1]
    assert "[DONE]" not in events
    [row] = timeout_stack.ledger.wait_rows(team_id, 1)
    assert row["status"] == "stream_broken" and row["usage_source"] == "tiktoken"
    assert 0 < row["completion_tokens"] < 20 and row["cost_nano"] > 0
    standing = _released(timeout_stack, team_id)
    record_figures(fault="stream stalled past the upstream timeout", requests=1, during=1, ledger_rows=1,
                   delivered_chunks=len(events) - 1, differences=abs(standing["spent_nano"] - row["cost_nano"]))
    assert standing["spent_nano"] == row["cost_nano"]


@pytest.mark.parametrize("fault", ["429", "quota", "503"])
def test_upstream_refusals_are_relayed_unchanged(timeout_stack: Stack, simulator: Proc, fault: str,
                                                 record_figures: Recorder) -> None:
    team_id, key = _team(timeout_stack)
    direct = httpx.post(f"{simulator.base_url}/chat/completions", timeout=10,
                        json={"model": MODEL, "messages": MESSAGES},
                        headers={"Authorization": "Bearer sk-test", "x-sim-error": fault})
    resp = _chat(timeout_stack, key, {"x-sim-error": fault})
    assert resp.status_code == direct.status_code
    assert resp.json() == direct.json(), "the upstream's error body was not relayed unchanged"
    if "retry-after" in direct.headers:
        assert resp.headers["retry-after"] == direct.headers["retry-after"]
    [row] = timeout_stack.ledger.wait_rows(team_id, 1)
    assert (row["status"], row["http_status"], row["cost_nano"]) == ("upstream_error", direct.status_code, 0)
    standing = _released(timeout_stack, team_id)
    record_figures(fault=f"upstream answers {fault}", requests=1, during=1, ledger_rows=1,
                   differences=standing["spent_nano"])
    assert standing["spent_nano"] == 0


def test_the_sdk_sees_a_rate_limit_error_with_retry_after(timeout_stack: Stack) -> None:
    _, key = _team(timeout_stack)
    client = openai.OpenAI(base_url=timeout_stack.v1, api_key=key, max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, extra_headers={"x-sim-error": "429"})
    assert caught.value.response.headers["retry-after"].isdigit()
    assert caught.value.code == "rate_limit_exceeded"


def test_an_unreachable_upstream_is_a_502_ledgered_at_zero(unreachable_stack: Stack, record_figures: Recorder) -> None:
    team_id, key = _team(unreachable_stack)
    resp = _chat(unreachable_stack, key, {})
    assert resp.status_code == 502
    error = resp.json()["error"]
    assert error["code"] == "upstream_error" and error["type"] == "server_error"
    assert "could not be reached" in error["message"]
    [row] = unreachable_stack.ledger.wait_rows(team_id, 1)
    assert (row["status"], row["http_status"], row["cost_nano"]) == ("upstream_error", 502, 0)
    standing = _released(unreachable_stack, team_id)
    record_figures(fault="upstream unreachable", requests=1, during=1, ledger_rows=1,
                   differences=standing["spent_nano"])
    assert standing["spent_nano"] == 0


def test_a_whole_answer_cut_in_half_is_a_502_and_costs_nothing(timeout_stack: Stack) -> None:
    """x-sim-break-after on a non-stream answer sends half the body, then drops the connection."""
    team_id, key = _team(timeout_stack)
    resp = _chat(timeout_stack, key, {"x-sim-break-after": "0"})
    assert resp.status_code == 502 and resp.json()["error"]["code"] == "upstream_error"
    [row] = timeout_stack.ledger.wait_rows(team_id, 1)
    assert row["cost_nano"] == 0 and row["status"] == "upstream_error"
    assert _released(timeout_stack, team_id)["spent_nano"] == 0


def test_usage_cost_helper_prices_like_the_ledger() -> None:
    """The client-side price used by the fault tests is the catalog's: 10 + 5 tokens of gpt-4o-mini."""
    assert usage_cost({"prompt_tokens": 10, "completion_tokens": 5}) == 10 * 150 + 5 * 600
