"""Bad input gets a clear 4xx in OpenAI's error shape, is never forwarded, and charges nothing.

tests/service/proxy covers unparseable JSON, a missing model or messages, and negative or
absurd max_tokens; this covers wrong types, oversized bodies and heads, odd encodings, unknown
models and oversized admin bodies.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Stack, make_stack
from tests.harness import FareboxConfig, Proc
from tests.reliability.results import Recorder

pytestmark = pytest.mark.timeout(120)

MAX_BODY = 64 * 1024
METERED = ("POST /v1/chat/completions", "POST /v1/completions", "POST /v1/embeddings")


@pytest.fixture(scope="module")
def small_stack(simulator: Proc, log_dir: Path, pg_url: str, redis_url: str) -> Iterator[Stack]:
    config = FareboxConfig(pg_url, simulator.base_url, redis_url, f"fbt{uuid.uuid4().hex[:10]}",
                           extra_env={"FAREBOX_MAX_BODY_BYTES": str(MAX_BODY)})
    stack = make_stack("postgres", config, log_dir)
    yield stack
    stack.farebox.stop()


@pytest.fixture
def team(small_stack: Stack) -> tuple[str, str]:
    team, key = small_stack.admin.team_with_key()
    small_stack.admin.budget(team["id"], "5", "daily")
    return team["id"], key


def _forwarded(simulator: Proc) -> int:
    stats = httpx.get(f"{simulator.base_url}/_sim/stats").json()["by_endpoint"]
    return sum(stats.get(name, 0) for name in METERED)


def _assert_openai_error(resp: httpx.Response, status: int, *, param: str | None = None, fragment: str = "") -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    error = body["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    if param is not None:
        assert error["param"] == param, error
    assert fragment in error["message"], error
    return error


def _nothing_charged(stack: Stack, team_id: str) -> None:
    assert stack.ledger.rows(team_id) == []
    [standing] = stack.admin.standing(team_id)
    assert standing["spent_nano"] == 0 and standing["reserved_nano"] == 0


def _post(stack: Stack, key: str, path: str, content: bytes, **headers: str) -> httpx.Response:
    return httpx.post(f"{stack.v1}{path}", content=content, timeout=30,
                      headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers})


CHAT = b'"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]'

WRONG = [
    ("stream as a string", b'{' + CHAT + b', "stream": "yes"}', "stream", "boolean"),
    ("n as a string", b'{' + CHAT + b', "n": "2"}', "n", "integer"),
    ("n zero", b'{' + CHAT + b', "n": 0}', "n", "between 1 and 128"),
    ("n huge", b'{' + CHAT + b', "n": 100000}', "n", "between 1 and 128"),
    ("max_tokens as a string", b'{' + CHAT + b', "max_tokens": "10"}', "max_tokens", "integer"),
    ("max_tokens as a float", b'{' + CHAT + b', "max_tokens": 10.5}', "max_tokens", "integer"),
    ("max_tokens as a boolean", b'{' + CHAT + b', "max_tokens": true}', "max_tokens", "integer"),
    ("max_tokens beyond 64 bits", b'{' + CHAT + b', "max_tokens": 99999999999999999999999}', "max_tokens", ""),
    ("max_completion_tokens negative", b'{' + CHAT + b', "max_completion_tokens": -1}', "max_completion_tokens", "at least 1"),
    ("messages as a string", b'{"model": "gpt-4o-mini", "messages": "hello"}', "messages", "array"),
    ("a message that is a number", b'{"model": "gpt-4o-mini", "messages": [1]}', "messages", "object"),
    ("model as a number", b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', "model", "model"),
    ("stream_options as a string", b'{' + CHAT + b', "stream": true, "stream_options": "usage"}', "stream_options", "object"),
    ("a JSON array", b'[{"model": "gpt-4o-mini"}]', None, "JSON object"),
    ("a JSON string", b'"hello"', None, "JSON object"),
    ("an empty body", b"", None, "empty"),
    ("NaN", b'{' + CHAT + b', "temperature": NaN}', None, "not valid JSON"),
    ("an infinite number", b'{' + CHAT + b', "temperature": 1e400}', None, "not valid JSON"),
    ("nesting 5000 deep", b"[" * 5000 + b"]" * 5000, None, "not valid JSON"),
    ("invalid UTF-8 inside a string", b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\xc3\x28"}]}', None, "not valid JSON"),
    ("a lone surrogate escape", b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\\ud800"}]}', None, "not valid JSON"),
    ("UTF-16", '{"model": "gpt-4o-mini"}'.encode("utf-16"), None, "not valid JSON"),
]


@pytest.mark.parametrize(("name", "body", "param", "fragment"), WRONG, ids=[w[0] for w in WRONG])
def test_wrong_types_and_encodings_get_a_400(
    small_stack: Stack, simulator: Proc, team: tuple[str, str], name: str, body: bytes, param: str | None,
    fragment: str, record_figures: Recorder,
) -> None:
    team_id, key = team
    before = _forwarded(simulator)
    resp = _post(small_stack, key, "/chat/completions", body)
    _assert_openai_error(resp, 400, param=param, fragment=fragment)
    assert resp.headers["x-farebox-request-id"]
    assert _forwarded(simulator) == before, "a refused request reached the upstream"
    _nothing_charged(small_stack, team_id)
    record_figures(fault=f"bad input: {name}", requests=1, during=1, ledger_rows=0, status=400, differences=0)


@pytest.mark.parametrize(("path", "body"), [
    ("/completions", b'{"model": "davinci-002", "prompt": 5}'),
    ("/completions", b'{"model": "davinci-002", "prompt": "x", "best_of": 1000}'),
    ("/embeddings", b'{"model": "text-embedding-3-small", "input": {"a": 1}}'),
    ("/embeddings", b'{"model": "text-embedding-3-small"}'),
])
def test_wrong_types_on_completions_and_embeddings(small_stack: Stack, simulator: Proc, team: tuple[str, str],
                                                   path: str, body: bytes) -> None:
    team_id, key = team
    before = _forwarded(simulator)
    _assert_openai_error(_post(small_stack, key, path, body), 400)
    assert _forwarded(simulator) == before
    _nothing_charged(small_stack, team_id)


def _chat_of_size(size: int) -> bytes:
    head = b'{"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "'
    tail = b'"}]}'
    return head + b"a" * (size - len(head) - len(tail)) + tail


def test_a_body_over_the_limit_is_a_413_declared_or_streamed(
    small_stack: Stack, simulator: Proc, team: tuple[str, str], record_figures: Recorder,
) -> None:
    team_id, key = team
    before = _forwarded(simulator)
    declared = _post(small_stack, key, "/chat/completions", _chat_of_size(MAX_BODY + 1))
    _assert_openai_error(declared, 413, fragment=str(MAX_BODY))
    assert declared.json()["error"]["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is counted as bytes arrive
        body = _chat_of_size(4 * MAX_BODY)
        for i in range(0, len(body), 8192):
            yield body[i:i + 8192]

    streamed = httpx.post(f"{small_stack.v1}/chat/completions", content=chunks(), timeout=30,
                          headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    _assert_openai_error(streamed, 413, fragment=str(MAX_BODY))
    assert _forwarded(simulator) == before
    _nothing_charged(small_stack, team_id)
    # Exactly at the limit is fine: the limit is not off by one.
    assert _post(small_stack, key, "/chat/completions", _chat_of_size(MAX_BODY)).status_code == 200
    record_figures(fault="body over FAREBOX_MAX_BODY_BYTES (declared and chunked)", requests=3, during=2,
                   ledger_rows=len(small_stack.ledger.rows(team_id)), status=413, differences=0)


def test_very_long_headers_are_a_431_never_a_5xx(
    small_stack: Stack, simulator: Proc, team: tuple[str, str], record_figures: Recorder,
) -> None:
    team_id, key = team
    before = _forwarded(simulator)
    body = b'{' + CHAT + b'}'
    one_long = _post(small_stack, key, "/chat/completions", body, **{"X-Junk": "a" * 100_000})
    _assert_openai_error(one_long, 431)
    many = httpx.post(f"{small_stack.v1}/chat/completions", content=body, timeout=30, headers={
        "Authorization": f"Bearer {key}", **{f"x-h{i}": "v" * 20 for i in range(4000)}})
    _assert_openai_error(many, 431)
    long_key = _post(small_stack, "fbk_" + "k" * 200_000, "/chat/completions", body)
    _assert_openai_error(long_key, 431)
    # A request line longer than httptools takes is refused by uvicorn itself: a plain 400, not a 5xx.
    port = int(small_stack.farebox.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"GET /v1/models?" + b"q" * 2_000_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        status_line = raw.recv(64).split(b"\r\n")[0]
    assert status_line.startswith(b"HTTP/1.1 4"), status_line
    # Headers the SDKs send stay well inside the limit.
    assert _post(small_stack, key, "/chat/completions", body, **{"X-Junk": "a" * 8_000}).status_code == 200
    assert _forwarded(simulator) == before + 1
    assert len(small_stack.ledger.wait_rows(team_id, 1)) == 1
    record_figures(fault="very long headers and request line", requests=5, during=4, ledger_rows=1,
                   status="431 / 400 (uvicorn)", differences=0)


def test_an_unknown_model_is_the_upstreams_404_relayed_and_costs_nothing(
    small_stack: Stack, team: tuple[str, str], record_figures: Recorder,
) -> None:
    """Farebox cannot know every model, so the upstream judges; the answer is relayed and costs 0."""
    team_id, key = team
    resp = _post(small_stack, key, "/chat/completions", b'{"model": "gpt-9-ultra", "messages": [{"role": "user", "content": "x"}]}')
    error = _assert_openai_error(resp, 404)
    assert error["code"] == "model_not_found"
    [row] = small_stack.ledger.wait_rows(team_id, 1)
    assert (row["status"], row["http_status"], row["cost_nano"]) == ("upstream_error", 404, 0)
    [standing] = small_stack.admin.standing(team_id)
    assert standing["spent_nano"] == 0 and standing["reserved_nano"] == 0
    record_figures(fault="unknown model", requests=1, during=1, ledger_rows=1, status=404, differences=0)


def test_an_unregistered_fine_tuned_model_of_another_team_is_a_404_without_forwarding(
    small_stack: Stack, simulator: Proc, team: tuple[str, str],
) -> None:
    team_id, key = team
    other, _ = small_stack.admin.team_with_key()
    model = f"ft:gpt-4o-mini-2024-07-18:acme::{uuid.uuid4().hex[:8]}"
    small_stack.admin.http.post(f"/models/{model}/claim", json={"team_id": other["id"]}).raise_for_status()
    before = _forwarded(simulator)
    resp = _post(small_stack, key, "/chat/completions", b'{"model": "%s", "messages": [{"role": "user", "content": "x"}]}' % model.encode())
    assert _assert_openai_error(resp, 404)["code"] == "model_not_found"
    assert _forwarded(simulator) == before
    _nothing_charged(small_stack, team_id)


def test_admin_bodies_are_capped_before_the_token_is_even_checked(small_stack: Stack, record_figures: Recorder) -> None:
    """FastAPI parses a body before its dependencies run: without the cap an anonymous client could fill memory."""
    def flood() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(64):  # 64 MiB, chunked
            yield b"a" * (1 << 20)
        yield b'"}'

    anonymous = httpx.post(f"{small_stack.farebox.base_url}/admin/teams", content=flood(), timeout=60,
                           headers={"Content-Type": "application/json"})
    _assert_openai_error(anonymous, 413)
    declared = small_stack.admin.http.post("/teams", content=b'{"name": "' + b"a" * (2 << 20) + b'"}',
                                           headers={"Content-Type": "application/json"})
    _assert_openai_error(declared, 413)
    not_json = small_stack.admin.http.post("/teams", content=b"{nope", headers={"Content-Type": "application/json"})
    _assert_openai_error(not_json, 400)
    not_utf8 = small_stack.admin.http.post("/teams", content=b'{"name": "x\xff"}', headers={"Content-Type": "application/json"})
    _assert_openai_error(not_utf8, 400)
    # Found by the fuzzer: a URL the schema allowed but the column could not hold (was a 500).
    long_hook = small_stack.admin.http.post("/teams", json={"name": "hooked", "webhook_url": "https://" + "a" * 1990 + ".com"})
    _assert_openai_error(long_hook, 400, param="webhook_url")
    record_figures(fault="oversized admin bodies (anonymous, chunked 64 MiB; with token, 2 MiB)", requests=2,
                   during=2, ledger_rows=0, status=413, differences=0)


@pytest.mark.parametrize("authorization", ["", "Bearer", "Basic Zm9vOmJhcg==", "fbk_no_scheme", "bearer fbk_unknown", "Bearer sk-an-openai-key"])
def test_malformed_authorization_is_a_401(small_stack: Stack, simulator: Proc, authorization: str) -> None:
    before = _forwarded(simulator)
    headers = {"Authorization": authorization} if authorization else {}
    resp = httpx.post(f"{small_stack.v1}/chat/completions", content=b'{' + CHAT + b'}', headers=headers, timeout=10)
    assert resp.status_code == 401 and resp.json()["error"]["code"] in ("missing_api_key", "invalid_api_key")
    assert _forwarded(simulator) == before
