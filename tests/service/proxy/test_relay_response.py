"""RelayResponse: a stream sent from the request's task, cut short when the client leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from service.proxy.relay_response import RelayResponse


class Client:
    """The server side of one connection: what was sent, and a disconnect on demand."""

    def __init__(self, block_after: int | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gone = asyncio.Event()
        self.block_after = block_after  # messages sent before the socket's buffer fills up

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if self.block_after is not None and len(self.sent) >= self.block_after:
            await asyncio.Event().wait()  # never drains
        self.sent.append(message)

    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.sent if m["type"] == "http.response.body"]


def relay(log: list[str], chunks: int, pause: asyncio.Event | None = None) -> AsyncGenerator[bytes, None]:
    async def gen() -> AsyncGenerator[bytes, None]:
        try:
            for i in range(chunks):
                if pause is not None and i == 2:
                    await pause.wait()  # waiting for the upstream's next chunk
                yield b"data: %d\n\n" % i
        except (asyncio.CancelledError, GeneratorExit) as exc:
            log.append(type(exc).__name__)
            raise
        finally:
            log.append("settled")

    return gen()


SCOPE = {"type": "http", "method": "POST", "path": "/v1/chat/completions"}


async def test_every_chunk_goes_out_in_order_after_the_head_and_nothing_is_left_running() -> None:
    client, log = Client(), []
    before = asyncio.all_tasks()
    response = RelayResponse(relay(log, 3), status_code=200, headers={"content-type": "text/event-stream"})
    await response(SCOPE, client.receive, client.send)
    assert client.sent[0]["type"] == "http.response.start" and client.sent[0]["status"] == 200
    assert (b"content-type", b"text/event-stream") in client.sent[0]["headers"]
    assert client.bodies() == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n", b""]
    assert client.sent[-1]["more_body"] is False
    assert log == ["settled"]
    await asyncio.sleep(0)  # the watcher's cancellation lands
    assert not asyncio.all_tasks() - before  # the watcher is gone


async def test_a_client_that_leaves_while_the_upstream_is_quiet_ends_the_relay_cleanly() -> None:
    client, log, upstream = Client(), [], asyncio.Event()
    response = RelayResponse(relay(log, 10, pause=upstream), status_code=200, headers={})
    serving = asyncio.ensure_future(response(SCOPE, client.receive, client.send))
    await asyncio.sleep(0.01)
    assert client.bodies() == [b"data: 0\n\n", b"data: 1\n\n"]
    client.gone.set()
    await asyncio.wait_for(serving, 1)  # returns normally: a client leaving is no error
    assert serving.exception() is None and not serving.cancelled()
    assert log == ["CancelledError", "settled"]
    assert client.bodies() == [b"data: 0\n\n", b"data: 1\n\n"]


async def test_a_client_that_leaves_during_a_blocked_send_gets_the_relay_closed_at_once() -> None:
    client, log = Client(block_after=3), []  # the head and two chunks, then a full buffer
    response = RelayResponse(relay(log, 10), status_code=200, headers={})
    serving = asyncio.ensure_future(response(SCOPE, client.receive, client.send))
    await asyncio.sleep(0.01)
    assert log == []  # the relay waits at its third chunk, unsent
    client.gone.set()
    await asyncio.wait_for(serving, 1)
    assert log == ["GeneratorExit", "settled"]  # closed by the response, not left to the collector


async def test_a_cancellation_that_is_not_the_client_leaving_is_passed_on() -> None:
    client, log, upstream = Client(), [], asyncio.Event()
    response = RelayResponse(relay(log, 10, pause=upstream), status_code=200, headers={})
    serving = asyncio.ensure_future(response(SCOPE, client.receive, client.send))
    await asyncio.sleep(0.01)
    serving.cancel()  # a server shutting down
    with pytest.raises(asyncio.CancelledError):
        await serving
    assert log == ["CancelledError", "settled"]


async def test_a_relay_whose_head_could_not_be_sent_is_handed_to_on_unstarted_once() -> None:
    log: list[str] = []
    unstarted: list[str] = []

    async def refuse(message: dict[str, Any]) -> None:
        raise OSError("the socket is gone")

    response = RelayResponse(
        relay(log, 3), status_code=200, headers={}, on_unstarted=lambda: unstarted.append("closed and settled")
    )
    with pytest.raises(OSError):
        await response(SCOPE, Client().receive, refuse)
    assert unstarted == ["closed and settled"]  # the relay's own finally never ran
    assert log == []

    client, log2, unstarted2 = Client(), [], []
    response = RelayResponse(relay(log2, 2), status_code=200, headers={}, on_unstarted=lambda: unstarted2.append("x"))
    await response(SCOPE, client.receive, client.send)
    assert log2 == ["settled"] and unstarted2 == []  # a relay that ran settles itself, once
