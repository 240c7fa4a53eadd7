"""SettlingResponse: the answer leaves while its settle runs, and the request ends after the settle."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.proxy.inference import SettlingResponse

SCOPE = {"type": "http", "method": "POST", "path": "/v1/chat/completions"}


async def receive() -> dict[str, Any]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def settle(redis_answers: asyncio.Event, log: list[str]) -> asyncio.Task[None]:
    async def run() -> None:
        log.append("settle sent")
        await redis_answers.wait()
        log.append("settled")

    return asyncio.create_task(run())


async def test_the_answer_is_sent_before_the_settle_lands_and_the_request_ends_after_it() -> None:
    log: list[str] = []
    sent: list[dict[str, Any]] = []
    redis_answers = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body":
            log.append("answer sent")

    settling = settle(redis_answers, log)
    await asyncio.sleep(0)  # as the hot path does: the settle's command goes out first
    call = asyncio.create_task(SettlingResponse(b'{"ok":1}', status_code=200, headers={}, settling=settling)(SCOPE, receive, send))
    await asyncio.sleep(0.05)
    assert log == ["settle sent", "answer sent"]
    assert sent[-1]["body"] == b'{"ok":1}' and not call.done()  # still waiting for Redis
    redis_answers.set()
    await asyncio.wait_for(call, 1)
    assert log == ["settle sent", "answer sent", "settled"]


async def test_cancelling_the_request_does_not_cancel_its_settle() -> None:
    log: list[str] = []
    redis_answers = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        pass

    settling = settle(redis_answers, log)
    call = asyncio.create_task(SettlingResponse(b"{}", status_code=200, headers={}, settling=settling)(SCOPE, receive, send))
    await asyncio.sleep(0.05)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert not settling.cancelled()
    redis_answers.set()
    await asyncio.wait_for(settling, 1)
    assert log[-1] == "settled"


async def test_a_settle_that_fails_surfaces_after_the_answer() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def broken() -> None:
        raise RuntimeError("store exploded")

    response = SettlingResponse(b"{}", status_code=200, headers={}, settling=asyncio.create_task(broken()))
    with pytest.raises(RuntimeError, match="store exploded"):
        await response(SCOPE, receive, send)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
