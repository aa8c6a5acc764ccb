"""Publish epochs on Redis (see :mod:`shared.transport.publishes`).

Key ``classpulse:publish:{session}/{participant}``: a hash with ``epoch`` (publishes so far)
and ``origin`` (the Redis server's clock in ms at the first publish), expiring
``PUBLISH_TTL_S`` after the last publish. One Lua script increments the count and measures
the offset on the server's clock, so ingest workers on different hosts agree without
clock skew.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from shared.contracts.topics import PUBLISH_EPOCHS
from shared.transport.publishes import PUBLISH_TTL_S, Publish

_BEGIN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1) - 1
redis.call('HSETNX', KEYS[1], 'origin', now)
local origin = tonumber(redis.call('HGET', KEYS[1], 'origin'))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return {epoch, math.max(0, now - origin)}
"""


class RedisPublishRegistry:
    """:class:`~shared.transport.publishes.PublishRegistry` on Redis."""

    def __init__(self, *, url: str, prefix: str = PUBLISH_EPOCHS, ttl_s: float = PUBLISH_TTL_S) -> None:
        self.url = url
        self.prefix = prefix
        self.ttl_s = ttl_s
        """Expiry after the last publish (``PUBLISH_TTL_S``, or the retention when shorter)."""
        self._redis: aioredis.Redis | None = None
        self._sha = ""

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("RedisPublishRegistry used before start()")
        return self._redis

    def key(self, session: str, participant: str) -> str:
        return f"{self.prefix}:{session}/{participant}"

    async def start(self) -> None:
        # No I/O here: only ingest calls begin(), the other services never touch Redis through this.
        self._redis = aioredis.Redis.from_url(self.url, decode_responses=False)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def begin(self, session: str, participant: str) -> Publish:
        args = (1, self.key(session, participant), int(self.ttl_s * 1000))
        if not self._sha:
            self._sha = await self.redis.script_load(_BEGIN)
        try:
            epoch, offset_ms = await self.redis.evalsha(self._sha, *args)  # type: ignore[misc]
        except NoScriptError:  # the server restarted and lost the script
            self._sha = await self.redis.script_load(_BEGIN)
            epoch, offset_ms = await self.redis.evalsha(self._sha, *args)  # type: ignore[misc]
        return Publish(epoch=int(epoch), offset=int(offset_ms) / 1000.0)
