"""Aggregator throughput (faust vs raw aiokafka) and score -> aggregate latency, on real Kafka.

    python -m bench.aggregator_throughput [--sessions 4] [--seconds 40] [--partitions 4]
                                          [--live-seconds 30] [--students 30]

Defaults for Kafka/Redis come from CLASSPULSE_TEST_KAFKA_BOOTSTRAP / CLASSPULSE_TEST_REDIS_URL
(`. .cache/services.env`). Everything runs side by side in one run on the same machine:

1. **Bare consumption**: one topic pre-filled with ``sessions x students x 5/s x seconds``
   score records, read by a raw aiokafka consumer and by a faust agent (``take_events``),
   both counting only; rate = records / (last record - first record).
2. **Full aggregation**: the same records through ``classpulse aggregator --engine plain``
   (one aiokafka consumer, state in memory) and ``--engine faust`` (agent + rocksdb table
   snapshots + changelog); rate = records / time between the first and the last output.
3. **Live latency**: a faust worker on the wall clock, ``students`` x 5 events/s paced in real
   time; for each 1 s window: score capture -> aggregate received (p50/p95, includes the
   window's close delay ``lateness + max_gap``), window closable -> received (pipeline
   only), and the aggregator's own stage time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.aggregator.scripted import Behaviour, Script, lifecycle_event, score_event
from services.aggregator.settings import AggregatorSettings
from services.aggregator.topics_setup import ensure_topics
from shared.contracts.codec import EventCodec
from shared.contracts.events import ClassAggregate, LifecycleEvent, ScoreEvent

ROOT = Path(__file__).resolve().parents[1]
FPS = 5


def _behaviour(i: int) -> object:
    return lambda t: Behaviour(speaking=int(t) % 30 == i % 30, attentive=(int(t) + i) % 7 != 0,
                               hand_raised=int(t / 5) % 10 == i % 10, engagement=((i * 7 + int(t)) % 10) / 10)


def scripted(prefix: str, sessions: int, students: int, seconds: float) -> list[tuple[str, str, bytes]]:
    """(topic, key, value) of every score, then each session's end, in time order."""
    codec, life = EventCodec(ScoreEvent), EventCodec(LifecycleEvent)
    out: list[tuple[str, str, bytes]] = []
    for k in range(sessions):
        s = Script(session=f"bench-{k}", base=1_700_000_000.0, step_s=1 / FPS)
        for i in range(students):
            s.add(f"s{i:02d}", _behaviour(i), end=seconds)  # type: ignore[arg-type]
        out += [(f"{prefix}classpulse.scores", e.session, codec.encode(e)) for e in s.events()]
        end = lifecycle_event(session=s.session, participant="s00", kind="session_ended", t=seconds,
                              base=s.base)
        out.append((f"{prefix}classpulse.lifecycle", s.session, life.encode(end)))
    return out


async def produce(bootstrap: str, records: list[tuple[str, str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key.encode()) for topic, key, value in records]
        await producer.flush()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def raw_consume(bootstrap: str, topic: str, n: int) -> float:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
                                auto_offset_reset="earliest", enable_auto_commit=True)
    await consumer.start()
    count, first, last = 0, 0.0, 0.0
    try:
        while count < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            for messages in batches.values():
                if messages and not first:
                    first = time.perf_counter()
                count += len(messages)
            last = time.perf_counter()
    finally:
        await consumer.stop()
    return n / (last - first)


def worker(env: dict[str, str], args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def faust_count(bootstrap: str, topic: str, n: int, tmp: Path) -> float:
    result = tmp / f"count-{uuid.uuid4().hex[:6]}.json"
    env = {**os.environ, "BENCH_BOOTSTRAP": bootstrap, "BENCH_TOPIC": topic, "BENCH_N": str(n),
           "BENCH_RESULT": str(result), "BENCH_DIR": str(tmp)}
    proc = worker(env, ["-m", "bench.aggregator_faust_count"], tmp / "faust-count.log")
    try:
        deadline = time.monotonic() + 240
        while not result.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
        if not result.exists():
            raise RuntimeError("faust counting agent gave no result; see " + str(tmp / "faust-count.log"))
        return float(json.loads(result.read_text())["rate"])
    finally:
        stop(proc)


def aggregator_env(bootstrap: str, redis_url: str, prefix: str, engine: str, tmp: Path, clock: str,
                   partitions: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLASSPULSE_")}
    env.update({
        "CLASSPULSE_KAFKA_BOOTSTRAP": bootstrap, "CLASSPULSE_REDIS_URL": redis_url,
        "CLASSPULSE_AGGREGATOR_APP_ID": f"bench-{engine}-{uuid.uuid4().hex[:6]}",
        "CLASSPULSE_AGGREGATOR_TOPIC_PREFIX": prefix, "CLASSPULSE_AGGREGATOR_ENGINE": engine,
        "CLASSPULSE_AGGREGATOR_PARTITIONS": str(partitions), "CLASSPULSE_AGGREGATOR_CLOCK": clock,
        "CLASSPULSE_AGGREGATOR_DATA_DIR": str(tmp / f"state-{engine}-{prefix}"),
        "CLASSPULSE_AGGREGATOR_METRICS_PORT": "0", "CLASSPULSE_AGGREGATOR_END_GRACE_S": "1",
        "CLASSPULSE_AGGREGATOR_BROKER_SESSION_TIMEOUT_S": "6",
        "CLASSPULSE_AGGREGATOR_BROKER_REBALANCE_TIMEOUT_S": "6",
        "CLASSPULSE_AGGREGATOR_BROKER_HEARTBEAT_INTERVAL_S": "0.5",
    })
    return env


async def aggregate_rate(bootstrap: str, redis_url: str, prefix: str, engine: str, tmp: Path, n: int,
                         sessions: int, seconds: float, partitions: int) -> float:
    env = aggregator_env(bootstrap, redis_url, prefix, engine, tmp, "event", partitions)
    proc = worker(env, ["-m", "services.cli", "aggregator"], tmp / f"agg-{engine}.log")
    codec = EventCodec(ClassAggregate)
    last_window = f"/tumbling/1/{int(seconds) - 1}"
    consumer = AIOKafkaConsumer(f"{prefix}classpulse.aggregates", bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    first = last = 0.0
    done: set[str] = set()
    deadline = time.monotonic() + 300
    try:
        while len(done) < sessions and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            now = time.perf_counter()
            for messages in batches.values():
                for m in messages:
                    first = first or now
                    a = codec.decode(m.value or b"")
                    if a.event_id.endswith(last_window):
                        done.add(a.session)
                        last = now
    finally:
        await consumer.stop()
        stop(proc)
    if len(done) < sessions:
        raise RuntimeError(f"{engine} aggregator did not finish; see {tmp / f'agg-{engine}.log'}")
    return n / (last - first)


async def live_latency(bootstrap: str, redis_url: str, tmp: Path, students: int, seconds: float,
                       partitions: int) -> dict[str, list[float]]:
    prefix = f"bl{uuid.uuid4().hex[:6]}."
    await ensure_topics(bootstrap=bootstrap, settings=AggregatorSettings(topic_prefix=prefix, partitions=partitions))
    env = aggregator_env(bootstrap, redis_url, prefix, "faust", tmp, "wall", partitions)
    proc = worker(env, ["-m", "services.cli", "aggregator"], tmp / "agg-live.log")
    codec, out = EventCodec(ScoreEvent), EventCodec(ClassAggregate)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    consumer = AIOKafkaConsumer(f"{prefix}classpulse.aggregates", bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await producer.start()
    await consumer.start()
    res: dict[str, list[float]] = {"score_to_aggregate": [], "closable_to_received": [], "stage": []}
    session = f"live-{uuid.uuid4().hex[:6]}"
    try:
        # warm-up: wait until the worker answers at all (startup and group join take seconds)
        seq = 0
        warm_deadline = time.monotonic() + 120
        ready = False
        while not ready and time.monotonic() < warm_deadline:
            t = time.time()
            ev = score_event(session="warmup-" + session, participant="w", seq=seq, t=t - 1.7e9, base=1.7e9,
                             b=Behaviour())
            await producer.send_and_wait(f"{prefix}classpulse.scores", codec.encode(ev), key=ev.session.encode())
            seq += 1
            batches = await consumer.getmany(timeout_ms=200)
            ready = any(messages for messages in batches.values())
        if not ready:
            raise RuntimeError("live aggregator never answered; see " + str(tmp / "agg-live.log"))

        async def pace() -> None:
            start = time.time()
            for n in range(int(seconds * FPS)):
                target = start + n / FPS
                await asyncio.sleep(max(0.0, target - time.time()))
                now = time.time()
                for i in range(students):
                    ev = score_event(session=session, participant=f"s{i:02d}", seq=n, t=now - 1.7e9, base=1.7e9,
                                     b=Behaviour(speaking=i == n % students))
                    await producer.send(f"{prefix}classpulse.scores", codec.encode(ev), key=session.encode())

        pacer = asyncio.create_task(pace())
        closing = float(env.get("CLASSPULSE_AGGREGATOR_LATENESS_S", "1.0")) + 0.5
        drain_until = float("inf")
        while time.monotonic() < drain_until:
            if pacer.done() and drain_until == float("inf"):
                drain_until = time.monotonic() + closing + 2.0
            batches = await consumer.getmany(timeout_ms=200)
            now = time.time()
            for messages in batches.values():
                for m in messages:
                    a = out.decode(m.value or b"")
                    if a.session != session or a.window.kind != "tumbling" or a.window.size_s != 1.0:
                        continue
                    end = a.timing.capture_ts
                    res["closable_to_received"].append(now - (end + closing))
                    stamp = a.timing.stage("aggregator")
                    if stamp is not None:
                        res["stage"].append(stamp.emitted - stamp.received)
                    # the window's scores were captured (and published) at end-1.0 .. end-0.2
                    res["score_to_aggregate"] += [now - (end - 1.0 + k / FPS) for k in range(FPS)]
        await pacer
    finally:
        await producer.stop()
        await consumer.stop()
        stop(proc)
    return res


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs), q)) if xs else float("nan")


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kafka", default=os.environ.get("CLASSPULSE_TEST_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    p.add_argument("--redis", default=os.environ.get("CLASSPULSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--sessions", type=int, default=4)
    p.add_argument("--students", type=int, default=30)
    p.add_argument("--seconds", type=float, default=40.0, help="session length of the pre-filled sessions")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--live-seconds", type=float, default=30.0)
    p.add_argument("--skip", default="", help="comma list of parts to skip: bare,aggregate,live")
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    tmp = Path(tempfile.mkdtemp(prefix="bench-agg-"))
    n = args.sessions * args.students * int(args.seconds * FPS)
    print(f"# aggregator bench: {args.sessions} sessions x {args.students} students x {FPS}/s x {args.seconds:g} s "
          f"= {n} scores, {args.partitions} partitions; logs in {tmp}")
    prefixes = {engine: f"b{uuid.uuid4().hex[:6]}." for engine in ("plain", "faust")}
    for prefix in prefixes.values():
        await ensure_topics(bootstrap=args.kafka,
                            settings=AggregatorSettings(topic_prefix=prefix, partitions=args.partitions))
        t0 = time.perf_counter()
        await produce(args.kafka, scripted(prefix, args.sessions, args.students, args.seconds))
        print(f"pre-filled {prefix}classpulse.scores in {time.perf_counter() - t0:.1f} s")
    if "bare" not in skip:
        topic = f"{prefixes['plain']}classpulse.scores"
        raw = await raw_consume(args.kafka, topic, n)
        fst = faust_count(args.kafka, topic, n, tmp)
        print(f"bare consumption   raw aiokafka {raw:9.0f} rec/s   faust agent {fst:9.0f} rec/s   "
              f"faust/raw = {fst / raw:.2f}")
    if "aggregate" not in skip:
        rates: dict[str, float] = {}
        for engine in ("plain", "faust"):
            rates[engine] = await aggregate_rate(args.kafka, args.redis, prefixes[engine], engine, tmp, n,
                                                 args.sessions, args.seconds, args.partitions)
        print(f"full aggregation   plain aiokafka {rates['plain']:8.0f} scores/s   faust {rates['faust']:8.0f} "
              f"scores/s   faust/plain = {rates['faust'] / rates['plain']:.2f}")
        raw = await raw_consume(args.kafka, f"{prefixes['faust']}classpulse.scores", n)
        print(f"full aggregation   faust aggregator / bare raw aiokafka consumer = {rates['faust'] / raw:.3f}")
    if "live" not in skip:
        res = await live_latency(args.kafka, args.redis, tmp, args.students, args.live_seconds, args.partitions)
        for name, xs in res.items():
            print(f"live {args.students} students x {FPS}/s  {name:<22} n={len(xs):>5}  "
                  f"p50={pct(xs, 50) * 1000:7.1f} ms  p95={pct(xs, 95) * 1000:7.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
