"""Inference worker under broker faults, on in-memory transports with injected Redis errors.

A Redis ``TimeoutError`` in the reader must not end it; an ack that fails is retried (the
scores are not published again); a worker taking a shard over never scores again what the
previous owner marked as being published publishes the scores recorded with the marks (the very
same events, never scored again), and scores the rest; a batch
that acks its entries while a claim of them is on its way does not have them scored again; a
batch that failed or was cancelled after it changed its participants' states has them scored
again from the last good snapshot (never dropped as repeats).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.inference.engine import InferenceEngine
from services.inference.perception import PerceptionRequest, PerceptionResult
from services.inference.settings import InferenceSettings
from services.inference.worker import InferenceWorker
from shared.contracts.codec import EventCodec, decode_media, encode_media
from shared.contracts.events import ScoreEvent
from shared.contracts.topics import INFERENCE_GROUP, SCORES
from shared.metrics import Metrics
from shared.supervise import HealthRegistry, SupervisionPolicy, Supervisor
from shared.testkit.messages import frames
from shared.transport.base import StreamEntry
from shared.transport.factory import Transports
from shared.transport.leases import MemoryLeaseStore
from shared.transport.memory import MemoryEventBus, MemoryLiveBus, MemoryMediaBus
from tests.unit.test_inference_worker_leases import NoFaces

pytestmark = pytest.mark.unit

SETTINGS = InferenceSettings(
    batch_max=4, batch_wait_ms=5, read_block_ms=5, max_lag_ms=0, lease_ttl_ms=600, lease_renew_ms=100,
    snapshot_interval_s=0.2, claim_idle_ms=200, claim_interval_s=0.1,
)
POLICY = SupervisionPolicy(backoff_initial_s=0.01, backoff_max_s=0.05, settle_s=0.1, give_up_s=30)
IMAGE = np.zeros((48, 64, 3), np.uint8)


class FlakyMedia(MemoryMediaBus):
    """A media bus whose reads and acks fail (like a paused Redis) while ``down`` is set."""

    def __init__(self) -> None:
        super().__init__(maxlen=1000, shards=1)
        self.down_reads = False
        self.failing_acks = 0
        self.read_errors = 0

    async def read_group(
        self, group: str, consumer: str, *, shards: Sequence[int], count: int, block_ms: int
    ) -> list[StreamEntry]:
        if self.down_reads:
            self.read_errors += 1
            raise RedisTimeoutError("Timeout reading from 127.0.0.1:6379")
        return await super().read_group(group, consumer, shards=shards, count=count, block_ms=block_ms)

    async def ack(self, group: str, ids: Sequence[str]) -> None:
        if self.failing_acks and ids:
            self.failing_acks -= 1
            raise RedisConnectionError("Connection reset by peer")
        await super().ack(group, ids)


def _worker(name: str, media: MemoryMediaBus, events: MemoryEventBus, leases: MemoryLeaseStore,
            health: HealthRegistry, backend: NoFaces | None = None) -> tuple[InferenceWorker, Metrics]:
    metrics = Metrics(CollectorRegistry())
    engine = InferenceEngine(settings=SETTINGS, metrics=metrics, backend=backend or NoFaces())
    engine.load()
    transports = Transports(media=media, events=events, live=MemoryLiveBus(), leases=leases)
    worker = InferenceWorker(
        engine=engine, transports=transports, settings=SETTINGS, metrics=metrics, consumer=name,
        supervisor=Supervisor(health=health, policy=POLICY),
    )
    return worker, metrics


async def _send(media: MemoryMediaBus, participant: str, start: int, n: int) -> list[str]:
    ids = []
    for msg in frames([IMAGE] * n, session="s", participant=participant, start_seq=start):
        ids.append((await media.append(encode_media(msg), key=f"s/{participant}")).id)
    return ids


def _scores(events: MemoryEventBus) -> list[ScoreEvent]:
    return [EventCodec(ScoreEvent).decode(v) for _, v in events.records(SCORES.name)]


async def _drained(media: MemoryMediaBus, within: float = 2.0) -> None:
    """Wait (bounded) until every entry was acked; the caller asserts the length after."""
    for _ in range(int(within / 0.02)):
        if await media.length() == 0:
            return
        await asyncio.sleep(0.02)


async def _until(check: object, what: str, within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not check():  # type: ignore[operator]
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_a_redis_timeout_in_the_reader_is_retried_and_reading_continues() -> None:
    media, events, health = FlakyMedia(), MemoryEventBus(), HealthRegistry(service="inference")
    worker, _ = _worker("a", media, events, MemoryLeaseStore(), health)
    task = asyncio.create_task(worker.run())
    try:
        await _send(media, "p", 0, 4)
        await _until(lambda: len(_scores(events)) == 4, "the first frames")
        media.down_reads = True
        await _until(lambda: media.read_errors >= 3, "reads to fail")
        assert health.tasks()["inference-reader"].state == "retrying" and not health.healthy()
        await _send(media, "p", 4, 4)
        media.down_reads = False
        await _until(lambda: len(_scores(events)) == 8, "frames sent during the outage")
        await _until(lambda: health.healthy(), "the reader to read healthy again")
    finally:
        worker.stop()
        await asyncio.wait_for(task, 5)
    out = _scores(events)
    assert sorted(e.seq for e in out) == list(range(0, 16, 2)) and len({e.event_id for e in out}) == 8
    assert not task.exception()


async def test_a_failed_ack_is_retried_and_nothing_is_published_twice() -> None:
    media, events, health = FlakyMedia(), MemoryEventBus(), HealthRegistry(service="inference")
    worker, _ = _worker("a", media, events, MemoryLeaseStore(), health)
    media.failing_acks = 3
    task = asyncio.create_task(worker.run())
    try:
        await _send(media, "p", 0, 8)
        await _until(lambda: len(_scores(events)) >= 8 and media.failing_acks == 0, "scores and acks")
        await asyncio.sleep(SETTINGS.claim_idle_ms / 1000 + 0.3)  # a periodic self-claim would rescore leftovers
        assert await media.length() == 0
    finally:
        worker.stop()
        await asyncio.wait_for(task, 5)
    out = _scores(events)
    assert len(out) == 8 and len({e.event_id for e in out}) == 8


async def test_a_takeover_publishes_what_the_dead_owner_recorded_and_scores_the_rest() -> None:
    media, events, leases = MemoryMediaBus(maxlen=1000, shards=1), MemoryEventBus(), MemoryLeaseStore()
    await media.ensure_group(INFERENCE_GROUP)
    published = await _send(media, "p", 0, 3)  # the dead owner had scored these, maybe published
    unscored = await _send(media, "p", 3, 3)  # read by it, never scored
    held = await leases.acquire([0], "dead", ttl_ms=200)
    assert held[0] is not None
    taken = await media.read_group(INFERENCE_GROUP, "dead", shards=[0], count=10, block_ms=0)
    assert [e.id for e in taken] == published + unscored
    reference = InferenceEngine(settings=SETTINGS, backend=NoFaces())
    reference.load()
    recorded = [
        ev.model_copy(update={"producer": "dead"})
        for ev in reference.process([decode_media(e.data) for e in taken[:3]])
    ]
    codec = EventCodec(ScoreEvent)
    await media.mark_publishing([(published, b"\n".join(codec.encode(ev) for ev in recorded))])
    await asyncio.sleep(0.3)  # its lease expires unreleased: "dead" died
    worker, metrics = _worker("b", media, events, leases, HealthRegistry(service="inference"))
    task = asyncio.create_task(worker.run())
    try:
        await _until(lambda: len(_scores(events)) == 6, "b to publish what dead recorded and score the rest")
        await _drained(media)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 5)
    out = _scores(events)
    assert sorted(e.seq for e in out) == [0, 2, 4, 6, 8, 10]
    assert [e for e in out if e.producer == "dead"] == recorded  # as recorded: same ids, same values
    assert {e.producer for e in out if e.seq >= 6} == {"b"}
    assert await media.length() == 0 and await media.publishing(0) == {}
    assert metrics.registry.get_sample_value("classpulse_inference_republished_events_total") == 3
    assert metrics.registry.get_sample_value("classpulse_media_dropped_total", {"reason": "repeated"}) is None


class AckDuringClaim(MemoryMediaBus):
    """A claim whose reply comes back after the worker's running batch acked what it returned (the race
    of a Kafka restart: a batch blocked on the broker finishes while the periodic claim is in flight)."""

    def __init__(self) -> None:
        super().__init__(maxlen=1000, shards=1)
        self.worker: InferenceWorker | None = None
        self.raced = 0

    async def claim_stale(
        self, group: str, consumer: str, *, shard: int, min_idle_ms: int, count: int
    ) -> list[StreamEntry]:
        entries = await super().claim_stale(group, consumer, shard=shard, min_idle_ms=min_idle_ms, count=count)
        held = [e for e in entries if self.worker is not None and e.id in self.worker._held]
        if held:  # what the store returned was still pending; the batch finishes before the reply arrives
            await _until(lambda: not any(e.id in self.worker._held for e in held), "the batch to ack")  # type: ignore[union-attr]
            self.raced += 1
        return entries


class SlowPublish(MemoryEventBus):
    """Kafka away for a while: each publish waits ``delay`` (longer than ``claim_idle_ms``)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        await asyncio.sleep(self.delay)
        await super().publish(topic, key, value)


async def test_entries_acked_while_a_claim_of_them_is_on_its_way_are_not_scored_twice() -> None:
    media, events = AckDuringClaim(), SlowPublish(delay=SETTINGS.claim_idle_ms / 1000 * 2)
    worker, metrics = _worker("a", media, events, MemoryLeaseStore(), HealthRegistry(service="inference"))
    media.worker = worker
    task = asyncio.create_task(worker.run())
    try:
        await _send(media, "p", 0, 8)
        await _until(lambda: len(_scores(events)) >= 8 and media.raced >= 1, "scores and a raced claim")
        await asyncio.sleep(SETTINGS.claim_idle_ms / 1000 * 3)  # time to score a wrongly claimed entry again
    finally:
        worker.stop()
        await asyncio.wait_for(task, 5)
    out = _scores(events)
    assert sorted(e.seq for e in out) == list(range(0, 16, 2)), "a frame was scored twice"
    assert await media.length() == 0
    repeated = metrics.registry.get_sample_value("classpulse_media_dropped_total", {"reason": "repeated"})
    assert repeated is None, "the claim handed the engine entries it had already taken in"


class FailsOnce(NoFaces):
    """Perception that raises in its first call (after the engine took the batch's media in)."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def analyze(self, requests: Sequence[PerceptionRequest]) -> list[PerceptionResult]:
        if not self.failed:
            self.failed = True
            raise RuntimeError("perception failed")
        return super().analyze(requests)


class Slow(NoFaces):
    def analyze(self, requests: Sequence[PerceptionRequest]) -> list[PerceptionResult]:
        time.sleep(0.5)
        return super().analyze(requests)


async def test_a_failed_batch_is_scored_on_retry_not_dropped_as_a_repeat() -> None:
    media, events = MemoryMediaBus(maxlen=1000, shards=1), MemoryEventBus()
    worker, metrics = _worker("a", media, events, MemoryLeaseStore(), HealthRegistry(service="inference"),
                              backend=FailsOnce())
    task = asyncio.create_task(worker.run())
    try:
        await _send(media, "p", 0, 8)
        await _until(lambda: len(_scores(events)) >= 8, "every frame scored, the failed batch on its retry")
        await _drained(media)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 5)
    assert sorted(e.seq for e in _scores(events)) == list(range(0, 16, 2))
    assert await media.length() == 0
    assert metrics.registry.get_sample_value("classpulse_media_dropped_total", {"reason": "repeated"}) is None
    assert metrics.registry.get_sample_value(
        "classpulse_errors_total", {"stage": "inference", "error": "state_discarded"}) == 1


async def test_a_batch_cancelled_mid_way_leaves_its_media_to_the_next_worker() -> None:
    """Killed (cancelled) during a batch, a worker snapshots at shutdown without that batch: the next
    owner restores the state from before it and scores the batch's media, none as a repeat."""
    media, events, leases = MemoryMediaBus(maxlen=1000, shards=1), MemoryEventBus(), MemoryLeaseStore()
    a, _ = _worker("a", media, events, leases, HealthRegistry(service="inference"), backend=Slow())
    a_task = asyncio.create_task(a.run())
    await _send(media, "p", 0, 4)
    await _until(lambda: len(a._held) >= 4, "a to start its slow batch")
    await asyncio.sleep(0.1)
    a_task.cancel()
    await asyncio.gather(a_task, return_exceptions=True)
    assert _scores(events) == []
    b, metrics = _worker("b", media, events, leases, HealthRegistry(service="inference"))
    b_task = asyncio.create_task(b.run())
    try:
        await _until(lambda: len(_scores(events)) >= 4, "b to score a's pending batch")
    finally:
        b.stop()
        await asyncio.wait_for(b_task, 5)
    assert sorted(e.seq for e in _scores(events)) == [0, 2, 4, 6]
    assert metrics.registry.get_sample_value("classpulse_media_dropped_total", {"reason": "repeated"}) is None
