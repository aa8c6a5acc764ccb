"""Redis transports: a bounded media stream (Streams + consumer groups) and live fan-out.

Media entries are deleted once acked (``XACK`` + ``XDEL``), so the stream holds only
undelivered and pending entries; appending to a full stream therefore evicts real
backlog, which is counted as a drop (reason ``stream_full``). The media stream has one
consumer group (inference); a second group would need the entries kept.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from shared.metrics import Metrics
from shared.transport.base import AppendResult, StreamEntry

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


def _entries(raw: Any) -> list[StreamEntry]:
    out: list[StreamEntry] = []
    for entry_id, fields in raw or ():
        if not fields:  # trimmed while pending
            continue
        data = fields.get(b"d")
        if data is not None:
            out.append(StreamEntry(_text(entry_id), data))
    return out


class RedisMediaBus:
    """Bounded media stream on Redis Streams."""

    def __init__(self, *, url: str, stream: str, maxlen: int, metrics: Metrics | None = None) -> None:
        self.url = url
        self.stream = stream
        self.maxlen = maxlen
        self._metrics = metrics
        self._redis: aioredis.Redis | None = None
        self._append_sha: str | None = None

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

    async def append(self, data: bytes) -> AppendResult:
        assert self._append_sha is not None
        entry_id, evicted = await self.redis.evalsha(self._append_sha, 1, self.stream, self.maxlen, data)  # type: ignore[misc]
        evicted = int(evicted)
        if evicted and self._metrics is not None:
            self._metrics.media_dropped_total.labels("stream_full").inc(evicted)
        return AppendResult(id=_text(entry_id), evicted=evicted)

    async def ensure_group(self, group: str) -> None:
        try:
            await self.redis.xgroup_create(self.stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_group(self, group: str, consumer: str, *, count: int, block_ms: int) -> list[StreamEntry]:
        raw: Any = await self.redis.xreadgroup(
            group, consumer, {self.stream: ">"}, count=count, block=block_ms if block_ms > 0 else None
        )
        if not raw:
            return []
        return _entries(raw[0][1])

    async def ack(self, group: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(self.stream, group, *ids)
            pipe.xdel(self.stream, *ids)
            await pipe.execute()

    async def claim_stale(self, group: str, consumer: str, *, min_idle_ms: int, count: int) -> list[StreamEntry]:
        result = await self.redis.xautoclaim(self.stream, group, consumer, min_idle_ms, start_id="0-0", count=count)
        # Redis 7: [next_start, entries, deleted_ids]; deleted ones were evicted while pending.
        entries = _entries(result[1])
        deleted = result[2] if len(result) > 2 else []
        if deleted:
            await self.redis.xack(self.stream, group, *deleted)
            if self._metrics is not None:
                self._metrics.media_dropped_total.labels("evicted_pending").inc(len(deleted))
        return entries

    async def length(self) -> int:
        return int(await self.redis.xlen(self.stream))


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
