"""The transcribe stage in a live inference worker: scored audio -> speech segments -> speech events.

The inference worker owns each participant's media shard by lease, so it already holds that
participant's audio in order, exactly once per owner: segmenting (silero-vad) runs there, and no
second reader of the (bounded, evicting) media streams is needed. After a batch is scored and
fenced, the worker hands its audio chunks to :meth:`LiveTranscriber.put` (non-blocking; a bounded
queue whose oldest chunks are dropped and counted,
``classpulse_media_dropped_total{reason="transcribe_queue_full"}``, so transcription can never slow
scoring down). :meth:`run` segments speech in its own thread, then, by placement
(``CLASSPULSE_TRANSCRIBE_PLACEMENT``):

* **worker** (distributed default): each closed segment goes to the speech stream
  (:mod:`services.inference.transcribe.speech_stream`), where ``classpulse transcribe`` workers
  run Whisper (:mod:`services.inference.transcribe.worker`); this process never loads Whisper;
* **inline** (``classpulse up``): Whisper runs here, in the same thread (GPU when present), and
  the events go to the interactions topic, where the gateway, the aggregation core and the
  workers' text intake read them like chat. Segments closed together are packed into one
  Whisper window (under load, one call serves many).

The stage's thread runs ``CLASSPULSE_TRANSCRIBE_NICE`` steps nicer than scoring (Linux), set before
Whisper loads so CTranslate2's threads inherit it: on a box short of CPU the scheduler serves scoring
first and transcripts come later (or the queue sheds, counted). On the 2-core box of
docs/benchmarks.md the latency gain was within the noise (the CPU it freed went to the other
processes on the box); what costs is Whisper itself, ~40 % of a core with 10-20 students speaking at once.

A participant without audio for ``idle_flush_s`` (muted, left, or their shard moved to another
worker) has the open segment closed and its segmenting state forgotten; the next owner starts
fresh, so a hand-over loses no audio it acknowledged, and at most splits one segment.
Text leaves only with ``CLASSPULSE_KEEP_TEXT=true``; nothing is logged.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from services.inference.transcribe.speech_stream import SpeechStream
from services.inference.transcribe.stage import Spoken, TranscribeStage
from shared.contracts.interactions import InteractionEvent
from shared.contracts.media import AudioChunk
from shared.contracts.timing import wall_clock
from shared.contracts.topics import INTERACTIONS
from shared.log import get_logger
from shared.metrics import Metrics
from shared.thread_priority import lower_this_thread
from shared.transport.base import EventBus
from shared.transport.typed import EventPublisher

if TYPE_CHECKING:
    from services.inference.features_audio import VadWindows

log = get_logger(__name__)
STAGE = "transcribe"


class LiveTranscriber:
    """Runs the transcribe stage for a live worker (see the module docstring)."""

    def __init__(
        self, *, stage: TranscribeStage, bus: EventBus, metrics: Metrics, forward: SpeechStream | None = None
    ) -> None:
        self.stage = stage
        self.forward = forward
        """Where closed segments go for Whisper elsewhere (placement 'worker'); None: transcribed here."""
        self._metrics = metrics
        self._publisher = EventPublisher(bus=bus, topic=INTERACTIONS)
        self.vad_windows: Callable[[AudioChunk], VadWindows | None] | None = None
        """Where a chunk's silero-vad windows were computed already (the worker's engine,
        :meth:`~services.inference.engine.InferenceEngine.take_vad_windows`): segmenting reuses them
        instead of running the model a second time on the same audio."""
        self._queue: deque[tuple[AudioChunk, VadWindows | None]] = deque()
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transcribe")
        self.published = 0

    def load(self) -> None:
        """Load the stage in its own thread, made ``nice`` steps nicer first: CTranslate2 starts Whisper's
        threads there, and they inherit it (see :mod:`shared.thread_priority`)."""
        self._pool.submit(self._load).result()

    def _load(self) -> None:
        nice = lower_this_thread(self.stage.settings.nice)
        if nice is not None:
            log.info("transcribe stage priority %s -> %s", "live path", f"nice {nice}")
        self.stage.load(whisper=self.forward is None)

    def put(self, chunks: list[AudioChunk]) -> None:
        """Audio that was scored (a participant's chunks in media order); never blocks."""
        if not chunks:
            return
        take = self.vad_windows
        self._queue.extend((c, take(c) if take is not None else None) for c in chunks)
        overflow = len(self._queue) - self.stage.settings.queue_max
        for _ in range(max(0, overflow)):
            self._queue.popleft()
        if overflow > 0:
            self._metrics.media_dropped_total.labels("transcribe_queue_full").inc(overflow)
        self._metrics.queue_depth.labels("transcribe").set(len(self._queue))
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled: segment, transcribe, publish; the open segments are transcribed at the end."""
        loop = asyncio.get_running_loop()
        idle_s = self.stage.settings.idle_flush_s
        log.info("transcribe stage %s -> %s", "starting", "running")
        try:
            while True:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=idle_s / 2)
                except TimeoutError:
                    pass
                self._wake.clear()
                chunks = list(self._queue)
                self._queue.clear()
                self._metrics.queue_depth.labels("transcribe").set(0)
                events: list[InteractionEvent] = []
                try:
                    spoken = await loop.run_in_executor(self._pool, self._segment, chunks, idle_s)
                    if self.forward is None:
                        events = await loop.run_in_executor(self._pool, self.stage.transcribe, spoken)
                except Exception as exc:  # a failed VAD/Whisper call loses those segments, not the stage
                    log.warning("transcription failed: %s", type(exc).__name__)
                    self._metrics.errors_total.labels(STAGE, "transcribe").inc()
                    continue
                if self.forward is None:
                    await self._publish(events)
                else:
                    await self._send(spoken)
        finally:
            try:
                spoken = await asyncio.shield(loop.run_in_executor(self._pool, self.stage.close_open))
                if self.forward is None:
                    await self._publish(await asyncio.shield(
                        loop.run_in_executor(self._pool, self.stage.transcribe, spoken)
                    ))
                else:
                    await self._send(spoken)
            except Exception as exc:  # shutting down: the open segments are lost, nothing else
                log.warning("transcribe stage final flush failed: %s", type(exc).__name__)
            self._pool.shutdown(wait=False)
            log.info("transcribe stage %s -> %s", "running", "stopped")

    def _segment(self, chunks: list[tuple[AudioChunk, VadWindows | None]], idle_s: float) -> list[Spoken]:
        spoken: list[Spoken] = []
        for chunk, windows in chunks:
            spoken += self.stage.segment(chunk, windows)
        spoken += self.stage.close_open(self.stage.idle(max_idle_s=idle_s))
        now = wall_clock()
        for item in spoken:  # capture of the segment's end -> closed here (media transport, scoring, hang-over)
            end = item.speaker.epoch + item.segment.end
            self._metrics.transcribe_delay_seconds.labels("segmented").observe(max(0.0, now - end))
        return spoken

    async def _send(self, spoken: list[Spoken]) -> None:
        """Closed segments -> the speech stream; while Redis is unreachable they are lost (counted)."""
        if not spoken or self.forward is None:
            return
        before = self.forward.sent
        try:
            await self.forward.send(spoken)
        except Exception as exc:  # names the error type only
            lost = len(spoken) - (self.forward.sent - before)
            log.warning("speech segments %s -> %s: %s", "closed", "lost", type(exc).__name__)
            self._metrics.errors_total.labels(STAGE, "speech_stream").inc()
            self._metrics.media_dropped_total.labels("speech_stream_unreachable").inc(lost)

    async def _publish(self, events: list[InteractionEvent]) -> None:
        for event in events:
            try:
                await self._publisher.publish(event)
                self.published += 1
                self._metrics.messages_total.labels(STAGE, "speech").inc()
                self._metrics.transcribe_delay_seconds.labels("speech_end").observe(max(0.0, wall_clock() - event.ts))
            except Exception as exc:  # names the error type only: the event may carry text
                log.warning("speech event publish failed: %s", type(exc).__name__)
                self._metrics.errors_total.labels(STAGE, "publish").inc()
