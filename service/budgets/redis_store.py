"""The budget store on Redis: every reserve and settle is one EVALSHA of one team's keys.

Key layout (the {t:<team>} hash tag keeps a team's keys in one Redis Cluster slot):
  {ns}:{t:<team>}:c:<counter_id>    hash spent, reserved (nano-USD)
  {ns}:{t:<team>}:r:<request_id>    hash amount, counters, expiry: a live reservation
  {ns}:{t:<team>}:rx                zset request_id by expiry (ms), for the reaper
  {ns}:{t:<team>}:done:<request_id> settled marker, makes settle idempotent
  {ns}:{t:<team>}:outbox            stream of settled ChargeEvents, consumer group "ledger"
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.budgets import lua
from service.budgets.redis_lanes import ScriptLanes, pack
from service.budgets.retention import (
    DONE_TTL_S,
    OUTBOX_CLAIM_IDLE_S,
    RESERVATION_GRACE_S,
    counter_expires_at,
)
from service.budgets.store import (
    BudgetCounter,
    CounterSnapshot,
    CounterState,
    Denial,
    OutboxEntry,
    OutboxPosition,
    Reservation,
    SettleResult,
)
from service.budgets.validate import check_charge, check_reservation
from service.errors import BudgetStoreUnavailable
from service.ledger.event import ChargeEvent

T = TypeVar("T")
OUTBOX_GROUP = "ledger"
REAP_BATCH = 1000
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)


class RedisBudgetStoreUnavailable(BudgetStoreUnavailable):
    """Redis did not answer (down, restarting, failing over); the proxy answers 503."""


class _Script:
    """A Lua script called by EVALSHA; reloaded once when Redis forgot it (restart, flush)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, client: redis.Redis, keys: list[str], args: list[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)

    async def on_lane(self, lanes: ScriptLanes, client: redis.Redis, keys: list[str], args: list[Any]) -> Any:
        """The same call on the request path's own connections (service/budgets/redis_lanes.py).

        A connection that failed is retried once on a new one: an idle connection may have died
        with a restarted Redis, and reserve and settle are idempotent on the request id.
        """
        packed = pack(["EVALSHA", self.sha, len(keys), *keys, *args])
        loaded = retried = False
        while True:
            try:
                return await lanes.call(packed)
            except NoScriptError:
                if loaded:
                    raise
                loaded = True
                await client.script_load(self.source)
            except (RedisConnectionError, OSError):
                if retried:
                    raise
                retried = True


# Streams (or commands) per Redis call when reading outboxes: a call this size keeps Redis busy
# well under a millisecond, so other clients' commands are not held up behind thousands of teams.
READ_CHUNK = 200
CLAIM_SCAN_MAX_INTERVAL_S = 5.0  # how often at most an idle team's pending entries are scanned


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _int(raw: bytes | str | None) -> int:
    return 0 if raw is None else int(raw)


def _str(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


class RedisBudgetStore:
    """BudgetStore on a shared Redis; safe across any number of proxy replicas.

    The client must speak RESP2 (redis-py's default); close() closes it only when
    the store made it (from_url).
    """

    def __init__(
        self,
        client: redis.Redis,
        namespace: str = "fb",
        *,
        claim_idle_s: float = OUTBOX_CLAIM_IDLE_S,
        done_ttl_s: int = DONE_TTL_S,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.done_ttl_s = done_ttl_s
        self.consumer = _consumer_name()
        self._lanes = ScriptLanes(client)
        self._reserve = _Script(lua.RESERVE)
        self._settle = _Script(lua.SETTLE)
        self._reap = _Script(lua.REAP)
        self._extend = _Script(lua.EXTEND)
        self._snapshot = _Script(lua.SNAPSHOT)
        self._adjust = _Script(lua.ADJUST)
        self._groups: set[str] = set()
        self._claim_cursor: dict[str, str] = {}
        # When each team's pending entries are next scanned for abandoned ones (see _read).
        self._claim_due: dict[str, float] = {}
        self.claim_interval_s = min(CLAIM_SCAN_MAX_INTERVAL_S, claim_idle_s / 4)
        self._owns_client = False

    @classmethod
    def from_url(cls, url: str, namespace: str = "fb", **kwargs: Any) -> RedisBudgetStore:
        """A store on its own client, tuned to fail fast (a 503) rather than hang a request."""
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            health_check_interval=30,
            # Retrying is safe: reserve and settle are idempotent on the request id.
            retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.2), 2),
        )
        store = cls(client, namespace, **kwargs)
        store._owns_client = True
        return store

    # Keys.

    def team_prefix(self, team_id: str) -> str:
        return f"{self.namespace}:{{t:{team_id}}}"

    def counter_key(self, budget: BudgetCounter) -> str:
        return f"{self.team_prefix(budget.team_id)}:c:{budget.counter_id}"

    def outbox_key(self, team_id: str) -> str:
        return f"{self.team_prefix(team_id)}:outbox"

    def _reservation_keys(self, reservation: Reservation) -> list[str]:
        prefix = self.team_prefix(reservation.team_id)
        return [
            f"{prefix}:r:{reservation.request_id}",
            f"{prefix}:rx",
            f"{prefix}:done:{reservation.request_id}",
        ]

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await operation()
        except _UNAVAILABLE as exc:
            raise RedisBudgetStoreUnavailable(f"budget store unavailable: {exc}") from exc

    # The request path.

    async def ping(self) -> None:
        await self._call(self.client.ping)

    async def reserve(self, reservation: Reservation) -> Denial | None:
        check_reservation(reservation)
        keys = self._reservation_keys(reservation)
        keys += [self.counter_key(b) for b in reservation.budgets]
        args: list[Any] = [
            reservation.amount_nano,
            reservation.ttl_s * 1000,
            reservation.ttl_s + RESERVATION_GRACE_S,
            reservation.request_id,
        ]
        for budget in reservation.budgets:
            args += [budget.limit_nano, counter_expires_at(budget)]
        reply = await self._call(lambda: self._reserve.on_lane(self._lanes, self.client, keys, args))
        index = int(reply[0])
        if index <= 0:
            return None
        budget = reservation.budgets[index - 1]
        state = CounterState(budget, _int(reply[1]), _int(reply[2]))
        return Denial(state=state, requested_nano=reservation.amount_nano)

    async def settle(self, reservation: Reservation, event: ChargeEvent) -> SettleResult:
        check_charge(reservation, event)
        keys = self._reservation_keys(reservation) + [self.outbox_key(reservation.team_id)]
        keys += [self.counter_key(b) for b in reservation.budgets]
        args: list[Any] = [
            reservation.request_id,
            event.cost_nano,
            event.to_bytes(),
            self.done_ttl_s,
        ]
        args += [counter_expires_at(b) for b in reservation.budgets]
        reply = await self._call(lambda: self._settle.on_lane(self._lanes, self.client, keys, args))
        n = len(reservation.budgets)
        values = [_int(v) for v in reply[2:]]
        before = tuple(
            CounterState(b, values[2 * i], values[2 * i + 1])
            for i, b in enumerate(reservation.budgets)
        )
        after = tuple(
            CounterState(b, values[2 * (n + i)], values[2 * (n + i) + 1])
            for i, b in enumerate(reservation.budgets)
        )
        # Settled before: the id its done marker keeps (markers set before positions say "1").
        return SettleResult(settled=int(reply[0]) == 1, before=before, after=after, outbox_id=reply[1])

    async def extend(self, reservation: Reservation, ttl_s: int) -> bool:
        if ttl_s < 0:
            raise ValueError("a reservation ttl cannot be negative")
        keys = self._reservation_keys(reservation)[:2]
        args = [reservation.request_id, ttl_s * 1000, ttl_s + RESERVATION_GRACE_S]
        reply = await self._call(lambda: self._extend(self.client, keys, args))
        return int(reply) == 1

    async def reap_expired(self, team_ids: Sequence[str]) -> int:
        released = 0
        for team_id in team_ids:
            prefix = self.team_prefix(team_id)
            keys = [f"{prefix}:rx"]
            args = [f"{prefix}:r:", REAP_BATCH]
            released += int(await self._call(lambda: self._reap(self.client, keys, args)))
        return released

    # Counters.

    async def standing(self, budgets: Sequence[BudgetCounter]) -> list[CounterState]:
        if not budgets:
            return []

        async def read() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                for budget in budgets:
                    pipe.hmget(self.counter_key(budget), "spent", "reserved")
                return await pipe.execute()

        rows = await self._call(read)
        return [CounterState(b, _int(r[0]), _int(r[1])) for b, r in zip(budgets, rows, strict=True)]

    async def set_spent(self, budget: BudgetCounter, spent_nano: int) -> None:
        if spent_nano < 0:
            raise ValueError("spent cannot be negative")
        key = self.counter_key(budget)
        expire_at = counter_expires_at(budget)

        async def write() -> None:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(key, "spent", spent_nano)
                if expire_at:
                    pipe.expireat(key, expire_at)
                await pipe.execute()

        await self._call(write)

    async def snapshot(self, team_id: str, budgets: Sequence[BudgetCounter]) -> CounterSnapshot:
        if any(b.team_id != team_id for b in budgets):
            raise ValueError("a snapshot covers one team's counters")
        token = secrets.token_hex(8)
        keys = [self.outbox_key(team_id)] + [self.counter_key(b) for b in budgets]
        args: list[Any] = [token] + [counter_expires_at(b) for b in budgets]
        reply = await self._call(lambda: self._snapshot(self.client, keys, args))
        # A stream that Redis lost (restart without persistence) starts again from the server's
        # clock: every entry of the old one is earlier than the millisecond this call ran in.
        floor = OutboxPosition(int(reply[0]) - 1, OutboxPosition.MAX_SEQ)
        through = max(OutboxPosition.parse(reply[1]), floor)
        spent = tuple(_int(v) for v in reply[2:])
        return CounterSnapshot(team_id, tuple(budgets), spent, through, token)

    async def adjust_spent(self, snapshot: CounterSnapshot, deltas: Sequence[int]) -> int:
        if len(deltas) != len(snapshot.counters):
            raise ValueError("one delta per snapshotted counter")
        keys = [self.counter_key(b) for b in snapshot.counters]
        args: list[Any] = [snapshot.token]
        for budget, delta in zip(snapshot.counters, deltas, strict=True):
            args += [int(delta), counter_expires_at(budget)]
        return int(await self._call(lambda: self._adjust(self.client, keys, args)))

    async def outbox_until(
        self, team_id: str, through: OutboxPosition, limit: int
    ) -> list[tuple[OutboxPosition, bytes]] | None:
        # Acked entries are deleted (ack_outbox), so what is left up to `through` is unwritten.
        key = self.outbox_key(team_id)
        entries = await self._call(lambda: self.client.xrange(key, "-", str(through), count=limit + 1))
        if len(entries) > limit:
            return None
        return [(OutboxPosition.parse(entry_id), fields[b"e"]) for entry_id, fields in entries if fields]

    # The outbox.

    async def _ensure_groups(self, team_ids: Sequence[str]) -> None:
        missing = [t for t in team_ids if t not in self._groups]
        if not missing:
            return
        for chunk in _chunks(missing, READ_CHUNK):
            async with self.client.pipeline(transaction=False) as pipe:
                for team_id in chunk:
                    # From id 0: events settled before any ledger reader existed must not be skipped.
                    pipe.xgroup_create(self.outbox_key(team_id), OUTBOX_GROUP, id="0", mkstream=True)
                results = await pipe.execute(raise_on_error=False)
            for team_id, result in zip(chunk, results, strict=True):
                if isinstance(result, ResponseError) and "BUSYGROUP" not in str(result):
                    raise result
                self._groups.add(team_id)

    async def _read(self, team_ids: Sequence[str], count: int) -> dict[str, list[Any]]:
        await self._ensure_groups(team_ids)
        messages: dict[str, list[Any]] = {team_id: [] for team_id in team_ids}
        # Abandoned entries: each team's pending list is scanned once per claim interval (entries
        # only become claimable after claim_idle_s anyway), not on every read, so an idle team
        # costs no XAUTOCLAIM on most reads. A scan left unfinished continues on the next read.
        now = time.monotonic()
        due = [
            t for t in team_ids
            if not self.claim_idle_ms or self._claim_cursor.get(t, "0-0") != "0-0" or now >= self._claim_due.get(t, 0.0)
        ]
        for chunk in _chunks(due, READ_CHUNK):
            async with self.client.pipeline(transaction=False) as pipe:
                for team_id in chunk:
                    pipe.xautoclaim(
                        self.outbox_key(team_id),
                        OUTBOX_GROUP,
                        self.consumer,
                        self.claim_idle_ms,
                        start_id=self._claim_cursor.get(team_id, "0-0"),
                        count=count,
                    )
                claimed = await pipe.execute(raise_on_error=False)
            for team_id, reply in zip(chunk, claimed, strict=True):
                if isinstance(reply, Exception):
                    raise reply
                self._claim_cursor[team_id] = _str(reply[0])
                self._claim_due[team_id] = time.monotonic() + self.claim_interval_s
                messages[team_id] = list(reply[1])
        # New entries: one XREADGROUP names many teams' streams and answers only for those that
        # have entries, instead of one command per team. COUNT applies per stream, so teams are
        # grouped by how many entries each still wants.
        by_count: dict[int, list[str]] = {}
        for team_id, got in messages.items():
            if len(got) < count:
                by_count.setdefault(count - len(got), []).append(team_id)
        for n, wanted in by_count.items():
            for chunk in _chunks(wanted, READ_CHUNK):
                keys = {self.outbox_key(team_id): team_id for team_id in chunk}
                reply = await self.client.xreadgroup(OUTBOX_GROUP, self.consumer, dict.fromkeys(keys, ">"), n)
                for stream, stream_messages in reply or []:
                    messages[keys[_str(stream)]] += stream_messages
        return messages

    @contextlib.contextmanager
    def claiming_all_pending(self) -> Iterator[None]:
        """Inside the block, read_outbox also takes entries other readers hold unacked, however recent.

        A reader killed mid-write leaves its batch pending; a rebuild that waited the usual idle
        time would sum a ledger without them. Taking them early is safe: ledger writes are idempotent.
        """
        saved, self.claim_idle_ms = self.claim_idle_ms, 0
        self._claim_cursor.clear()
        self._claim_due.clear()
        try:
            yield
        finally:
            self.claim_idle_ms = saved

    async def read_outbox(self, team_ids: Sequence[str], count: int) -> list[OutboxEntry]:
        """Up to `count` entries per team: abandoned ones (idle past claim_idle_s), then new."""
        if not team_ids or count <= 0:
            return []
        try:
            messages = await self._call(lambda: self._read(team_ids, count))
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis lost the stream (restart without persistence): recreate groups, read again.
            self._groups.difference_update(team_ids)
            messages = await self._call(lambda: self._read(team_ids, count))
        entries: list[OutboxEntry] = []
        for team_id, team_messages in messages.items():
            for entry_id, fields in team_messages:
                if not fields:  # deleted after it was read; nothing left to deliver
                    continue
                entries.append(OutboxEntry(_str(entry_id), team_id, fields[b"e"]))
        return entries

    async def ack_outbox(self, entries: Sequence[OutboxEntry]) -> None:
        if not entries:
            return
        by_team: dict[str, list[str]] = {}
        for entry in entries:
            by_team.setdefault(entry.team_id, []).append(entry.entry_id)

        async def ack() -> None:
            # One MULTI: an entry acked but left in the stream would never be delivered again,
            # yet a counter rebuild would take it for one the ledger still lacks.
            async with self.client.pipeline(transaction=True) as pipe:
                for team_id, ids in by_team.items():
                    key = self.outbox_key(team_id)
                    pipe.xack(key, OUTBOX_GROUP, *ids)
                    pipe.xdel(key, *ids)  # the ledger has it; keep the stream short
                await pipe.execute()

        await self._call(ack)

    async def prune_consumers(self, team_ids: Sequence[str], idle_s: float = 3600.0) -> int:
        """Forget outbox readers that hold nothing and have been silent for idle_s.

        Every process that reads an outbox joins its group under a name of its own, and nothing
        else removes the name when the process is gone. A reader with nothing pending has nothing
        to hand over, so deleting it loses nothing; one still alive simply joins again.
        """
        removed = 0
        for team_id in team_ids:
            key = self.outbox_key(team_id)
            try:
                consumers = await self._call(lambda key=key: self.client.xinfo_consumers(key, OUTBOX_GROUP))
            except ResponseError:  # no stream or no group yet: nobody to forget
                continue
            for consumer in consumers:
                name = _str(consumer["name"])
                if name != self.consumer and consumer["pending"] == 0 and consumer["idle"] >= idle_s * 1000:
                    await self._call(lambda key=key, name=name: self.client.xgroup_delconsumer(key, OUTBOX_GROUP, name))
                    removed += 1
        return removed

    async def outbox_backlog(self, team_ids: Sequence[str]) -> int:
        """Entries are deleted when acked, so each outbox's length is what the ledger still lacks."""
        if not team_ids:
            return 0

        async def lengths() -> int:
            total = 0
            for chunk in _chunks(team_ids, READ_CHUNK):
                async with self.client.pipeline(transaction=False) as pipe:
                    for team_id in chunk:
                        pipe.xlen(self.outbox_key(team_id))
                    total += sum(await pipe.execute())
            return total

        return await self._call(lengths)

    async def close(self) -> None:
        await self._lanes.close()  # made outside the client's pool: closing the client misses them
        if self._owns_client:
            await self.client.aclose()


