"""Transport hop latency: publish -> consume for small messages on real Redis Streams and Kafka.

    python -m bench.transport_hops [--messages 10000] [--redis URL] [--kafka HOST:PORT]

Defaults come from CLASSPULSE_TEST_REDIS_URL / CLASSPULSE_TEST_KAFKA_BOOTSTRAP
(`. .cache/services.env` after `./dev services start`). Each message carries its send
time; the consumer runs concurrently and records receive - send. Both transports are
measured in the same run, one after the other, with the same message count and size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import time
import uuid

import numpy as np

from shared.transport.kafka import KafkaEventBus
from shared.transport.redis_streams import RedisMediaBus

_STAMP = struct.Struct("<dI")
PAYLOAD = 200  # bytes per message, about a score event


def _message(i: int) -> bytes:
    return _STAMP.pack(time.time(), i) + b"x" * (PAYLOAD - _STAMP.size)


def _summary(name: str, lat: list[float], wall: float) -> str:
    a = np.array(lat) * 1000
    return (
        f"{name:<14} n={len(a):>6}  p50={np.percentile(a, 50):6.2f} ms  p95={np.percentile(a, 95):6.2f} ms  "
        f"p99={np.percentile(a, 99):6.2f} ms  max={a.max():7.2f} ms  rate={len(a) / wall:8.0f} msg/s"
    )


async def redis_hops(url: str, n: int, pace_s: float) -> tuple[list[float], float]:
    bus = RedisMediaBus(url=url, stream=f"bench:hops:{uuid.uuid4().hex[:8]}", maxlen=max(n, 1000))
    await bus.start()
    await bus.ensure_group("bench")
    lat: list[float] = []

    async def consume() -> None:
        while len(lat) < n:
            entries = await bus.read_group("bench", "c", count=100, block_ms=1000)
            now = time.time()
            for e in entries:
                lat.append(now - _STAMP.unpack_from(e.data)[0])
            await bus.ack("bench", [e.id for e in entries])

    task = asyncio.create_task(consume())
    t0 = time.perf_counter()
    for i in range(n):
        await bus.append(_message(i))
        if pace_s:
            await asyncio.sleep(pace_s)
    await asyncio.wait_for(task, 60)
    wall = time.perf_counter() - t0
    await bus.redis.delete(bus.stream)
    await bus.close()
    return lat, wall


async def kafka_hops(bootstrap: str, n: int, pace_s: float) -> tuple[list[float], float]:
    topic = f"bench.hops.{uuid.uuid4().hex[:8]}"
    bus = KafkaEventBus(bootstrap=bootstrap)
    await bus.start()
    await bus.publish(topic, "warmup", _message(0))  # creates the topic
    consumer = bus.consumer([topic], group=f"bench-{uuid.uuid4().hex[:6]}", from_beginning=False)
    await consumer.start()
    await asyncio.sleep(2.0)  # let the group settle on its partitions
    lat: list[float] = []

    async def consume() -> None:
        while len(lat) < n:
            records = await consumer.poll(max_records=500, timeout_ms=200)
            now = time.time()
            lat.extend(now - _STAMP.unpack_from(r.value)[0] for r in records if r.key != "warmup")

    task = asyncio.create_task(consume())
    t0 = time.perf_counter()
    for i in range(n):
        await bus.publish(topic, f"session-{i % 8}", _message(i))
        if pace_s:
            await asyncio.sleep(pace_s)
    await asyncio.wait_for(task, 120)
    wall = time.perf_counter() - t0
    await consumer.close()
    await bus.close()
    return lat, wall


async def main_async(args: argparse.Namespace) -> None:
    print(f"{args.messages} messages of {PAYLOAD} B each, one producer awaiting each publish, one consumer")
    lat, wall = await redis_hops(args.redis, args.messages, args.pace)
    print(_summary("redis-streams", lat, wall))
    lat, wall = await kafka_hops(args.kafka, args.messages, args.pace)
    print(_summary("kafka", lat, wall))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--pace", type=float, default=0.0, help="sleep between publishes (s); 0 = back to back")
    p.add_argument("--redis", default=os.environ.get("CLASSPULSE_TEST_REDIS_URL", "redis://127.0.0.1:6390/0"))
    p.add_argument("--kafka", default=os.environ.get("CLASSPULSE_TEST_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
