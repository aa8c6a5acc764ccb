"""Redis Streams media bus and live bus against a real Redis server."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from shared.metrics import Metrics
from shared.transport.redis_streams import RedisLiveBus, RedisMediaBus
from shared.transport.shards import shard_of

pytestmark = pytest.mark.integration


async def test_media_round_trip_bounded_drops_counted(redis_url: str, unique: str) -> None:
    metrics = Metrics(CollectorRegistry())
    bus = RedisMediaBus(url=redis_url, stream=f"test:media:{unique}", maxlen=4, metrics=metrics)
    await bus.start()
    try:
        await bus.ensure_group("inference")
        results = [await bus.append(f"m{i}".encode(), key="s/p") for i in range(6)]
        assert sum(r.evicted for r in results) == 2
        assert metrics.media_dropped_total.labels("stream_full")._value.get() == 2
        got = await bus.read_group("inference", "c1", shards=[0], count=10, block_ms=100)
        assert [e.data for e in got] == [b"m2", b"m3", b"m4", b"m5"]  # keep-latest: oldest evicted
        await bus.ack("inference", [e.id for e in got])
        assert await bus.length() == 0  # acked entries leave the stream, so the bound measures backlog
        # with the backlog drained, appends no longer count as drops
        assert (await bus.append(b"again", key="s/p")).evicted == 0
    finally:
        await bus.redis.delete(bus.stream_name(0))
        await bus.close()


async def test_dead_consumer_pending_entries_are_claimed(redis_url: str, unique: str) -> None:
    bus = RedisMediaBus(url=redis_url, stream=f"test:media:{unique}", maxlen=100)
    await bus.start()
    try:
        await bus.ensure_group("inference")
        for i in range(3):
            await bus.append(f"m{i}".encode(), key="s/p")
        taken = await bus.read_group("inference", "worker-dead", shards=[0], count=10, block_ms=100)
        assert len(taken) == 3  # the dead worker never acks
        assert await bus.read_group("inference", "worker-alive", shards=[0], count=10, block_ms=50) == []
        await asyncio.sleep(0.15)
        claimed = await bus.claim_stale("inference", "worker-alive", shard=0, min_idle_ms=100, count=10)
        assert [e.data for e in claimed] == [b"m0", b"m1", b"m2"]
        await bus.ack("inference", [e.id for e in claimed])
        assert await bus.claim_stale("inference", "worker-alive", shard=0, min_idle_ms=0, count=10) == []
    finally:
        await bus.redis.delete(bus.stream_name(0))
        await bus.close()


async def test_media_shards_are_separate_bounded_streams(redis_url: str, unique: str) -> None:
    metrics = Metrics(CollectorRegistry())
    bus = RedisMediaBus(url=redis_url, stream=f"test:media:{unique}", maxlen=8, shards=4, metrics=metrics)
    await bus.start()
    try:
        await bus.ensure_group("inference")
        keys = [f"s/p{i}" for i in range(10)]
        placed = {}
        for key in keys:
            result = await bus.append(key.encode(), key=key)
            placed[key] = result.shard
            assert result.shard == shard_of(key, 4) and result.id.startswith(f"{result.shard}/")
        for shard in range(4):
            assert await bus.redis.xlen(bus.stream_name(shard)) == list(placed.values()).count(shard)
        mine = [0, 2]
        got = await bus.read_group("inference", "w", shards=mine, count=100, block_ms=100)
        assert sorted(e.data.decode() for e in got) == sorted(k for k, v in placed.items() if v in mine)
        assert {e.shard for e in got} <= set(mine)
        await bus.ack("inference", [e.id for e in got])  # ids of two shards in one call
        assert await bus.length() == sum(1 for v in placed.values() if v not in mine)
        hot = keys[0]
        for i in range(12):
            await bus.append(f"{i}".encode(), key=hot)
        assert await bus.redis.xlen(bus.stream_name(placed[hot])) == 8  # bounded per shard
        assert metrics.media_dropped_total.labels("stream_full")._value.get() > 0
    finally:
        for shard in range(4):
            await bus.redis.delete(bus.stream_name(shard))
        await bus.close()


async def test_live_bus_pubsub_and_state(redis_url: str, unique: str) -> None:
    bus = RedisLiveBus(url=redis_url)
    await bus.start()
    try:
        async with bus.subscribe(f"live:{unique}") as messages:
            await asyncio.sleep(0.05)
            await bus.publish(f"live:{unique}", b"hello")
            got = await asyncio.wait_for(anext(aiter(messages)), 5)
        assert got == b"hello"
        await bus.set_state(f"state:{unique}", "p1", b"{}")
        assert await bus.get_state(f"state:{unique}") == {"p1": b"{}"}
    finally:
        await bus.redis.delete(f"state:{unique}")
        await bus.close()


async def test_media_append_survives_a_lost_script(redis_url: str, unique: str) -> None:
    bus = RedisMediaBus(url=redis_url, stream=f"test:media:{unique}", maxlen=8)
    await bus.start()
    try:
        bus._append_sha = "0" * 40  # as after a Redis restart: the server no longer knows the script
        assert (await bus.append(b"x", key="s/p")).evicted == 0
        assert await bus.length() == 1
    finally:
        await bus.redis.delete(bus.stream_name(0))
        await bus.close()


async def test_marked_entries_keep_their_results_until_acked(redis_url: str, unique: str) -> None:
    bus = RedisMediaBus(url=redis_url, stream=f"test:media:{unique}", maxlen=100, shards=2)
    await bus.start()
    try:
        await bus.ensure_group("inference")
        by_shard: dict[int, list[str]] = {0: [], 1: []}
        for i in range(20):
            result = await bus.append(b"x", key=f"s/p{i}")
            by_shard[result.shard].append(result.id)
        a, b = by_shard[0][:3], by_shard[0][3:5]
        other = by_shard[1][:2]
        await bus.mark_publishing([(a, b"scores of a"), (b, b""), (other, b"scores of other")])
        marked = await bus.publishing(0)
        assert marked == {**dict.fromkeys(a, b"scores of a"), **dict.fromkeys(b, b"")}  # others refer to the first
        assert await bus.publishing(1) == dict.fromkeys(other, b"scores of other")
        with pytest.raises(ValueError, match="one shard"):
            await bus.mark_publishing([([a[0], other[0]], b"mixed")])
        await bus.read_group("inference", "w", shards=[0, 1], count=100, block_ms=100)
        await bus.ack("inference", [*a[1:], *other])
        assert await bus.publishing(0) == {a[0]: b"scores of a", **dict.fromkeys(b, b"")}
        assert await bus.publishing(1) == {}
        await bus.ack("inference", [a[0]])
        assert await bus.publishing(0) == dict.fromkeys(b, b"")
    finally:
        for shard in range(2):
            await bus.redis.delete(bus.stream_name(shard), f"{bus.stream_name(shard)}:results")
        await bus.close()
