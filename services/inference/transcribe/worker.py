"""``classpulse transcribe``'s worker: speech segments (Redis stream) -> Whisper -> speech events (Kafka).

Every transcribe worker is one member of the consumer group ``transcribe`` on the speech stream
``classpulse:speech:0`` (:mod:`services.inference.transcribe.speech_stream`); the group hands each
segment to one member, so adding workers adds throughput. One loop (supervised task
``transcribe-segments``):

1. read up to ``read_count`` new segments (waiting up to ``read_block_ms``); every
   ``claim_idle_ms / 2`` first claim the segments another member took and left unacked for
   ``claim_idle_ms`` (it died mid-segment);
2. transcribe them together in a worker thread (segments packed into Whisper windows, as
   inline: one call serves many under load);
3. publish each segment's ``source: speech`` InteractionEvent to ``classpulse.interactions``
   (keyed by session, waits for the broker's ack), then ack the segments, which deletes them.

At-least-once: a worker that dies between 3's publish and ack has its segments transcribed again
by another member, with the same event ids (session, participant, start), which consumers dedupe.
A segment that cannot be decoded, or whose Whisper call fails, is acked and counted (a poison
segment is never retried forever). Broker errors restart the loop with backoff (``/healthz`` shows
the task down meanwhile). Nothing here logs text or audio.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from services.inference.transcribe.settings import TranscribeSettings
from services.inference.transcribe.speech_stream import to_spoken
from services.inference.transcribe.stage import TranscribeStage
from shared.contracts.codec import DecodeError
from shared.contracts.interactions import InteractionEvent
from shared.contracts.speech import SpeechSegmentMessage, decode_speech
from shared.contracts.timing import wall_clock
from shared.contracts.topics import INTERACTIONS, TRANSCRIBE_GROUP
from shared.log import get_logger
from shared.metrics import Metrics
from shared.supervise import HealthRegistry, Supervisor
from shared.transport.base import EventBus, MediaBus, StreamEntry
from shared.transport.typed import EventPublisher

log = get_logger(__name__)
STAGE = "transcribe"
DEPTH_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class _Taken:
    entry_id: str
    msg: SpeechSegmentMessage


class TranscribeWorker:
    """A consumer-group member of the speech stream (see the module docstring); the stage must be loaded."""

    def __init__(
        self,
        *,
        stage: TranscribeStage,
        stream: MediaBus,
        events: EventBus,
        metrics: Metrics,
        consumer: str,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.stage = stage
        self.settings: TranscribeSettings = stage.settings
        self.consumer = consumer
        self.supervisor = supervisor or Supervisor(health=HealthRegistry(service="transcribe"))
        self._stream = stream
        self._publisher = EventPublisher(bus=events, topic=INTERACTIONS)
        self._metrics = metrics
        self._stopping = asyncio.Event()
        self._next_claim = 0.0
        self._next_depth = 0.0
        self.segments = 0
        self.published = 0

    async def run(self) -> None:
        """Until :meth:`stop` (the segments in hand are finished first) or cancellation."""
        await self._stream.ensure_group(TRANSCRIBE_GROUP)
        log.info("transcribe worker %s -> %s", "starting", "running", extra={"consumer": self.consumer})
        task = self.supervisor.spawn("transcribe-segments", self._loop)
        try:
            await task
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            log.info("transcribe worker %s -> %s", "running", "stopped", extra={"consumer": self.consumer})

    def stop(self) -> None:
        self._stopping.set()

    async def _loop(self) -> None:
        health = self.supervisor.health.task("transcribe-segments")
        while not self._stopping.is_set():
            entries = await self._take()
            health.ok()
            if entries:
                await self.handle(entries)
            await self._gauge_depth()

    async def _take(self) -> list[StreamEntry]:
        s = self.settings
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + s.claim_idle_ms / 2000
            claimed = await self._stream.claim_stale(
                TRANSCRIBE_GROUP, self.consumer, shard=0, min_idle_ms=s.claim_idle_ms, count=s.read_count
            )
            if claimed:
                log.info("speech segments %s -> %s", "pending", "claimed", extra={"segments": len(claimed)})
                return claimed
        return await self._stream.read_group(
            TRANSCRIBE_GROUP, self.consumer, shards=[0], count=s.read_count, block_ms=s.read_block_ms
        )

    async def handle(self, entries: list[StreamEntry]) -> None:
        """Transcribe, publish, ack one read's segments."""
        taken: list[_Taken] = []
        bad: list[str] = []
        now = wall_clock()
        for entry in entries:
            try:
                msg = decode_speech(entry.data)
            except DecodeError as exc:
                log.warning("speech segment rejected: %s", exc)
                self._metrics.errors_total.labels(STAGE, "decode").inc()
                bad.append(entry.id)
                continue
            self._metrics.transcribe_delay_seconds.labels("queued").observe(max(0.0, now - msg.closed_at))
            taken.append(_Taken(entry.id, msg))
        events: list[InteractionEvent] = []
        if taken:
            try:
                events = await asyncio.to_thread(self.stage.transcribe, [to_spoken(t.msg) for t in taken])
            except Exception as exc:  # a failed Whisper call loses these segments, never the worker
                log.warning("transcription failed: %s", type(exc).__name__)
                self._metrics.errors_total.labels(STAGE, "transcribe").inc(len(taken))
                events = []
        await asyncio.gather(*(self._publisher.publish(e) for e in events))  # a broker error: retried later
        published = wall_clock()
        for event in events:
            self._metrics.transcribe_delay_seconds.labels("speech_end").observe(max(0.0, published - event.ts))
            self._metrics.messages_total.labels(STAGE, "speech").inc()
        await self._stream.ack(TRANSCRIBE_GROUP, [*bad, *(t.entry_id for t in taken)])
        self.segments += len(taken)
        self.published += len(events)

    async def _gauge_depth(self) -> None:
        now = time.monotonic()
        if now < self._next_depth:
            return
        self._next_depth = now + DEPTH_INTERVAL_S
        self._metrics.queue_depth.labels("speech_stream").set(await self._stream.length())
