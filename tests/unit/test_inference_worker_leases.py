"""Two workers on in-memory transports: shards change hands on join and leave, state moves with them.

Same worker code as distributed mode: a shared memory lease store, media bus and event log stand
in for Redis and Kafka. Every step must be published by exactly one worker, a moved participant's
state (here: its frame counter and fusion window) must continue on the new owner, and a worker
that lost its lease must publish nothing more for that shard.
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
from services.inference.state import ParticipantState
from services.inference.worker import InferenceWorker
from shared.contracts.codec import EventCodec, encode_media
from shared.contracts.events import ScoreEvent
from shared.contracts.topics import SCORES
from shared.metrics import Metrics
from shared.testkit.messages import frames
from shared.testkit.scaleout import ownership
from shared.transport.factory import Transports
from shared.transport.leases import MemoryLeaseStore
from shared.transport.memory import MemoryEventBus, MemoryLiveBus, MemoryMediaBus
from shared.transport.shards import owner_map, participant_key, shard_of
from tests.perception_fakes import NoFaces

pytestmark = pytest.mark.unit

SHARDS = 4
SETTINGS = InferenceSettings(
    batch_max=4,
    batch_wait_ms=5,
    read_block_ms=5,
    max_lag_ms=0,
    lease_ttl_ms=600,
    lease_renew_ms=100,
    snapshot_interval_s=0.2,
    drain_timeout_s=1.0,
)




class Cluster:
    def __init__(self) -> None:
        self.media = MemoryMediaBus(maxlen=10_000, shards=SHARDS)
        self.events = MemoryEventBus()
        self.live = MemoryLiveBus()
        self.leases = MemoryLeaseStore()
        self.image = np.zeros((48, 64, 3), np.uint8)
        self.metrics: dict[str, Metrics] = {}

    def worker(self, name: str) -> InferenceWorker:
        metrics = self.metrics.setdefault(name, Metrics(CollectorRegistry()))
        engine = InferenceEngine(settings=SETTINGS, metrics=metrics, backend=NoFaces())
        engine.load()
        transports = Transports(media=self.media, events=self.events, live=self.live, leases=self.leases)
        return InferenceWorker(engine=engine, transports=transports, settings=SETTINGS, metrics=metrics, consumer=name)

    async def send(self, participants: list[str], start: int, n: int) -> None:
        for p in participants:
            for msg in frames([self.image] * n, session="s", participant=p, start_seq=start):
                await self.media.append(encode_media(msg), key=participant_key("s", p))

    def scores(self) -> list[ScoreEvent]:
        codec = EventCodec(ScoreEvent)
        return [codec.decode(v) for _, v in self.events.records(SCORES.name)]

    async def until(self, check: object, what: str, within: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        while not check():  # type: ignore[operator]
            assert loop.time() < end, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)


def _participants() -> tuple[list[str], set[int]]:
    """Participants on both of b's shards and on a's, so the hand-over is exercised both ways."""
    b_shards = {k for k, who in owner_map(SHARDS, ["a", "b"]).items() if who == "b"}
    names = [f"p{i}" for i in range(40)]
    chosen = [p for p in names if shard_of(participant_key("s", p), SHARDS) in b_shards][:3]
    chosen += [p for p in names if shard_of(participant_key("s", p), SHARDS) not in b_shards][:3]
    return chosen, b_shards


async def test_join_and_leave_move_shards_and_state_without_double_scoring() -> None:
    c = Cluster()
    people, b_shards = _participants()
    moved = [p for p in people if shard_of(participant_key("s", p), SHARDS) in b_shards]
    a = c.worker("a")
    a_task = asyncio.create_task(a.run())
    await c.send(people, 0, 10)
    await c.until(lambda: len(c.scores()) == 60, "a alone to score 10 frames each")
    assert sorted(a.ownership.held()) == list(range(SHARDS))

    b = c.worker("b")
    b_task = asyncio.create_task(b.run())
    await c.until(lambda: set(b.ownership.held()) == b_shards, "b to take its shards")
    assert not set(a.ownership.held()) & set(b.ownership.held())
    await c.send(people, 10, 10)
    await c.until(lambda: len(c.scores()) == 120, "both to score frames 10-19")
    for p in moved:  # b restored a's state: 20 frames counted, not b's own 10
        assert ParticipantState.restore(b.engine.snapshot("s", p)).frames == 20
    assert set(a.engine.participants()) == {("s", p) for p in people if p not in moved}  # a dropped moved states

    b.stop()  # clean leave: b snapshots, releases, and a takes the shards back
    await asyncio.wait_for(b_task, 10)
    await c.until(lambda: sorted(a.ownership.held()) == list(range(SHARDS)), "a to take the shards back")
    await c.send(people, 20, 10)
    await c.until(lambda: len(c.scores()) == 180, "a to score frames 20-29")
    for p in people:
        assert ParticipantState.restore(a.engine.snapshot("s", p)).frames == 30
    a.stop()
    await asyncio.wait_for(a_task, 10)

    events = c.scores()
    assert len({e.event_id for e in events}) == len(events) == 180  # nothing scored twice
    owners = ownership(events)
    for p in people:
        own = owners[p]
        assert sorted(own.producers) == [2 * i for i in range(30)] and own.shared_steps == []
        assert own.owners == (["a", "b", "a"] if p in moved else ["a"])
    for p in moved:
        runs = owners[p].runs
        assert runs[1] == ("b", 20, 38)  # b scored exactly the frames sent while it held the shard
    assert c.metrics["b"].registry.get_sample_value(
        "classpulse_inference_lease_events_total", {"event": "released"}
    ) == len(b_shards)
    assert (
        c.metrics["b"].registry.get_sample_value("classpulse_inference_snapshot_seconds_count", {"op": "restore"})
    ) == len(moved)


class Partitioned:
    """A worker's view of the shared lease store that can be cut off (every call fails)."""

    def __init__(self, store: MemoryLeaseStore) -> None:
        self.store = store
        self.cut = False

    def __getattr__(self, name: str) -> object:
        attr = getattr(self.store, name)
        if not callable(attr) or name in ("start", "close"):
            return attr

        async def call(*args: object, **kwargs: object) -> object:
            if self.cut:
                raise ConnectionError("lease store unreachable")
            return await attr(*args, **kwargs)

        return call


async def test_a_partitioned_worker_stops_publishing_and_its_shards_are_taken_over() -> None:
    c = Cluster()
    people, b_shards = _participants()
    view = Partitioned(c.leases)
    metrics = c.metrics.setdefault("a", Metrics(CollectorRegistry()))
    engine = InferenceEngine(settings=SETTINGS, metrics=metrics, backend=NoFaces())
    engine.load()
    transports = Transports(media=c.media, events=c.events, live=c.live, leases=view)  # type: ignore[arg-type]
    a = InferenceWorker(engine=engine, transports=transports, settings=SETTINGS, metrics=metrics, consumer="a")
    a_task = asyncio.create_task(a.run())
    await c.send(people, 0, 4)
    await c.until(lambda: len(c.scores()) == 24, "a to score")
    await asyncio.sleep(0.3)  # a stored its participants' snapshots

    view.cut = True  # a is partitioned from the store: it cannot renew
    await c.until(lambda: a.ownership.readable() == [], "a to stop trusting its leases", within=2.0)
    b = c.worker("b")
    b_task = asyncio.create_task(b.run())
    await c.until(lambda: sorted(b.ownership.held()) == list(range(SHARDS)), "b to take over after expiry")
    await c.send(people, 4, 4)
    await c.until(lambda: len(c.scores()) == 48, "b to score the new frames")
    for p in people:  # b continued from a's stored state
        assert ParticipantState.restore(b.engine.snapshot("s", p)).frames == 8

    view.cut = False  # a is back: its renewals fail, it drops the shards' state; then b hands a's half back
    a_half = set(range(SHARDS)) - b_shards
    await c.until(lambda: set(a.ownership.held()) == a_half, "a to get its half back")
    await c.send(people, 8, 4)
    await c.until(lambda: len(c.scores()) == 72, "both to score")
    for w, task in ((a, a_task), (b, b_task)):
        w.stop()
        await asyncio.wait_for(task, 10)
    owners = ownership(c.scores())
    for p in people:
        back = shard_of(participant_key("s", p), SHARDS) in a_half
        assert owners[p].owners == (["a", "b", "a"] if back else ["a", "b"])
        assert owners[p].shared_steps == [] and sorted(owners[p].producers) == [2 * i for i in range(12)]
    assert metrics.registry.get_sample_value("classpulse_inference_lease_events_total", {"event": "lost"}) == SHARDS
    taken = c.metrics["b"].registry.get_sample_value("classpulse_inference_lease_events_total", {"event": "taken_over"})
    assert taken == SHARDS


class SlowNoFaces(NoFaces):
    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.started = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    def analyze(self, requests: Sequence[PerceptionRequest]) -> list[PerceptionResult]:
        self.loop.call_soon_threadsafe(self.started.set)
        time.sleep(self.delay)
        return super().analyze(requests)


async def test_a_batch_finished_after_the_lease_lapsed_is_not_published_and_the_next_owner_scores_it() -> None:
    c = Cluster()
    people, _ = _participants()
    view = Partitioned(c.leases)
    metrics = c.metrics.setdefault("a", Metrics(CollectorRegistry()))
    slow = SlowNoFaces(1.0)
    engine = InferenceEngine(settings=SETTINGS, metrics=metrics, backend=slow)
    engine.load()
    transports = Transports(media=c.media, events=c.events, live=c.live, leases=view)  # type: ignore[arg-type]
    a = InferenceWorker(engine=engine, transports=transports, settings=SETTINGS, metrics=metrics, consumer="a")
    a_task = asyncio.create_task(a.run())
    await c.until(lambda: len(a.ownership.held()) == SHARDS, "a to own the shards")
    await c.send(people[:1], 0, 2)
    await asyncio.wait_for(slow.started.wait(), 5)
    view.cut = True  # mid-batch: a's lease lapses before the batch ends
    b = c.worker("b")
    b_task = asyncio.create_task(b.run())
    await c.until(lambda: len(c.scores()) == 2, "b to score the media a could not publish")
    for w, task in ((a, a_task), (b, b_task)):
        w.stop()
        await asyncio.wait_for(task, 10)
    assert {e.producer for e in c.scores()} == {"b"}  # a's finished batch was fenced: not published, not acked
    lapsed = metrics.registry.get_sample_value(
        "classpulse_errors_total", {"stage": "inference", "error": "lease_lapsed"}
    )
    assert lapsed is not None and lapsed >= 1
