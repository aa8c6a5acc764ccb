"""Shard leases, membership and fenced snapshots on a real Redis server (the Lua check-and-sets)."""

from __future__ import annotations

import asyncio

import pytest

from shared.transport.redis_leases import RedisLeaseStore

pytestmark = pytest.mark.integration


async def test_leases_are_exclusive_fenced_and_taken_over_after_expiry(redis_url: str, unique: str) -> None:
    a = RedisLeaseStore(url=redis_url, prefix=f"test:coord:{unique}")
    b = RedisLeaseStore(url=redis_url, prefix=f"test:coord:{unique}")
    await a.start()
    await b.start()
    try:
        (first,) = await a.acquire([3], "a", ttl_ms=300)
        assert first is not None and first.previous is None and first.epoch == 1
        assert await b.acquire([3], "b", ttl_ms=300) == [None]  # SET NX: one owner at a time
        assert await a.holder(3) == "a"
        assert await a.renew([first], ttl_ms=300) == [True]
        assert await a.save_states(first, {"s/p": b"state-a"}, ttl_ms=10_000, seq=2)
        late = await a.save_states(first, {"s/p": b"older", "s/r": b"r"}, ttl_ms=10_000, seq=1)  # a late write
        assert late and late.stale == ("s/p",)  # the newer snapshot stays; a key without one is written
        assert await a.load_state("s/p") == b"state-a" and await a.load_state("s/r") == b"r"

        await asyncio.sleep(0.4)  # a stops renewing: the lease expires on the server's clock
        assert await a.holder(3) is None
        (taken,) = await b.acquire([3], "b", ttl_ms=5_000)
        assert taken is not None and taken.previous == "a" and taken.epoch == 2  # a takeover, a new epoch
        assert await a.renew([first], ttl_ms=300) == [False]  # the old token is fenced off everywhere
        assert not await a.save_states(first, {"s/p": b"stale"}, ttl_ms=10_000, seq=9)
        assert not await a.release(first)
        assert await b.load_state("s/p") == b"state-a"  # what the new owner restores
        saved = await b.save_states(taken, {"s/p": b"state-b", "s/q": b"q"}, ttl_ms=10_000, seq=1)
        assert saved and saved.stale == ()  # a later epoch replaces whatever seq the old owner reached
        assert await a.load_state("s/p") == b"state-b" and await a.load_state("s/q") == b"q"

        assert await b.release(taken)  # a clean release: the next acquisition is no takeover
        (again,) = await a.acquire([3], "a", ttl_ms=5_000)
        assert again is not None and again.previous is None and again.epoch == 3
        got = await a.acquire([4, 5], "a", ttl_ms=5_000)
        assert all(x is not None for x in got)
        assert await b.renew([again, *[x for x in got if x is not None]], ttl_ms=5_000) == [True] * 3
    finally:
        keys = [k async for k in a.redis.scan_iter(match=f"test:coord:{unique}:*")]
        if keys:
            await a.redis.delete(*keys)
        await a.close()
        await b.close()


async def test_membership_expires_by_the_server_clock_and_lost_scripts_are_reloaded(
    redis_url: str, unique: str
) -> None:
    store = RedisLeaseStore(url=redis_url, prefix=f"test:coord:{unique}")
    await store.start()
    try:
        assert await store.heartbeat("w1", ttl_ms=300) == ["w1"]
        assert await store.heartbeat("w2", ttl_ms=5_000) == ["w1", "w2"]
        await asyncio.sleep(0.4)
        assert await store.heartbeat("w2", ttl_ms=5_000) == ["w2"]  # w1 stopped heartbeating
        await store.leave("w2")
        assert await store.heartbeat("w3", ttl_ms=5_000) == ["w3"]
        store._sha = dict.fromkeys(store._sha, "0" * 40)  # as after a Redis restart: scripts unknown, loaded again
        assert await store.heartbeat("w3", ttl_ms=5_000) == ["w3"]
        (lease,) = await store.acquire([0], "w3", ttl_ms=5_000)
        assert lease is not None
    finally:
        keys = [k async for k in store.redis.scan_iter(match=f"test:coord:{unique}:*")]
        if keys:
            await store.redis.delete(*keys)
        await store.close()
