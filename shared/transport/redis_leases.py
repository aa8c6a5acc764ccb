"""Shard leases, inference membership and participant snapshots on Redis (see :mod:`shared.transport.leases`).

Keys (``prefix`` = ``classpulse:inference`` unless a test isolates itself):

* ``{prefix}:members``: sorted set, member -> expiry in ms of the Redis server's clock;
  expired members are removed by every heartbeat (one clock for all workers, no skew).
* ``{prefix}:lease:{k}``: ``"<owner>/<epoch>"`` with a PX expiry, set only if absent
  (``SET NX PX``); ``{prefix}:lease:{k}:epoch`` counts acquisitions (the fencing token);
  ``{prefix}:lease:{k}:last`` names the owner until it releases, so the next acquisition
  knows whether it took an expired lease over.
* ``{prefix}:pstate:{session}/{participant}``: the latest snapshot of that participant's
  inference state, written (with a PX expiry) only while the writer's lease is current, and
  only over an older version: ``{prefix}:pstate:{session}/{participant}:v`` holds
  ``"<shard>/<epoch>/<seq>"`` of the stored one (same expiry).

Every check-and-set is one Lua script, so it is atomic on the server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from shared.contracts.topics import INFERENCE_COORDINATION
from shared.transport.leases import Lease, Saved

_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], 10 * tonumber(ARGV[2]))
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

_ACQUIRE = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '/' .. epoch, 'KEEPTTL')
local previous = redis.call('GET', KEYS[3])
redis.call('SET', KEYS[3], ARGV[1])
return {epoch, previous or ''}
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
"""

_SCRIPTS: dict[str, str] = {}

_SAVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local shard, epoch, seq = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local version = ARGV[3] .. '/' .. ARGV[4] .. '/' .. ARGV[5]
local stale = {}
for i = 1, (#KEYS - 1) / 2 do
  local stored = redis.call('GET', KEYS[2 * i + 1])
  local replace = true
  if stored then
    local s, e, q = string.match(stored, '^(%d+)/(%d+)/(%d+)$')
    if s and tonumber(s) == shard then
      e, q = tonumber(e), tonumber(q)
      replace = e < epoch or (e == epoch and q < seq)
    end
  end
  if replace then
    redis.call('SET', KEYS[2 * i], ARGV[5 + i], 'PX', ARGV[2])
    redis.call('SET', KEYS[2 * i + 1], version, 'PX', ARGV[2])
  else
    stale[#stale + 1] = i
  end
end
return stale
"""


_SCRIPTS.update(heartbeat=_HEARTBEAT, acquire=_ACQUIRE, renew=_RENEW, release=_RELEASE, save=_SAVE)

Call = tuple[str, Sequence[Any], Sequence[Any]]
"""A script name, its keys and its arguments."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisLeaseStore:
    """:class:`~shared.transport.leases.LeaseStore` on Redis."""

    def __init__(self, *, url: str, prefix: str = INFERENCE_COORDINATION) -> None:
        self.url = url
        self.prefix = prefix
        self._redis: aioredis.Redis | None = None
        self._sha: dict[str, str] = {}

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("RedisLeaseStore used before start()")
        return self._redis

    def lease_key(self, shard: int) -> str:
        return f"{self.prefix}:lease:{shard}"

    def state_key(self, key: str) -> str:
        return f"{self.prefix}:pstate:{key}"

    @property
    def members_key(self) -> str:
        return f"{self.prefix}:members"

    async def start(self) -> None:
        self._redis = aioredis.Redis.from_url(self.url, decode_responses=False)
        await self._redis.ping()
        await self._load_scripts()

    async def _load_scripts(self) -> None:
        for name, script in _SCRIPTS.items():
            self._sha[name] = await self.redis.script_load(script)

    async def _run(self, calls: Sequence[Call]) -> list[Any]:
        """Run scripts in one round trip; reloads them once if the server lost them (a restart)."""
        for attempt in (0, 1):
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for name, keys, args in calls:
                        pipe.evalsha(self._sha[name], len(keys), *keys, *args)
                    return list(await pipe.execute())
            except NoScriptError:
                if attempt:
                    raise
                await self._load_scripts()
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def heartbeat(self, member: str, *, ttl_ms: int) -> list[str]:
        (raw,) = await self._run([("heartbeat", [self.members_key], [member, ttl_ms])])
        return sorted(_text(m) for m in raw)

    async def leave(self, member: str) -> None:
        await self.redis.zrem(self.members_key, member)

    async def acquire(self, shards: Sequence[int], owner: str, *, ttl_ms: int) -> list[Lease | None]:
        if not shards:
            return []
        calls: list[Call] = []
        for k in shards:
            key = self.lease_key(k)
            calls.append(("acquire", [key, f"{key}:epoch", f"{key}:last"], [owner, ttl_ms]))
        results = await self._run(calls)
        out: list[Lease | None] = []
        for k, result in zip(shards, results, strict=True):
            if not result:
                out.append(None)
                continue
            epoch, previous = int(result[0]), _text(result[1])
            out.append(Lease(shard=k, owner=owner, epoch=epoch, previous=previous or None))
        return out

    async def renew(self, leases: Sequence[Lease], *, ttl_ms: int) -> list[bool]:
        if not leases:
            return []
        results = await self._run([("renew", [self.lease_key(x.shard)], [x.token, ttl_ms]) for x in leases])
        return [bool(int(r)) for r in results]

    async def release(self, lease: Lease) -> bool:
        key = self.lease_key(lease.shard)
        (done,) = await self._run([("release", [key, f"{key}:last"], [lease.token])])
        return bool(int(done))

    async def holder(self, shard: int) -> str | None:
        raw = await self.redis.get(self.lease_key(shard))
        if raw is None:
            return None
        owner, _, _ = _text(raw).rpartition("/")
        return owner

    def version_key(self, key: str) -> str:
        return f"{self.state_key(key)}:v"

    async def save_states(self, lease: Lease, states: Mapping[str, bytes], *, ttl_ms: int, seq: int) -> Saved:
        if not states:
            return Saved(current=True)
        names = list(states)
        keys = [self.lease_key(lease.shard)]
        for k in names:
            keys += [self.state_key(k), self.version_key(k)]
        args = [lease.token, ttl_ms, lease.shard, lease.epoch, seq, *states.values()]
        (done,) = await self._run([("save", keys, args)])
        if not isinstance(done, list):
            return Saved(current=False)
        return Saved(current=True, stale=tuple(names[int(i) - 1] for i in done))

    async def load_state(self, key: str) -> bytes | None:
        raw: Any = await self.redis.get(self.state_key(key))
        return bytes(raw) if raw is not None else None
