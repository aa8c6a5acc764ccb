"""Redis transports: bounded media shard streams (Streams + consumer groups) and live fan-out.

Media is sharded by participant: ``{stream}:{k}`` for shard ``k`` (``shard_of`` of the entry's
routing key), each bounded by ``maxlen``. Entries are deleted once acked (``XACK`` + ``XDEL``),
so a shard holds only undelivered and pending entries; appending to a full shard therefore
evicts real backlog, which is counted as a drop (reason ``stream_full``). The media streams
have one consumer group (inference); a second group would need the entries kept. Entries whose
results are being published are marked in the hash ``{stream}:{k}:results`` until acked: the
first entry of each marked group holds the group's results, the others refer to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

from shared.contracts.topics import media_stream
from shared.metrics import Metrics
from shared.transport.base import AppendResult, StreamEntry
from shared.transport.shards import entry_id as entry_id_of
from shared.transport.shards import shard_of, split_entry_id

_REF = b"\x00ref:"
"""A marked entry's value that names the entry holding its group's results."""

# Append and report how many entries the bound evicted, atomically.
_APPEND_LUA = """
local before = redis.call('XLEN', KEYS[1])
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', 'd', ARGV[2])
local evicted = before + 1 - tonumber(ARGV[1])
if evicted < 0 then evicted = 0 end
return {id, evicted}
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entries(raw: Any, shard: int) -> list[StreamEntry]:
    out: list[StreamEntry] = []
    for entry_id, fields in raw or ():
        if not fields:  # trimmed while pending
            continue
        data = fields.get(b"d")
        if data is not None:
            out.append(StreamEntry(entry_id_of(shard, _text(entry_id)), data, shard))
    return out


class RedisMediaBus:
    """Bounded media shard streams on Redis Streams (``{stream}:{k}``, ``maxlen`` entries each)."""

    def __init__(self, *, url: str, stream: str, maxlen: int, shards: int = 1, metrics: Metrics | None = None) -> None:
        if shards < 1:
            raise ValueError("shards must be >= 1")
        self.url = url
        self.stream = stream
        self.maxlen = maxlen
        self._shards = shards
        self._names = [media_stream(k, stream) for k in range(shards)]
        self._index = {name: k for k, name in enumerate(self._names)}
        self._metrics = metrics
        self._redis: aioredis.Redis | None = None
        self._append_sha: str | None = None

    @property
    def shards(self) -> int:
        return self._shards

    def stream_name(self, shard: int) -> str:
        """The Redis key of one shard's stream."""
        return self._names[shard]

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("RedisMediaBus used before start()")
        return self._redis

    async def start(self) -> None:
        self._redis = aioredis.Redis.from_url(self.url, decode_responses=False)
        await self._redis.ping()
        self._append_sha = await self._redis.script_load(_APPEND_LUA)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def append(self, data: bytes, *, key: str) -> AppendResult:
        assert self._append_sha is not None
        k = shard_of(key, self._shards)
        try:
            entry, evicted = await self.redis.evalsha(  # type: ignore[misc]
                self._append_sha, 1, self._names[k], self.maxlen, data
            )
        except NoScriptError:  # Redis restarted: load the script again
            self._append_sha = await self.redis.script_load(_APPEND_LUA)
            entry, evicted = await self.redis.evalsha(  # type: ignore[misc]
                self._append_sha, 1, self._names[k], self.maxlen, data
            )
        evicted = int(evicted)
        if evicted and self._metrics is not None:
            self._metrics.media_dropped_total.labels("stream_full").inc(evicted)
        return AppendResult(id=entry_id_of(k, _text(entry)), evicted=evicted, shard=k)

    async def ensure_group(self, group: str) -> None:
        for name in self._names:
            try:
                await self.redis.xgroup_create(name, group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read_group(
        self, group: str, consumer: str, *, shards: Sequence[int], count: int, block_ms: int
    ) -> list[StreamEntry]:
        if not shards:
            if block_ms > 0:
                await asyncio.sleep(block_ms / 1000)
            return []
        per_stream = max(1, -(-count // len(shards)))  # XREADGROUP's COUNT is per stream
        raw: Any = await self.redis.xreadgroup(
            group,
            consumer,
            {self._names[k]: ">" for k in shards},
            count=per_stream,
            block=block_ms if block_ms > 0 else None,
        )
        out: list[StreamEntry] = []
        for name, entries in raw or ():
            out += _entries(entries, self._index[_text(name)])
        return out[:count] if len(out) > count else out

    async def ack(self, group: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        by_shard: dict[int, list[str]] = {}
        for qualified in ids:
            k, stream_id = split_entry_id(qualified)
            by_shard.setdefault(k, []).append(stream_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for k, stream_ids in by_shard.items():
                pipe.xack(self._names[k], group, *stream_ids)
                pipe.xdel(self._names[k], *stream_ids)
                pipe.hdel(self._marks(k), *stream_ids)
            await pipe.execute()

    def _marks(self, shard: int) -> str:
        return f"{self._names[shard]}:results"

    async def mark_publishing(self, marks: Sequence[tuple[Sequence[str], bytes]]) -> None:
        groups = [(ids, results) for ids, results in marks if ids]
        if not groups:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for ids, results in groups:
                parts = [split_entry_id(i) for i in ids]
                k, first = parts[0]
                if any(shard != k for shard, _ in parts):
                    raise ValueError("a group of marked entries must be of one shard")
                mapping: dict[str, bytes] = {first: results}
                mapping.update((stream_id, _REF + first.encode()) for _, stream_id in parts[1:])
                pipe.hset(self._marks(k), mapping=mapping)  # type: ignore[arg-type]
            await pipe.execute()

    async def publishing(self, shard: int) -> dict[str, bytes]:
        raw: Any = await self.redis.hgetall(self._marks(shard))  # type: ignore[misc]
        stored = {_text(k): bytes(v) for k, v in raw.items()}
        out: dict[str, bytes] = {}
        for stream_id, value in stored.items():
            if value.startswith(_REF):
                value = stored.get(value[len(_REF) :].decode(), b"")
                value = b"" if value.startswith(_REF) else value
            out[entry_id_of(shard, stream_id)] = value
        return out

    async def claim_stale(
        self, group: str, consumer: str, *, shard: int, min_idle_ms: int, count: int
    ) -> list[StreamEntry]:
        name = self._names[shard]
        result = await self.redis.xautoclaim(name, group, consumer, min_idle_ms, start_id="0-0", count=count)
        # Redis 7: [next_start, entries, deleted_ids]; deleted ones were evicted while pending.
        entries = _entries(result[1], shard)
        deleted = result[2] if len(result) > 2 else []
        if deleted:
            await self.redis.xack(name, group, *deleted)
            await self.redis.hdel(self._marks(shard), *deleted)  # type: ignore[misc]
            if self._metrics is not None:
                self._metrics.media_dropped_total.labels("evicted_pending").inc(len(deleted))
        return entries

    async def length(self) -> int:
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in self._names:
                pipe.xlen(name)
            lengths = await pipe.execute()
        return sum(int(n) for n in lengths)


class RedisLiveBus:
    """Live fan-out on Redis pub/sub plus latest state in one hash per session."""

    def __init__(self, *, url: str, state_ttl_s: int = 24 * 3600) -> None:
        self.url = url
        self.state_ttl_s = state_ttl_s
        self._redis: aioredis.Redis | None = None

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("RedisLiveBus used before start()")
        return self._redis

    async def start(self) -> None:
        self._redis = aioredis.Redis.from_url(self.url, decode_responses=False)
        await self._redis.ping()

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def publish(self, channel: str, data: bytes) -> None:
        await self.redis.publish(channel, data)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[bytes]]:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(channel)

        async def messages() -> AsyncIterator[bytes]:
            while True:
                msg = await pubsub.get_message(timeout=1.0)
                if msg is not None and msg.get("type") == "message":
                    yield msg["data"]

        try:
            yield messages()
        finally:
            await pubsub.unsubscribe(channel)
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def set_state(self, key: str, field: str, data: bytes) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, field, data)
            pipe.expire(key, self.state_ttl_s)
            await pipe.execute()

    async def get_state(self, key: str) -> dict[str, bytes]:
        raw: dict[Any, Any] = await self.redis.hgetall(key)
        return {_text(k): bytes(v) for k, v in raw.items()}
