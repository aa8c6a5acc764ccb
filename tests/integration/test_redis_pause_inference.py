"""A 10 s Redis pause (SIGSTOP/SIGCONT of a private redis-server) under two running inference workers.

Real Redis (media shards, leases, snapshots) and real Kafka (scores). A feeder appends 3
participants' frames at 5 fps like ingest (an append that fails during the pause is lost, as in
ingest). Asserts: neither worker ends; both read healthy again within a bound after SIGCONT;
frames sent after recovery are scored; and no score is published twice with different values
(both workers' leases expire during the pause, so the shards are taken over: a worker never
rescores media another marked as being published).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.inference.engine import InferenceEngine
from services.inference.settings import InferenceSettings
from services.inference.worker import InferenceWorker
from shared.contracts.codec import encode_media
from shared.contracts.events import ScoreEvent
from shared.contracts.topics import INFERENCE_GROUP, EventTopic
from shared.metrics import Metrics
from shared.supervise import HealthRegistry, SupervisionPolicy, Supervisor
from shared.testkit.messages import frames
from shared.testkit.scaleout import read_scores
from shared.transport.factory import Transports
from shared.transport.kafka import KafkaEventBus
from shared.transport.redis_leases import RedisLeaseStore
from shared.transport.redis_streams import RedisLiveBus, RedisMediaBus
from tests.integration.private_brokers import private_redis
from tests.integration.test_inference_pipeline import SlowNoFaces, _create_topic

pytestmark = pytest.mark.integration

PAUSE_S = 10.0
RECOVERY_BOUND_S = 15.0
PARTICIPANTS = ["p0", "p1", "p2"]
SHARDS = 4
POLICY = SupervisionPolicy(backoff_initial_s=0.1, backoff_max_s=1.0, settle_s=1.0, give_up_s=120)
SETTINGS = InferenceSettings(
    batch_max=4, batch_wait_ms=20, read_count=8, read_block_ms=50, claim_idle_ms=1000, claim_interval_s=0.5,
    max_lag_ms=1500, degrade=False, lease_ttl_ms=3000, lease_renew_ms=500, snapshot_interval_s=1.0,
)


async def _worker(name: str, redis: str, kafka: str, stream: str, topic: EventTopic[ScoreEvent]) -> tuple[
    InferenceWorker, Transports, HealthRegistry, Metrics
]:
    metrics = Metrics(CollectorRegistry())
    transports = Transports(
        media=RedisMediaBus(url=redis, stream=stream, maxlen=64, shards=SHARDS, metrics=metrics),
        events=KafkaEventBus(bootstrap=kafka, client_id=f"test-{name}", metrics=metrics),
        live=RedisLiveBus(url=redis),
        leases=RedisLeaseStore(url=redis, prefix=f"{stream}:coordination"),
    )
    await transports.start()
    engine = InferenceEngine(settings=SETTINGS, metrics=metrics, backend=SlowNoFaces(0.0))
    engine.load()
    health = HealthRegistry(service=f"inference-{name}")
    worker = InferenceWorker(
        engine=engine, transports=transports, settings=SETTINGS, metrics=metrics, consumer=name, scores_topic=topic,
        supervisor=Supervisor(health=health, policy=POLICY),
    )
    return worker, transports, health, metrics


def _values(e: ScoreEvent) -> dict[str, object]:
    return e.model_dump(exclude={"timing", "producer"})


async def test_inference_survives_a_10s_redis_pause_without_duplicate_scores(kafka_bootstrap: str, unique: str) -> None:
    stream = f"test:media:{unique}"
    topic = EventTopic(f"test.scores.{unique}", ScoreEvent)
    session = f"pause-{unique}"
    await _create_topic(kafka_bootstrap, topic.name)
    image = np.zeros((48, 64, 3), np.uint8)
    with private_redis() as redis:
        feeder = RedisMediaBus(url=redis.address, stream=stream, maxlen=64, shards=SHARDS)
        await feeder.start()
        await feeder.ensure_group(INFERENCE_GROUP)
        a = await _worker("a", redis.address, kafka_bootstrap, stream, topic)
        b = await _worker("b", redis.address, kafka_bootstrap, stream, topic)
        tasks = [asyncio.create_task(w.run()) for w, *_ in (a, b)]
        sent_at: dict[tuple[str, int], float] = {}
        failed_appends = 0
        stop_feeding = asyncio.Event()

        async def feed() -> None:
            nonlocal failed_appends
            seq = 0
            while not stop_feeding.is_set():
                for p in PARTICIPANTS:
                    msg = frames([image], session=session, participant=p, start_seq=seq)[0]
                    try:
                        await feeder.append(encode_media(msg), key=f"{session}/{p}")
                        sent_at[(p, msg.seq)] = time.time()
                    except Exception:  # ingest loses what it cannot append during the pause
                        failed_appends += 1
                seq += 1
                await asyncio.sleep(0.2)

        feeding = asyncio.create_task(feed())
        try:
            await asyncio.sleep(4.0)
            redis.pause()
            paused = time.time()
            await asyncio.sleep(PAUSE_S)
            published_before = a[0].published + b[0].published
            redis.resume()
            resumed = time.time()
            scoring_again: float | None = None
            healthy_after: dict[str, float] = {}
            loop_end = time.monotonic() + RECOVERY_BOUND_S
            while (len(healthy_after) < 2 or scoring_again is None) and time.monotonic() < loop_end:
                if scoring_again is None and a[0].published + b[0].published > published_before:
                    scoring_again = time.time() - resumed
                for name, (_, _, health, _) in (("a", a), ("b", b)):
                    if name not in healthy_after and health.healthy() and health.ready():
                        healthy_after[name] = time.time() - resumed
                await asyncio.sleep(0.1)
            assert len(healthy_after) == 2, f"workers not healthy {RECOVERY_BOUND_S} s after SIGCONT: " + str(
                {n: h.report() for n, (_, _, h, _) in (("a", a), ("b", b))}
            )
            await asyncio.sleep(6.0)  # frames sent after recovery must be scored
            stop_feeding.set()
            await feeding
            await asyncio.sleep(3.0)
            assert not any(t.done() for t in tasks), "an inference worker ended"
        finally:
            stop_feeding.set()
            for w, *_ in (a, b):
                w.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            for _, transports, _, _ in (a, b):
                await transports.close()
            await feeder.close()
    scores = await read_scores(kafka_bootstrap, session, topic=topic.name)
    by_id: dict[str, list[ScoreEvent]] = {}
    for e in scores:
        by_id.setdefault(e.event_id, []).append(e)
    different = [i for i, es in by_id.items() if any(_values(e) != _values(es[0]) for e in es)]
    assert not different, f"scored twice with different values: {different[:5]}"
    recovered = max(healthy_after.values())
    late = {(p, s) for (p, s), t in sent_at.items() if t > resumed + recovered + 1.0 and t < time.time() - 4.0}
    scored = {(e.participant, e.seq) for e in scores}
    missing = {(p, s) for p, s in late if (p, 2 * s) not in scored}  # a video step's seq is 2 * frame seq
    assert late and not missing, f"{len(missing)} of {len(late)} frames sent after recovery were not scored"
    assert scoring_again is not None and scoring_again < RECOVERY_BOUND_S
    drops = {
        reason: sum(m.registry.get_sample_value("classpulse_media_dropped_total", {"reason": reason}) or 0
                    for *_, m in (a, b))
        for reason in ("inference_stale", "in_flight_elsewhere", "stream_full", "evicted_pending")
    }
    print(
        f"\nredis pause {PAUSE_S:.0f} s: workers healthy after SIGCONT in "
        + ", ".join(f"{n}={t:.1f}s" for n, t in sorted(healthy_after.items()))
        + f"; scoring again after {scoring_again}s; frames appended {len(sent_at)}"
        f", scores {len(scores)} ({len(by_id)} distinct ids, {len(scores) - len(by_id)} same-value repeats); "
        f"appends failed during pause {failed_appends}; dropped {drops}; paused at {paused:.0f}"
    )
