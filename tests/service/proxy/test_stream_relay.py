"""never_relayed: a stream whose relay never started is settled on what had arrived of it."""

from __future__ import annotations

import asyncio

from service.proxy.stream_relay import StreamOutcome, never_relayed
from service.proxy.upstream_pool import UpstreamAnswer
from tests.service.proxy.test_upstream_pool import Peer, chunked, serving

EVENTS = [
    b'data: {"id":"c1","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n',
    b'data: {"id":"c1","model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}\n\n',
    b"data: [DONE]\n\n",
]


async def settle_unrelayed(reply: UpstreamAnswer) -> StreamOutcome:
    """never_relayed on reply, and the one outcome it settled."""
    settled: list[StreamOutcome] = []

    async def finish(outcome: StreamOutcome) -> None:
        settled.append(outcome)

    tasks: list[asyncio.Task[None]] = []
    never_relayed(reply, strip_usage_chunk=True, finish=finish, spawn=lambda c: tasks.append(asyncio.ensure_future(c)))
    await asyncio.gather(*tasks)
    [outcome] = settled
    return outcome


async def test_a_stream_never_relayed_is_settled_on_the_usage_that_had_arrived() -> None:
    async def whole_stream(peer: Peer, request: bytes) -> bool:
        await peer.send(chunked(EVENTS))
        return True

    server, pool = await serving(whole_stream)
    reply = await pool.request(pool.head("POST", "/chat/completions", "", [], 2), b"{}")
    await asyncio.sleep(0.05)  # the whole answer arrives while the response cannot begin
    outcome = await settle_unrelayed(reply)
    assert outcome.status == "client_disconnected"
    assert outcome.usage == {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}  # billed in full
    assert outcome.model == "gpt-4o-mini-2024-07-18" and outcome.saw_done
    assert pool.connections == (1, 1)  # read to its end: the connection is reused
    await pool.close()
    await server.stop()


async def test_a_stream_never_relayed_with_nothing_arrived_is_settled_on_nothing() -> None:
    async def silent_after_head(peer: Peer, request: bytes) -> bool:
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        await asyncio.sleep(5)
        return False

    server, pool = await serving(silent_after_head)
    reply = await pool.request(pool.head("POST", "/chat/completions", "", [], 2), b"{}")
    outcome = await settle_unrelayed(reply)
    assert outcome.usage is None and outcome.events == [] and outcome.status == "client_disconnected"
    assert pool.connections == (0, 0)  # cut mid-answer: closed
    await pool.close()
    await server.stop()
