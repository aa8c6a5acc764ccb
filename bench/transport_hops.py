"""Transport hop latency: publish -> consume for small messages on real Redis Streams and Kafka.

    python -m bench.transport_hops [--messages 10000] [--redis URL] [--kafka HOST:PORT]

Defaults come from CLASSPULSE_TEST_REDIS_URL / CLASSPULSE_TEST_KAFKA_BOOTSTRAP
(`. .cache/services.env` after `./dev services start`). Each message carries its send
time; the consumer runs in its own process (as a real next stage would) and records
receive - send. Both transports are measured in the same run, one after the other, with
the same message count, size and pace.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
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


async def _redis_consume(url: str, stream: str, n: int, ready: object) -> list[float]:
    bus = RedisMediaBus(url=url, stream=stream, maxlen=max(n, 1000))
    await bus.start()
    await bus.ensure_group("bench")
    ready.set()  # type: ignore[attr-defined]
    lat: list[float] = []
    while len(lat) < n:
        entries = await bus.read_group("bench", "c", shards=[0], count=100, block_ms=1000)
        now = time.time()
        lat.extend(now - _STAMP.unpack_from(e.data)[0] for e in entries)
        await bus.ack("bench", [e.id for e in entries])
    await bus.redis.delete(bus.stream_name(0))
    await bus.close()
    return lat


async def _kafka_consume(bootstrap: str, topic: str, n: int, ready: object) -> list[float]:
    bus = KafkaEventBus(bootstrap=bootstrap)
    consumer = bus.consumer([topic], group=f"bench-{uuid.uuid4().hex[:6]}", from_beginning=False)
    await consumer.start()
    for _ in range(10):  # wait for the partition assignment before the producer starts
        await consumer.poll(max_records=1, timeout_ms=300)
    ready.set()  # type: ignore[attr-defined]
    lat: list[float] = []
    while len(lat) < n:
        records = await consumer.poll(max_records=500, timeout_ms=200)
        now = time.time()
        lat.extend(now - _STAMP.unpack_from(r.value)[0] for r in records if r.key != "warmup")
    await consumer.close()
    return lat


def _consumer_process(kind: str, address: str, name: str, n: int, ready: object, out: object) -> None:
    consume = _redis_consume if kind == "redis" else _kafka_consume
    out.put(asyncio.run(consume(address, name, n, ready)))  # type: ignore[attr-defined]


async def _produce(kind: str, address: str, name: str, n: int, pace_s: float) -> tuple[list[float], float]:
    ctx = mp.get_context("spawn")
    ready, out = ctx.Event(), ctx.Queue()
    if kind == "redis":
        bus: RedisMediaBus | KafkaEventBus = RedisMediaBus(url=address, stream=name, maxlen=max(n, 1000))
    else:
        bus = KafkaEventBus(bootstrap=address)
    await bus.start()
    if isinstance(bus, KafkaEventBus):
        await bus.publish(name, "warmup", _message(0))  # creates the topic before the consumer subscribes
    proc = ctx.Process(target=_consumer_process, args=(kind, address, name, n, ready, out))
    proc.start()
    await asyncio.get_running_loop().run_in_executor(None, ready.wait, 60)
    t0 = time.perf_counter()
    for i in range(n):
        if isinstance(bus, RedisMediaBus):
            await bus.append(_message(i), key="bench/p")
        else:
            await bus.publish(name, f"session-{i % 8}", _message(i))
        if pace_s:
            await asyncio.sleep(pace_s)
    lat: list[float] = await asyncio.get_running_loop().run_in_executor(None, out.get, True, 120)
    wall = time.perf_counter() - t0
    proc.join(10)
    await bus.close()
    return lat, wall


async def main_async(args: argparse.Namespace) -> None:
    print(
        f"{args.messages} messages of {PAYLOAD} B each; one producer awaiting each publish "
        f"(pace {args.pace * 1000:.1f} ms), one consumer in its own process"
    )
    suffix = uuid.uuid4().hex[:8]
    lat, wall = await _produce("redis", args.redis, f"bench:hops:{suffix}", args.messages, args.pace)
    print(_summary("redis-streams", lat, wall))
    lat, wall = await _produce("kafka", args.kafka, f"bench.hops.{suffix}", args.messages, args.pace)
    print(_summary("kafka", lat, wall))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--pace", type=float, default=0.001, help="sleep between publishes (s); 0 = back to back")
    p.add_argument("--redis", default=os.environ.get("CLASSPULSE_TEST_REDIS_URL", "redis://127.0.0.1:6390/0"))
    p.add_argument("--kafka", default=os.environ.get("CLASSPULSE_TEST_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
