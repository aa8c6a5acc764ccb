"""The inference worker: media stream -> micro-batches -> engine -> Kafka scores + live bus.

One worker is one member of the media stream's consumer group ``INFERENCE_GROUP``:

1. a reader task reads new entries (and, every ``claim_interval_s``, claims entries a dead
   worker left pending longer than ``claim_idle_ms``), decodes them and queues them per
   participant in a bounded :class:`MicroBatcher` (it stops reading while the batcher is
   full, so backlog stays in the bounded stream, where the oldest media is evicted);
2. the batch loop flushes when a batch is full or its oldest item waited its budget, runs
   the engine in a worker thread (one batch at a time), publishes every ScoreEvent to
   Kafka ``classpulse.scores`` (keyed by session) and to the live bus, and only then acks
   the media (at-least-once; event ids are stable, so consumers dedupe redeliveries).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.inference.batcher import MicroBatcher
from services.inference.degrade import DegradePolicy, Load
from services.inference.engine import InferenceEngine
from services.inference.settings import InferenceSettings
from shared.contracts.codec import DecodeError, decode_media
from shared.contracts.events import ScoreEvent
from shared.contracts.media import MediaMessage, VideoFrame
from shared.contracts.timing import wall_clock
from shared.contracts.topics import INFERENCE_GROUP, SCORES, EventTopic
from shared.log import get_logger, spawn
from shared.metrics import Metrics
from shared.transport.base import StreamEntry
from shared.transport.factory import Transports
from shared.transport.live import LivePublisher
from shared.transport.typed import EventPublisher

log = get_logger(__name__)
STAGE = "inference"
EVICT_INTERVAL_S = 30.0


@dataclass(frozen=True, slots=True)
class _Item:
    entry_id: str
    msg: MediaMessage
    received: float
    claimed: bool


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class InferenceWorker:
    """A consumer-group member that micro-batches media across streams through the engine."""

    def __init__(
        self,
        *,
        engine: InferenceEngine,
        transports: Transports,
        settings: InferenceSettings,
        metrics: Metrics,
        consumer: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        scores_topic: EventTopic[ScoreEvent] = SCORES,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.consumer = consumer or settings.consumer_name or default_consumer_name()
        self._media = transports.media
        self._scores = EventPublisher(bus=transports.events, topic=scores_topic)
        self._live = LivePublisher(bus=transports.live)
        self._metrics = metrics
        self._clock = clock
        self._batcher: MicroBatcher[_Item] = MicroBatcher(
            max_batch=settings.batch_max,
            max_wait_s=settings.batch_wait_ms / 1000,
            capacity=max(settings.queue_max, settings.batch_max),
            clock=clock,
        )
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._stopping = asyncio.Event()
        self._held: set[str] = set()
        """Entry ids read or claimed and not yet acked (queued or in the running batch)."""
        self._claim_count = max(settings.read_count, settings.queue_max)
        self.batches = 0
        self.published = 0
        self._next_evict = clock() + EVICT_INTERVAL_S
        self._policy = DegradePolicy(settings.degrade_config(), now=clock())
        self._degrading = settings.degrade and settings.max_lag_ms > 0
        self._sessions: set[str] = set()
        metrics.inference_target_fps.set(settings.full_fps)

    async def run(self) -> None:
        """Run until :meth:`stop` (or cancellation); the engine must be loaded."""
        await self._media.ensure_group(INFERENCE_GROUP)
        log.info("inference worker %s -> %s", "starting", "running", extra={"consumer": self.consumer})
        reader = spawn(self._read_loop(), name=f"inference-reader-{self.consumer}")
        try:
            await self._batch_loop()
        finally:
            reader.cancel()
            await asyncio.wait([reader], timeout=5.0)
            log.info("inference worker %s -> %s", "running", "stopped", extra={"consumer": self.consumer})

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    # -- reading ---------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        s = self.settings
        next_claim = self._clock()
        while not self._stopping.is_set():
            await self._space.wait()
            if self._clock() >= next_claim:
                next_claim = self._clock() + s.claim_interval_s
                # Scan every pending entry (the stream is bounded); entries this worker already
                # holds are skipped, so its own slow batches are never claimed twice.
                claimed = await self._media.claim_stale(
                    INFERENCE_GROUP, self.consumer, min_idle_ms=s.claim_idle_ms, count=self._claim_count
                )
                claimed = [e for e in claimed if e.id not in self._held]
                if claimed:
                    log.info("stale media %s -> %s", "pending", "claimed", extra={"entries": len(claimed)})
                    await self._enqueue(claimed, claimed=True)
            entries = await self._media.read_group(
                INFERENCE_GROUP, self.consumer, count=s.read_count, block_ms=s.read_block_ms
            )
            await self._enqueue(entries)

    async def _enqueue(self, entries: list[StreamEntry], *, claimed: bool = False) -> None:
        if not entries:
            return
        now = wall_clock()
        bad: list[str] = []
        for entry in entries:
            try:
                msg = decode_media(entry.data)
            except DecodeError as exc:
                log.warning("media entry rejected: %s", exc)
                self._metrics.errors_total.labels(STAGE, "decode").inc()
                bad.append(entry.id)
                continue
            self._metrics.observe_hop(msg.timing, transport="media", received=now)
            self._held.add(entry.id)
            dropped = self._batcher.put(f"{msg.session}/{msg.participant}", _Item(entry.id, msg, now, claimed))
            if dropped is not None:
                self._metrics.media_dropped_total.labels("inference_queue_full").inc()
                bad.append(dropped.value.entry_id)
        if bad:
            await self._media.ack(INFERENCE_GROUP, bad)
            self._held.difference_update(bad)
        self._metrics.queue_depth.labels("inference_batcher").set(len(self._batcher))
        if self._batcher.full:
            self._space.clear()
        self._wake.set()

    # -- batching --------------------------------------------------------------------------

    async def _batch_loop(self) -> None:
        while not self._stopping.is_set():
            delay = self._batcher.time_to_deadline()
            if delay is None or delay > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=delay if delay is not None else 0.5)
                except TimeoutError:
                    pass
            if self._batcher.ready():
                await self._run_batch()
            self._control()
            if self._clock() >= self._next_evict:
                self._next_evict = self._clock() + EVICT_INTERVAL_S
                evicted = await asyncio.to_thread(self.engine.evict_idle, max_idle_s=self.settings.state_idle_s)
                if evicted:
                    log.info("participant states %s -> %s", "idle", "forgotten", extra={"count": evicted})

    async def _run_batch(self) -> None:
        started = self._clock()
        queued = self._batcher.take()
        self._space.set()
        self._metrics.queue_depth.labels("inference_batcher").set(len(self._batcher))
        if not queued:
            return
        now = self._clock()
        for q in queued:
            self._metrics.inference_queue_wait_seconds.observe(max(0.0, now - q.enqueued))
        items, thinned = await self._thin([q.value for q in queued])
        items = await self._drop_stale(items)
        if not items and not thinned:
            return
        frames = [i.msg for i in items if isinstance(i.msg, VideoFrame)]
        waits = self._waits(frames)
        if items:
            self._metrics.batch_size.observe(len(items))
        try:
            events = await asyncio.to_thread(
                self.engine.process, [i.msg for i in items], received=[i.received for i in items], skipped=thinned
            )
        except Exception:
            log.exception("inference batch failed; its media stays pending for a retry")
            self._metrics.errors_total.labels(STAGE, "batch").inc()
            self._held.difference_update(i.entry_id for i in items)  # claimable again once idle
            return
        await self._publish(events)
        await self._media.ack(INFERENCE_GROUP, [i.entry_id for i in items])
        self._held.difference_update(i.entry_id for i in items)
        for item in items:
            self._metrics.messages_total.labels(STAGE, item.msg.kind).inc()
        for frame in frames:
            self._metrics.inference_analysed_frames_total.labels(frame.session).inc()
        self._policy.observe_batch(busy_s=self._clock() - started, frames=len(frames), waits=waits)
        self.batches += 1

    @staticmethod
    def _waits(frames: list[VideoFrame]) -> list[float]:
        """How long each frame waited between leaving ingest and its batch starting (queue + backlog)."""
        now = wall_clock()
        out = []
        for frame in frames:
            stamp = frame.timing.stage("ingest")
            out.append(max(0.0, now - (stamp.emitted if stamp is not None else frame.timing.capture_ts)))
        return out

    async def _thin(self, items: list[_Item]) -> tuple[list[_Item], list[VideoFrame]]:
        """Keep each participant's frames at the policy's target rate; ack and count the rest.

        Every frame is offered (so the policy knows who is active); frames claimed from a dead
        worker are always kept. Returns the items to analyse and the thinned frames, which the
        engine still sees as "camera on" (no step, no perception).
        """
        now = self._clock()
        kept: list[_Item] = []
        thinned: list[_Item] = []
        for item in items:
            msg = item.msg
            if not isinstance(msg, VideoFrame):
                kept.append(item)
                continue
            admitted = self._policy.admit(f"{msg.session}/{msg.participant}", msg.media_time, now=now)
            (kept if admitted or item.claimed else thinned).append(item)
        if thinned:
            await self._release(thinned, reason="degraded")
        return kept, [i.msg for i in thinned if isinstance(i.msg, VideoFrame)]

    def _control(self) -> None:
        """Let the policy close its window: maybe a new target rate; the load gauges."""
        now = self._clock()
        load = self._policy.update(now=now, adapt=self._degrading)
        if load is None:
            return
        self._metrics.inference_busy_ratio.set(load.busy)
        self._metrics.inference_target_fps.set(self.settings.full_fps if load.target is None else load.target)
        counts = self._policy.sessions(now=now)
        for session in self._sessions - counts.keys():
            self._metrics.inference_participants.remove(session)
        for session, count in counts.items():
            self._metrics.inference_participants.labels(session).set(count)
        self._sessions = set(counts)
        if load.changed:
            _log_load(load)

    async def _drop_stale(self, items: list[_Item]) -> list[_Item]:
        """Keep latency bounded under overload: frames older than ``max_lag_ms`` are acked unscored.

        Media claimed from a dead worker is always scored: it is old by definition, and the
        score log should not lose a stretch of a session because a worker died.
        """
        if self.settings.max_lag_ms <= 0:
            return items
        limit = self.settings.max_lag_ms / 1000
        now = wall_clock()
        stale = [i for i in items if i.msg.kind == "video" and not i.claimed and now - i.msg.timing.capture_ts > limit]
        if not stale:
            return items
        await self._release(stale, reason="inference_stale")
        gone = {id(i) for i in stale}
        return [i for i in items if id(i) not in gone]

    async def _release(self, items: list[_Item], *, reason: str) -> None:
        """Ack media that will not be scored and count it as dropped for ``reason``."""
        await self._media.ack(INFERENCE_GROUP, [i.entry_id for i in items])
        self._held.difference_update(i.entry_id for i in items)
        self._metrics.media_dropped_total.labels(reason).inc(len(items))

    async def _publish(self, events: list[ScoreEvent]) -> None:
        if not events:
            return
        await asyncio.gather(*(self._scores.publish(ev) for ev in events))
        for ev in events:
            try:
                await self._live.publish(ev)
            except Exception as exc:  # live views are best effort; Kafka has the event
                log.warning("live publish failed: %s", exc)
                self._metrics.errors_total.labels(STAGE, "live_publish").inc()
            self._metrics.observe_trail(ev.timing, stage=STAGE)
        self.published += len(events)


def _log_load(load: Load) -> None:
    def fps(v: float | None) -> str:
        return "full" if v is None else f"{v:g} fps"

    log.info(
        "analysed frame rate %s -> %s",
        fps(load.before),
        fps(load.target),
        extra={
            "busy": round(load.busy, 3),
            "wait_s": round(load.wait_s, 3),
            "cost_ms": None if load.cost_s is None else round(1000 * load.cost_s, 2),
            "participants": load.participants,
        },
    )
