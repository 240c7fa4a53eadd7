"""The request path's own Redis connections: packing, dead connections, cancelled calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as redis
from hypothesis import given
from hypothesis import strategies as st
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.budgets.redis_lanes import pack
from service.budgets.redis_store import RedisBudgetStore, RedisBudgetStoreUnavailable
from tests.service.budgets.builders import charge, counter, reservation

args = st.lists(
    st.one_of(st.binary(max_size=40), st.text(max_size=40), st.integers(-(2**63), 2**63 - 1)),
    max_size=12,
)


@given(args)
def test_pack_is_byte_for_byte_what_redis_py_sends(values: list[Any]) -> None:
    # (redis-py splits its first argument, the command's name, at spaces: a name is given here)
    assert pack(["EVALSHA", *values]) == b"".join(redis.Connection().pack_command("EVALSHA", *values))


@pytest.mark.parametrize("value", [1.5, True, None, ["x"]])
def test_pack_refuses_what_it_would_have_to_guess_at(value: Any) -> None:
    with pytest.raises(TypeError):
        pack(["SET", "k", value])


@pytest.fixture
async def store(redis_client: Any, redis_namespace: str) -> AsyncIterator[RedisBudgetStore]:
    store = RedisBudgetStore(redis_client, redis_namespace)
    yield store
    await store.close()


async def _client_addr(store: RedisBudgetStore) -> str:
    conn = store._lanes._idle[-1]
    host, port = conn._writer.get_extra_info("sockname")[:2]
    return f"{host}:{port}"


@pytest.mark.redis
async def test_a_connection_killed_while_idle_costs_one_retry_not_the_request(
    store: RedisBudgetStore, redis_client: Any
) -> None:
    budget = counter("b1", 10_000)
    first = reservation("r1", 100, budget)
    assert await store.reserve(first) is None
    assert store._lanes.idle == 1
    # What a restarted Redis or an idle timeout leaves: a socket the client still thinks open.
    assert await redis_client.execute_command("CLIENT", "KILL", "ADDR", await _client_addr(store))

    second = reservation("r2", 200, budget)
    assert await store.reserve(second) is None
    assert (await store.settle(second, charge(second, 150))).settled
    [state] = await store.standing([budget])
    assert (state.spent_nano, state.reserved_nano) == (150, 100)  # r2 held and charged once
    assert store._lanes.idle == 1


@pytest.mark.redis
async def test_a_call_cancelled_mid_reply_closes_its_connection_and_the_next_reads_its_own_reply(
    redis_url: str, redis_namespace: str, redis_client: Any
) -> None:
    # No socket timeout: with one, the send runs under asyncio.wait_for, which on Python 3.11
    # drops a cancellation that arrives as the send completes (the call then simply finishes).
    # Without it, one turn of the loop leaves the call waiting for its reply, where it is cancelled.
    client = redis.Redis.from_url(redis_url, socket_timeout=None)
    store = RedisBudgetStore(client, redis_namespace)
    budget = counter("b1", 1_000)
    assert await store.reserve(reservation("warm", 1, budget)) is None
    assert store._lanes.idle == 1
    busy = asyncio.ensure_future(store.reserve(reservation("cancelled", 10, budget)))
    await asyncio.sleep(0)  # sent; now waiting for the reply
    busy.cancel()
    with pytest.raises(asyncio.CancelledError):
        await busy
    assert store._lanes.idle == 0  # not handed back with a reply still on its way

    # Over the limit: a connection out of step would hand this call the reply meant for the
    # cancelled one (an accepted reservation) instead of its own denial.
    denial = await store.reserve(reservation("big", 5_000, budget))
    assert denial is not None and denial.requested_nano == 5_000
    assert store._lanes.idle == 1
    await store.close()
    await client.aclose()


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.read(65536):  # takes every command, answers none
        pass
    writer.close()


async def test_a_redis_that_does_not_answer_fails_the_call_once_within_the_socket_timeout() -> None:
    server = await asyncio.start_server(_silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.3, socket_connect_timeout=1)
    store = RedisBudgetStore(client, "fbsilent")
    started = time.monotonic()
    with pytest.raises(RedisBudgetStoreUnavailable) as caught:
        await store.reserve(reservation("r1", 1, counter("b1", 10)))
    elapsed = time.monotonic() - started
    assert isinstance(caught.value.__cause__, RedisTimeoutError)
    assert 0.3 <= elapsed < 0.55  # once: a timeout is not retried the way a dead socket is
    assert store._lanes.idle == 0
    await store.close()
    await client.aclose()
    server.close()
    await server.wait_closed()


async def test_calls_in_flight_are_capped_by_the_pools_max_connections() -> None:
    server = await asyncio.start_server(_silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.3, max_connections=2)
    store = RedisBudgetStore(client, "fbcapped")
    budget = counter("b1", 10)
    waiting = [asyncio.ensure_future(store.reserve(reservation(f"r{i}", 1, budget))) for i in range(2)]
    await asyncio.sleep(0.05)
    assert store._lanes.open == 2
    started = time.monotonic()
    with pytest.raises(RedisBudgetStoreUnavailable, match="Too many connections"):
        await store.reserve(reservation("third", 1, budget))
    assert time.monotonic() - started < 0.1  # refused at once, as redis-py's own pool refuses
    for call in waiting:
        with pytest.raises(RedisBudgetStoreUnavailable):
            await call
    assert store._lanes.open == 0  # the two that timed out were closed and counted out
    await store.close()
    await client.aclose()
    server.close()
    await server.wait_closed()
