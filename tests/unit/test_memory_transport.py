"""In-memory transports keep the same semantics as Redis Streams and Kafka."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from shared.metrics import Metrics
from shared.transport.memory import MemoryEventBus, MemoryLiveBus, MemoryMediaBus
from shared.transport.shards import shard_of

pytestmark = pytest.mark.unit


async def test_media_bus_bounded_drops_oldest_and_counts() -> None:
    metrics = Metrics(CollectorRegistry())
    bus = MemoryMediaBus(maxlen=3, metrics=metrics)
    await bus.ensure_group("g")
    for i in range(5):
        await bus.append(f"m{i}".encode(), key="s/p")
    got = await bus.read_group("g", "c1", shards=[0], count=10, block_ms=0)
    assert [e.data for e in got] == [b"m2", b"m3", b"m4"]
    assert metrics.media_dropped_total.labels("stream_full")._value.get() == 2


async def test_media_bus_claims_stale_pending_of_dead_consumer() -> None:
    bus = MemoryMediaBus(maxlen=10)
    await bus.ensure_group("g")
    await bus.append(b"a", key="s/p")
    await bus.append(b"b", key="s/p")
    first = await bus.read_group("g", "dead", shards=[0], count=10, block_ms=0)
    assert len(first) == 2
    assert await bus.claim_stale("g", "alive", shard=0, min_idle_ms=10_000, count=10) == []
    await asyncio.sleep(0.02)
    claimed = await bus.claim_stale("g", "alive", shard=0, min_idle_ms=10, count=10)
    assert [e.data for e in claimed] == [b"a", b"b"]
    await bus.ack("g", [e.id for e in claimed])
    assert await bus.length() == 0


async def test_media_bus_read_blocks_until_append() -> None:
    bus = MemoryMediaBus(maxlen=10)
    await bus.ensure_group("g")

    async def later() -> None:
        await asyncio.sleep(0.05)
        await bus.append(b"x", key="s/p")

    task = asyncio.create_task(later())
    got = await bus.read_group("g", "c", shards=[0], count=1, block_ms=2000)
    await task
    assert [e.data for e in got] == [b"x"]


async def test_media_bus_routes_each_participant_to_its_own_bounded_shard() -> None:
    metrics = Metrics(CollectorRegistry())
    bus = MemoryMediaBus(maxlen=3, shards=4, metrics=metrics)
    await bus.ensure_group("g")
    keys = [f"s/p{i}" for i in range(12)]
    placed = {key: (await bus.append(key.encode(), key=key)).shard for key in keys}
    assert placed == {key: shard_of(key, 4) for key in keys}
    assert len(set(placed.values())) > 1
    for shard in range(4):  # each reader sees exactly the participants of the shards it names
        got = await bus.read_group("g", f"c{shard}", shards=[shard], count=100, block_ms=0)
        assert [e.data.decode() for e in got] == [k for k in keys if placed[k] == shard][-3:]  # newest 3 kept
        assert all(e.shard == shard and e.id.startswith(f"{shard}/") for e in got)
        await bus.ack("g", [e.id for e in got])
    evicted = sum(max(0, list(placed.values()).count(k) - 3) for k in range(4))
    assert metrics.media_dropped_total.labels("stream_full")._value.get() == evicted  # the bound is per shard
    assert await bus.length() == 0
    hot = next(k for k in keys if placed[k] == 0)
    for i in range(5):
        await bus.append(f"{i}".encode(), key=hot)
    assert await bus.length() == 3  # one full shard does not evict the others' media
    several = await bus.read_group("g", "c", shards=[0, 1, 2, 3], count=2, block_ms=0)
    assert 1 <= len(several) <= 2  # at most count, spread over the named shards


async def test_event_bus_at_least_once_redelivers_uncommitted() -> None:
    bus = MemoryEventBus()
    for i in range(3):
        await bus.publish("t", "s1", str(i).encode())
    c1 = bus.consumer(["t"], group="g")
    await c1.start()
    assert [r.value for r in await c1.poll(max_records=2, timeout_ms=0)] == [b"0", b"1"]
    await c1.commit()
    assert [r.value for r in await c1.poll(max_records=10, timeout_ms=0)] == [b"2"]
    # crash before commit: a new member of the group gets record 2 again
    c2 = bus.consumer(["t"], group="g")
    await c2.start()
    assert [r.value for r in await c2.poll(max_records=10, timeout_ms=0)] == [b"2"]


async def test_live_bus_fan_out_and_state() -> None:
    bus = MemoryLiveBus(queue_size=2)
    async with bus.subscribe("ch") as messages:
        for i in range(3):
            await bus.publish("ch", str(i).encode())
        it = aiter(messages)
        assert [await anext(it), await anext(it)] == [b"1", b"2"]  # slow viewer keeps the latest
    await bus.set_state("k", "p1", b"v")
    assert await bus.get_state("k") == {"p1": b"v"}


async def test_event_bus_retention_bounds_memory_and_lagging_consumers_continue() -> None:
    bus = MemoryEventBus(retention=4)
    lagging = bus.consumer(["t"], group="slow")
    await lagging.start()
    for i in range(20):
        await bus.publish("t", "s", str(i).encode())
    kept = bus.records("t")
    assert 4 <= len(kept) <= 5 and kept[-1] == ("s", b"19")
    got = await lagging.poll(max_records=100, timeout_ms=0)
    assert [r.value for r in got] == [v for _, v in kept]  # continues from the oldest retained record
    assert [r.offset for r in got] == list(range(20 - len(kept), 20))  # offsets stay absolute
