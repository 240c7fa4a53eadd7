"""Steady client load against a Farebox, counted by the client itself.

Worker threads send chat completions (some streamed) one after another and record what each
call returned: its status, the request id Farebox gave it, and what its usage costs at the
published rates. Fault tests compare these, the client's own figures, with the ledger.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

import httpx
import orjson

from pricing import Usage, price, resolve_model

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Say something about ledgers."}]


@dataclass(frozen=True, slots=True)
class Call:
    """One request as the client saw it."""

    started: float
    finished: float
    stream: bool
    status: int  # HTTP status; 0 when no answer came (connection refused or dropped)
    request_id: str | None
    code: str | None  # the OpenAI error code of a refusal
    complete: bool  # a whole answer: a JSON body, or a stream up to [DONE] with no error event
    cost_nano: int  # the answer's usage at the published rates (0 unless complete)

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.complete


def usage_cost(usage: dict, model: str = MODEL) -> int:
    rates = resolve_model(model).rates(datetime.now(timezone.utc))
    assert rates is not None
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return price(
        Usage(prompt_tokens=usage["prompt_tokens"], cached_tokens=cached, completion_tokens=usage["completion_tokens"]),
        rates,
    ).total_nano


def one_call(
    client: httpx.Client, base_url: str, key: str, *, stream: bool, headers: dict[str, str] | None = None,
    max_tokens: int = 12, on_first_chunk: Callable[[], object] | None = None,
) -> Call:
    """Send one chat completion and read the whole answer."""
    body: dict = {"model": MODEL, "messages": MESSAGES, "max_tokens": max_tokens}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    send_headers = {"Authorization": f"Bearer {key}", **(headers or {})}
    started = time.monotonic()
    status, request_id, code, complete, cost = 0, None, None, False, 0
    try:
        with client.stream("POST", f"{base_url}/v1/chat/completions", json=body, headers=send_headers) as resp:
            status = resp.status_code
            request_id = resp.headers.get("x-farebox-request-id")
            if status != 200:
                resp.read()
                code = _error_code(resp.content)
            elif stream:
                complete, cost = _read_stream(resp.iter_lines(), on_first_chunk)
            else:
                resp.read()
                answer = orjson.loads(resp.content)
                complete, cost = True, usage_cost(answer["usage"])
    except (httpx.HTTPError, orjson.JSONDecodeError):
        complete = False
    return Call(started, time.monotonic(), stream, status, request_id, code, complete, cost if complete else 0)


def _error_code(content: bytes) -> str | None:
    try:
        return orjson.loads(content)["error"]["code"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "not-openai-shaped"


def _read_stream(lines: Iterable[str], on_first_chunk: Callable[[], object] | None = None) -> tuple[bool, int]:
    cost, done, failed = 0, False, False
    for line in lines:
        if not line.startswith("data: "):
            continue
        if on_first_chunk is not None:
            on_first_chunk()
            on_first_chunk = None
        data = line[6:]
        if data == "[DONE]":
            done = True
            continue
        chunk = orjson.loads(data)
        if "error" in chunk:
            failed = True
        elif chunk.get("usage"):
            cost = usage_cost(chunk["usage"])
    return done and not failed and cost > 0, cost


class LoadLoop:
    """`workers` threads calling one after another until stop(); every `stream_every`-th call streams."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        workers: int = 4,
        stream_every: int = 3,
        headers: dict[str, str] | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.base_url = base_url
        self.key = key
        self.workers = workers
        self.stream_every = stream_every
        self.headers = headers or {"x-sim-latency-ms": "10"}
        self.timeout_s = timeout_s
        self._calls: list[Call] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> LoadLoop:
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, args=(index,), daemon=True, name=f"load-{index}")
            thread.start()
            self._threads.append(thread)
        return self

    def _work(self, index: int) -> None:
        n = 0
        # A fresh connection after an error: a dead keep-alive must not fail the next call too.
        client = httpx.Client(timeout=self.timeout_s)
        while not self._stop.is_set():
            n += 1
            stream = self.stream_every > 0 and (n + index) % self.stream_every == 0
            call = one_call(client, self.base_url, self.key, stream=stream, headers=self.headers)
            with self._lock:
                self._calls.append(call)
            if call.status == 0:
                client.close()
                client = httpx.Client(timeout=self.timeout_s)
                time.sleep(0.2)  # nothing answers; do not spin
        client.close()

    def stop(self) -> list[Call]:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout_s + 5)
        return self.calls

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def count(self, predicate=lambda c: c.ok) -> int:  # type: ignore[no-untyped-def]
        with self._lock:
            return sum(1 for c in self._calls if predicate(c))

    def wait_for(self, n: int, timeout_s: float = 30.0) -> None:
        """Poll until at least n successful calls have been seen."""
        deadline = time.monotonic() + timeout_s
        while self.count() < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.count()} of {n} calls succeeded in {timeout_s} s")
            time.sleep(0.05)


def during(calls: list[Call], t0: float, t1: float) -> list[Call]:
    """Calls that started inside [t0, t1)."""
    return [c for c in calls if t0 <= c.started < t1]
