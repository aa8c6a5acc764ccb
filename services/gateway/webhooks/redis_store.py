"""The Redis webhook store: shared by every gateway, survives restarts (keys: :mod:`.store`)."""

from __future__ import annotations

import redis.asyncio as aioredis

from services.gateway.webhooks.store import PendingDelivery, StoredEndpoint
from shared.contracts.webhooks import WEBHOOK_KEYS, DeadLetter

PREFIX = WEBHOOK_KEYS

# Take the due members and push each one's score to now + lease in one step: two gateways never claim the same
# attempt, and an attempt whose gateway died is claimed again when the lease runs out.
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], m) end
return due
"""


def session_prefix(session: str, prefix: str = PREFIX) -> str:
    """Every session-scoped webhook key starts with this (erasure: SCAN ``{session_prefix}*``)."""
    return f"{prefix}:session:{session}:"


class RedisWebhookStore:
    def __init__(self, *, url: str, prefix: str = PREFIX) -> None:
        self.url = url
        self.prefix = prefix
        self._due = f"{prefix}:due"
        self._dead = f"{prefix}:dead"
        self._redis: aioredis.Redis | None = None

    def _session(self, session: str) -> str:
        return session_prefix(session, self.prefix)

    def _endpoints_key(self, session: str | None) -> str:
        return f"{self.prefix}:deployment:endpoints" if session is None else self._session(session) + "endpoints"

    def _delivery_key(self, member: str) -> str:
        session, _, delivery = member.rpartition("/")
        return f"{self._session(session)}delivery:{delivery}"

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("RedisWebhookStore.start() was not called")
        return self._redis

    async def start(self) -> None:
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(self.url, decode_responses=False)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def add_endpoint(self, stored: StoredEndpoint) -> None:
        key = self._endpoints_key(stored.endpoint.session)
        await self.redis.hset(key, stored.endpoint.id, stored.model_dump_json())

    async def endpoints(self, session: str | None) -> list[StoredEndpoint]:
        raw = await self.redis.hgetall(self._endpoints_key(session))
        return sorted((StoredEndpoint.model_validate_json(v) for v in raw.values()), key=lambda e: e.endpoint.created)

    async def remove_endpoint(self, session: str | None, endpoint_id: str) -> bool:
        return bool(await self.redis.hdel(self._endpoints_key(session), endpoint_id))

    async def mark_fired(self, session: str, key: str, ttl_s: float) -> bool:
        done = await self.redis.set(f"{self._session(session)}fired:{key}", b"1", nx=True, px=int(ttl_s * 1000))
        return bool(done)

    async def enqueue(self, delivery: PendingDelivery, due: float) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._delivery_key(delivery.member), delivery.model_dump_json())
            pipe.zadd(self._due, {delivery.member: due})
            await pipe.execute()

    async def claim(self, now: float, *, lease_s: float, limit: int) -> list[PendingDelivery]:
        members: list[bytes] = await self.redis.eval(_CLAIM, 1, self._due, repr(now), repr(now + lease_s), str(limit))
        if not members:
            return []
        keys = [self._delivery_key(m.decode()) for m in members]
        out: list[PendingDelivery] = []
        for member, raw in zip(members, await self.redis.mget(keys), strict=True):
            if raw is None:  # finished by another gateway between the claim and the read
                await self.redis.zrem(self._due, member)
                continue
            out.append(PendingDelivery.model_validate_json(raw))
        return out

    async def reschedule(self, delivery: PendingDelivery, due: float) -> None:
        await self.enqueue(delivery, due)

    async def finish(self, delivery: PendingDelivery) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self._due, delivery.member)
            pipe.delete(self._delivery_key(delivery.member))
            await pipe.execute()

    async def dead_letter(self, letter: DeadLetter, *, cap: int) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(self._dead, letter.model_dump_json())
            pipe.ltrim(self._dead, 0, cap - 1)
            await pipe.execute()

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        raw = await self.redis.lrange(self._dead, 0, limit - 1)
        return [DeadLetter.model_validate_json(v) for v in raw]

    async def pending(self) -> int:
        return int(await self.redis.zcard(self._due))
