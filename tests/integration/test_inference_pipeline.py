"""Media in through real Redis Streams -> inference workers -> scores out through real Kafka.

A worker killed mid-stream leaves its media pending in the consumer group; another worker
claims and scores it, so every frame still yields its score (ids stable, trail intact).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.inference.engine import InferenceEngine
from services.inference.perception import PerceptionRequest, PerceptionResult
from services.inference.settings import InferenceSettings
from services.inference.worker import InferenceWorker
from shared.contracts.codec import encode_media
from shared.contracts.events import ScoreEvent
from shared.contracts.topics import INFERENCE_GROUP, EventTopic
from shared.metrics import Metrics
from shared.testkit.messages import frames
from shared.transport.factory import Transports
from shared.transport.kafka import KafkaEventBus
from shared.transport.live import read_state
from shared.transport.redis_leases import RedisLeaseStore
from shared.transport.redis_streams import RedisLiveBus, RedisMediaBus
from shared.transport.typed import EventSubscriber

pytestmark = pytest.mark.integration

FRAMES_PER_STREAM = 10
STREAMS = 3


class SlowNoFaces:
    """Perception fake that takes ``delay`` seconds per batch (a worker busy on a batch when killed)."""

    name = "slow"

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def load(self) -> None:
        return None

    def analyze(self, requests: Sequence[PerceptionRequest]) -> list[PerceptionResult]:
        time.sleep(self.delay)
        return [PerceptionResult(face=None, pose=None, pose_ran=r.want_pose) for r in requests]

    def forget(self, key: str) -> None:
        return None

    def close(self) -> None:
        return None


async def _create_topic(bootstrap: str, name: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name=name, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


async def _worker(
    name: str, *, redis_url: str, kafka: str, stream: str, topic: EventTopic[ScoreEvent], delay: float
) -> tuple[InferenceWorker, Transports]:
    metrics = Metrics(CollectorRegistry())
    transports = Transports(
        media=RedisMediaBus(url=redis_url, stream=stream, maxlen=1000, metrics=metrics),
        events=KafkaEventBus(bootstrap=kafka, client_id=f"test-{name}"),
        live=RedisLiveBus(url=redis_url),
        leases=RedisLeaseStore(url=redis_url, prefix=f"{stream}:coordination"),
    )
    await transports.start()
    settings = InferenceSettings(
        batch_max=4,
        batch_wait_ms=10,
        read_count=8,
        read_block_ms=20,
        claim_idle_ms=300,
        claim_interval_s=0.2,
        max_lag_ms=0,  # this box is shared and slow: never drop frames for lateness here
    )
    engine = InferenceEngine(settings=settings, metrics=metrics, backend=SlowNoFaces(delay))
    engine.load()
    worker = InferenceWorker(
        engine=engine, transports=transports, settings=settings, metrics=metrics, consumer=name, scores_topic=topic
    )
    return worker, transports


async def test_scores_flow_redis_to_kafka_and_survive_a_killed_worker(
    redis_url: str, kafka_bootstrap: str, unique: str
) -> None:
    stream = f"test:media:{unique}"
    topic = EventTopic(f"test.scores.{unique}", ScoreEvent)
    session = f"s-{unique}"
    await _create_topic(kafka_bootstrap, topic.name)  # a consumer subscribed before auto-creation waits 5 min
    a, a_transports = await _worker(
        "a", redis_url=redis_url, kafka=kafka_bootstrap, stream=stream, topic=topic, delay=1.0
    )
    b, b_transports = await _worker(
        "b", redis_url=redis_url, kafka=kafka_bootstrap, stream=stream, topic=topic, delay=0.0
    )
    media = a_transports.media
    assert isinstance(media, RedisMediaBus)
    await media.ensure_group(INFERENCE_GROUP)
    image = np.zeros((96, 128, 3), np.uint8)
    sent = [
        m for p in range(STREAMS) for m in frames([image] * FRAMES_PER_STREAM, session=session, participant=f"p{p}")
    ]
    for msg in sent:
        await media.append(encode_media(msg), key=f"{msg.session}/{msg.participant}")

    a_task = asyncio.create_task(a.run())
    try:
        for _ in range(100):  # let worker a take work and start its (slow) first batch
            pending = await media.redis.xpending(media.stream_name(0), INFERENCE_GROUP)
            if pending["pending"] >= 4:
                break
            await asyncio.sleep(0.05)
        assert pending["pending"] >= 4
    finally:
        a_task.cancel()  # killed mid-batch: nothing it holds gets acked
        await asyncio.gather(a_task, return_exceptions=True)
    assert a.published == 0
    orphaned = (await media.redis.xpending(media.stream_name(0), INFERENCE_GROUP))["pending"]
    assert orphaned > 0

    b_task = asyncio.create_task(b.run())
    sub = EventSubscriber(bus=b_transports.events, topic=topic, group=f"check-{unique}")
    await sub.start()
    got: dict[str, ScoreEvent] = {}
    try:
        for _ in range(60):
            for event in await sub.poll(timeout_ms=500):
                got[event.event_id] = event
            if len(got) >= len(sent):
                break
    finally:
        b.stop()
        await asyncio.wait_for(b_task, 10)  # finishes (publishes + acks) its current batch
        await sub.close()
    pending_after = (await media.redis.xpending(media.stream_name(0), INFERENCE_GROUP))["pending"]
    want = {ScoreEvent.make_id(m.session, m.participant, 2 * m.seq) for m in sent}
    assert set(got) == want  # every frame scored once the dead worker's media was claimed
    assert pending_after == 0 and await media.length() == 0
    for msg in sent:
        event = got[ScoreEvent.make_id(msg.session, msg.participant, 2 * msg.seq)]
        assert event.media_time == msg.media_time
        assert event.timing.capture_ts == msg.timing.capture_ts
        stamp = event.timing.stage("inference")
        assert stamp is not None and stamp.received >= msg.timing.capture_ts and stamp.emitted >= stamp.received
    live = await read_state(b_transports.live, session)
    assert {m.event.participant for m in live if m.kind == "score"} == {f"p{p}" for p in range(STREAMS)}
    await media.redis.delete(media.stream_name(0))
    coordination = [key async for key in media.redis.scan_iter(match=f"{stream}:coordination:*")]
    if coordination:
        await media.redis.delete(*coordination)
    for transports in (a_transports, b_transports):
        await transports.close()
