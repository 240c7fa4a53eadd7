"""What only the Redis store must show: round trips, key layout, processes, outages."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as redis
from redis.crc import key_slot

from service.budgets.policy import BudgetRule
from service.budgets.redis_store import RedisBudgetStore, RedisBudgetStoreUnavailable
from service.budgets.retention import COUNTER_GRACE_S, DONE_TTL_S, RESERVATION_GRACE_S
from service.errors import BudgetStoreUnavailable
from tests.service.budgets.builders import TEAM, charge, counter, reservation

pytestmark = pytest.mark.redis
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
async def rstore(redis_client: Any, redis_namespace: str) -> AsyncIterator[RedisBudgetStore]:
    """A Redis store on the shared test client; the fixture deletes the namespace afterwards."""
    yield RedisBudgetStore(redis_client, redis_namespace, claim_idle_s=0.2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CountingConnection(redis.Connection):
    """Records every command packed and every write to the socket (one write per round trip)."""

    commands: list[str] = []
    writes: int = 0

    def pack_command(self, *args: Any) -> list[bytes]:
        type(self).commands.append(str(args[0]).upper())
        return super().pack_command(*args)

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).writes += 1
        if isinstance(command, bytes):  # packed by the store itself (redis_lanes), not pack_command
            type(self).commands.append(command.split(b"\r\n")[2].decode().upper())
        await super().send_packed_command(command, check_health)


async def test_reserve_and_settle_are_one_round_trip_each(
    redis_url: str, redis_namespace: str, redis_client: Any
) -> None:
    pool = redis.ConnectionPool.from_url(
        redis_url, connection_class=CountingConnection, max_connections=1
    )
    client = redis.Redis(connection_pool=pool)
    store = RedisBudgetStore(client, redis_namespace)
    budgets = (counter("a", 10_000), counter("b", 20_000), counter("c", 30_000))
    warm = reservation("warm", 1, *budgets)
    await store.reserve(warm)  # connects and loads the scripts if Redis lacks them
    await store.settle(warm, charge(warm, 1))
    await store.standing(list(budgets))  # connects the client's pool (reserve and settle have their own)

    res = reservation("r1", 500, *budgets)
    CountingConnection.commands, CountingConnection.writes = [], 0
    assert await store.reserve(res) is None
    assert (CountingConnection.writes, CountingConnection.commands) == (1, ["EVALSHA"])

    CountingConnection.commands, CountingConnection.writes = [], 0
    assert (await store.settle(res, charge(res, 400))).settled
    assert (CountingConnection.writes, CountingConnection.commands) == (1, ["EVALSHA"])

    CountingConnection.commands, CountingConnection.writes = [], 0
    assert [s.spent_nano for s in await store.standing(list(budgets))] == [401] * 3
    assert CountingConnection.writes == 1  # one pipeline
    await client.aclose()


async def test_reading_a_thousand_idle_teams_takes_a_few_calls_not_two_per_team(
    redis_url: str, redis_namespace: str
) -> None:
    """The writer reads every team's outbox several times a second; idle teams must cost almost nothing.

    New entries come from one XREADGROUP per 200 streams (Redis answers only for streams with
    entries); abandoned ones are looked for once per claim interval, not on every read.
    """
    pool = redis.ConnectionPool.from_url(redis_url, connection_class=CountingConnection, max_connections=1)
    client = redis.Redis(connection_pool=pool)
    store = RedisBudgetStore(client, redis_namespace, claim_idle_s=8)  # pending scanned every 2 s
    teams = [f"team{i:04d}" for i in range(1000)]
    busy = {teams[7]: 3, teams[500]: 1, teams[999]: 2}
    sent = {}
    for team, n in busy.items():
        for i in range(n):
            event = charge(reservation(f"{team}-r{i}", 1, counter("c", 10, team_id=team), team_id=team), 1)
            await client.xadd(store.outbox_key(team), {"e": event.to_bytes()})
            sent[event.request_id] = team
    try:
        first = await store.read_outbox(teams, 10)  # creates the groups, scans every team once
        assert {e.event.request_id: e.team_id for e in first} == sent

        CountingConnection.commands, CountingConnection.writes = [], 0
        assert await store.read_outbox(teams, 10) == []
        # 1000 teams: 5 calls of XREADGROUP over 200 streams each, no XAUTOCLAIM within the interval.
        assert CountingConnection.commands == ["XREADGROUP"] * 5
        assert CountingConnection.writes == 5

        # Entries read but never acked (a reader that died) are still claimed after claim_idle_s.
        other = RedisBudgetStore(client, redis_namespace, claim_idle_s=0.3)
        await asyncio.sleep(0.4)
        claimed = await other.read_outbox(teams, 10)
        assert sorted(e.event.request_id for e in claimed) == sorted(sent)
        await other.ack_outbox(claimed)
        assert await store.outbox_backlog(teams) == 0
    finally:
        keys = [key async for key in client.scan_iter(f"{redis_namespace}:*")]
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start : start + 500])
        await client.aclose()


async def test_a_team_keys_share_one_slot_and_expire_sensibly(
    rstore: RedisBudgetStore, redis_client: Any, redis_namespace: str
) -> None:
    now = datetime.now(timezone.utc)
    daily = BudgetRule(id="daily", team_id=TEAM, limit_nano=10_000, period="daily").counter(now)
    total = counter("total", 10_000)
    res = reservation("r1", 700, daily, total, ttl_s=60)
    await rstore.reserve(res)

    prefix = f"{redis_namespace}:{{t:{TEAM}}}"
    record = f"{prefix}:r:r1"
    assert await redis_client.hgetall(record) == {
        b"amount": b"700",
        b"counters": f"{rstore.counter_key(daily)}\n{rstore.counter_key(total)}".encode(),
        b"expiry": (await redis_client.hget(record, "expiry")),
    }
    expiry_ms = int(await redis_client.zscore(f"{prefix}:rx", "r1"))
    assert abs(expiry_ms - (time.time() + 60) * 1000) < 5_000
    record_ttl = 60 + RESERVATION_GRACE_S
    assert record_ttl - 5 <= await redis_client.ttl(record) <= record_ttl
    expected_ttl = daily.period_end.timestamp() + COUNTER_GRACE_S - time.time()
    assert abs(await redis_client.ttl(rstore.counter_key(daily)) - expected_ttl) < 5
    assert await redis_client.ttl(rstore.counter_key(total)) == -1

    await rstore.settle(res, charge(res, 650))
    assert not await redis_client.exists(record)
    assert await redis_client.zcard(f"{prefix}:rx") == 0
    assert DONE_TTL_S - 5 <= await redis_client.ttl(f"{prefix}:done:r1") <= DONE_TTL_S
    assert await redis_client.xlen(f"{prefix}:outbox") == 1

    entries = await rstore.read_outbox([TEAM], 10)
    groups = await redis_client.xinfo_groups(f"{prefix}:outbox")
    assert [g["name"] for g in groups] == [b"ledger"]
    await rstore.ack_outbox(entries)
    assert await redis_client.xlen(f"{prefix}:outbox") == 0  # acked entries are deleted

    keys = [k async for k in redis_client.scan_iter(match=f"{redis_namespace}*")]
    assert len(keys) == 4  # two counters, the done marker, the outbox
    assert len({key_slot(k) for k in keys}) == 1


async def test_an_abandoned_outbox_entry_goes_to_another_reader(
    rstore: RedisBudgetStore, redis_client: Any, redis_namespace: str
) -> None:
    other = RedisBudgetStore(redis_client, redis_namespace, claim_idle_s=0.2)
    assert other.consumer != rstore.consumer
    res = reservation("r1", 0)
    await rstore.settle(res, charge(res, 42))
    taken = await rstore.read_outbox([TEAM], 10)  # this reader then "dies" without acking
    assert [e.event.cost_nano for e in taken] == [42]
    assert await other.read_outbox([TEAM], 10) == []

    deadline = time.monotonic() + 5
    while not (claimed := await other.read_outbox([TEAM], 10)):
        assert time.monotonic() < deadline, "the abandoned entry was never claimed"
        await asyncio.sleep(0.05)
    assert [(e.entry_id, e.event) for e in claimed] == [(taken[0].entry_id, taken[0].event)]
    await other.ack_outbox(claimed)
    await asyncio.sleep(0.3)
    assert await rstore.read_outbox([TEAM], 10) == []


async def test_two_processes_never_overspend(
    redis_url: str, redis_namespace: str, rstore: RedisBudgetStore, redis_client: Any
) -> None:
    cost, fits, per_process = 1_000, 10, 100  # 20 * fits attempts in all
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.service.budgets.reserve_worker",
            redis_url,
            redis_namespace,
            f"p{n}-",
            str(per_process),
            str(cost),
            str(cost * fits),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
        )
        for n in range(2)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 20)).strip() == b"ready"
    await redis_client.set(f"{redis_namespace}:go", 1)
    held: list[str] = []
    for proc in procs:
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0
        held += orjson.loads(out.strip().splitlines()[-1])

    assert len(held) == fits
    budget = counter(limit_nano=cost * fits)
    assert [(s.spent_nano, s.reserved_nano) for s in await rstore.standing([budget])] == [
        (0, cost * fits)
    ]
    for request_id in held:
        res = reservation(request_id, cost, budget)
        assert (await rstore.settle(res, charge(res, cost))).settled
    assert [(s.spent_nano, s.reserved_nano) for s in await rstore.standing([budget])] == [
        (cost * fits, 0)
    ]


async def test_an_unreachable_redis_is_a_typed_503() -> None:
    store = RedisBudgetStore.from_url(f"redis://127.0.0.1:{free_port()}/0", "fbt-down")
    res = reservation("r1", 1, counter())
    started = time.monotonic()
    calls = [
        store.ping(),
        store.reserve(res),
        store.settle(res, charge(res, 1)),
        store.standing([counter()]),
        store.reap_expired([TEAM]),
        store.read_outbox([TEAM], 10),
    ]
    for call in calls:
        with pytest.raises(BudgetStoreUnavailable) as caught:
            await call
        assert isinstance(caught.value, RedisBudgetStoreUnavailable)
        assert caught.value.status == 503 and caught.value.code == "budget_store_unavailable"
    assert time.monotonic() - started < 10
    await store.close()


@pytest.fixture
def private_redis() -> Iterator[Any]:
    """A throwaway redis-server this test may stop and restart (never the shared one)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]

    class Server:
        url = f"redis://127.0.0.1:{port}/0"
        proc: subprocess.Popen[bytes] | None = None

        def start(self) -> None:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    return
                except OSError:
                    assert time.monotonic() < deadline, "redis-server did not start"
                    time.sleep(0.01)

        def stop(self) -> None:
            if self.proc is not None:
                self.proc.terminate()
                self.proc.wait(10)
                self.proc = None

    server = Server()
    server.start()
    yield server
    server.stop()


async def test_the_store_survives_a_redis_restart(private_redis: Any) -> None:
    store = RedisBudgetStore.from_url(private_redis.url, "fb")
    budget = counter(limit_nano=1_000)
    first = reservation("r1", 300, budget)
    assert await store.reserve(first) is None
    await store.settle(first, charge(first, 300))
    assert len(await store.read_outbox([TEAM], 10)) == 1  # the reader now knows the group

    private_redis.stop()
    with pytest.raises(BudgetStoreUnavailable):
        await store.reserve(reservation("r2", 300, budget))
    private_redis.start()

    # A fresh Redis knows neither the scripts nor the outbox group: both come back by themselves.
    second = reservation("r3", 300, budget)
    assert await store.reserve(second) is None
    assert (await store.settle(second, charge(second, 250))).settled
    assert [e.event.request_id for e in await store.read_outbox([TEAM], 10)] == ["r3"]
    assert [s.spent_nano for s in await store.standing([budget])] == [250]
    await store.close()


async def test_readers_long_gone_are_forgotten_and_nothing_pending_is_lost(
    rstore: RedisBudgetStore, redis_client: Any, redis_namespace: str
) -> None:
    key = rstore.outbox_key(TEAM)
    gone, holding = (RedisBudgetStore(redis_client, redis_namespace, claim_idle_s=60) for _ in range(2))
    read = {}
    for i, reader in enumerate((gone, holding)):
        res = reservation(f"r{i}", 0)
        await rstore.settle(res, charge(res, 10 + i))
        read[reader.consumer] = await reader.read_outbox([TEAM], 1)
    await gone.ack_outbox(read[gone.consumer])  # `gone` wrote its entry and left; `holding` died holding one

    await asyncio.sleep(0.05)
    assert await rstore.prune_consumers([TEAM], idle_s=0.01) == 1  # gone: idle and empty
    names = {c["name"].decode() for c in await redis_client.xinfo_consumers(key, "ledger")}
    assert gone.consumer not in names and holding.consumer in names  # its pending entry stays owned
    assert (await redis_client.xpending(key, "ledger"))["pending"] == 1
    assert await rstore.prune_consumers([TEAM, "team-without-outbox"], idle_s=3600) == 0
