"""Replay of a recording: decode -> sample -> perception/fusion -> per-second timeline + aggregation.

The same code as live use, on in-process hand-offs instead of transports: the ingest
:class:`~services.ingest.sources.file.FileSource` decodes and samples in a **worker thread**
(PyAV, OpenCV and torchaudio release the GIL while they work) and feeds a bounded queue; the
**main thread** takes micro-batches off it and runs the inference engine, the timeline
builder and the aggregation core. Decode and analysis so overlap on two cores, and memory
stays bounded (the queue holds at most ``queue_max`` sampled messages). No media is
written anywhere.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from services.replay.progress import NoProgress, ProgressSink
from shared.analytics.timeline import TimelineBuilder
from shared.contracts.events import Role, ScoreEvent
from shared.contracts.media import AudioChunk, MediaMessage, VideoFrame
from shared.contracts.report import Report, ReportParticipant, ReportSession, SessionSummary, TimelineRow
from shared.log import get_logger

log = get_logger(__name__)


class Scorer(Protocol):
    """What replay needs from the inference engine (:class:`services.inference.engine.InferenceEngine`)."""

    def load(self) -> None: ...

    def process(self, batch: Sequence[MediaMessage]) -> list[ScoreEvent]: ...

    def flush(self) -> list[ScoreEvent]: ...


class Source(Protocol):
    """What replay needs from a media source (:class:`services.ingest.sources.file.FileSource`)."""

    warnings: list[str]

    def __iter__(self) -> Iterator[MediaMessage]: ...


class Summariser(Protocol):
    """What replay needs from the aggregation core (:class:`shared.analytics.session.SessionAggregator`)."""

    def add_score(self, event: ScoreEvent) -> None: ...

    def advance(self, now: float) -> object: ...

    def flush(self) -> object: ...

    def summary(self) -> SessionSummary: ...


@dataclass(frozen=True, kw_only=True)
class ReplayStats:
    """How a replay went (printed by the CLI, used by the benchmark)."""

    wall_s: float
    media_s: float
    frames: int
    audio_chunks: int
    events: int
    queue_peak: int

    @property
    def realtime_factor(self) -> float:
        return self.media_s / self.wall_s if self.wall_s > 0 else math.inf


@dataclass(kw_only=True)
class ReplayJob:
    """One file replayed as one participant of one session."""

    source: Source
    scorer: Scorer
    summariser: Summariser
    session: str
    source_name: str
    participant: str
    role: Role = "student"
    expected_duration_s: float | None = None
    frame_step_s: float = 0.2
    warnings: list[str] = field(default_factory=list)
    batch_max: int = 16
    load_scorer: bool = True
    """Call ``scorer.load()`` after the decoder has started (overlaps model loading with decoding)."""
    batch_span_s: float = 0.6
    """Media time one batch may span. A batch is complete at ``batch_max`` messages or this span, so
    its composition never depends on how fast decoding runs; the engine's results do not depend on
    the batching at all (audio is decided camera on/off in media order, pose per frame)."""
    queue_max: int = 64
    progress: ProgressSink = field(default_factory=NoProgress)
    prepare_audio: Callable[[AudioChunk], None] | None = None
    """Called in the decode thread for each audio chunk, in order, before it is queued (the engine's
    :meth:`~services.inference.engine.InferenceEngine.prepare_audio`: VAD and log-mel then run on the
    decode core, alongside perception on the analysis thread)."""
    prepare_frame: Callable[[VideoFrame], None] | None = None
    """Called in the decode thread for each sampled frame, in order, before it is queued
    (:meth:`services.inference.perception_prefetch.PrefetchPerception.submit`: face analysis starts ahead)."""


_END = object()


class _Decoder(threading.Thread):
    """Runs the source in a thread, handing messages (then ``_END`` or an exception) to a bounded queue."""

    def __init__(
        self,
        *,
        source: Source,
        out: queue.Queue[object],
        prepare: Callable[[AudioChunk], None] | None = None,
        prepare_frame: Callable[[VideoFrame], None] | None = None,
    ) -> None:
        super().__init__(name="classpulse-replay-decode", daemon=True)
        self.source = source
        self.out = out
        self.prepare = prepare
        self.prepare_frame = prepare_frame
        self.stop = threading.Event()

    def _put(self, item: object) -> bool:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            for msg in self.source:
                if self.prepare is not None and isinstance(msg, AudioChunk):
                    self.prepare(msg)
                elif self.prepare_frame is not None and isinstance(msg, VideoFrame):
                    self.prepare_frame(msg)
                if not self._put(msg):
                    return
            self._put(_END)
        except BaseException as exc:  # re-raised in the analysis thread
            self._put(exc)


class _Batches:
    """Batches off the hand-off queue: up to ``batch_max`` messages spanning at most ``span_s`` of media.

    A batch is complete only by those two rules (or the end), never by what happens to be queued, so
    the same file always gives the same batches and the same report.
    """

    def __init__(self, *, handoff: queue.Queue[object], batch_max: int, span_s: float, frame_step_s: float) -> None:
        self.handoff = handoff
        self.batch_max = batch_max
        self.span_s = span_s
        self.frame_step_s = frame_step_s
        self.frames = self.chunks = self.peak = 0
        self.media_end = 0.0
        self._carry: MediaMessage | None = None

    def _next(self) -> MediaMessage | None:
        if self._carry is not None:
            item: object = self._carry
            self._carry = None
            return item  # type: ignore[return-value]
        item = self.handoff.get()
        self.peak = max(self.peak, self.handoff.qsize() + 1)
        if item is _END:
            return None
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, AudioChunk):
            self.chunks += 1
            self.media_end = max(self.media_end, item.media_time + item.duration)
        elif isinstance(item, VideoFrame):
            self.frames += 1
            self.media_end = max(self.media_end, item.media_time + self.frame_step_s)
        else:
            raise TypeError(f"unexpected item from the media source: {type(item).__name__}")
        return item

    def __iter__(self) -> Iterator[list[MediaMessage]]:
        while True:
            batch: list[MediaMessage] = []
            while len(batch) < self.batch_max:
                item = self._next()
                if item is None:
                    if batch:
                        yield batch
                    return
                if batch and item.media_time - batch[0].media_time > self.span_s + 1e-9:
                    self._carry = item
                    break
                batch.append(item)
            yield batch


def run_replay(job: ReplayJob) -> tuple[Report, ReplayStats]:
    """Replay the job's source to a :class:`Report`; raises what the source raises (e.g. MediaSourceError)."""
    started = time.perf_counter()
    timeline = TimelineBuilder()
    handoff: queue.Queue[object] = queue.Queue(maxsize=job.queue_max)
    decoder = _Decoder(source=job.source, out=handoff, prepare=job.prepare_audio, prepare_frame=job.prepare_frame)
    events_n = 0

    def consume(events: list[ScoreEvent]) -> None:
        nonlocal events_n
        for e in events:
            if timeline.add(e):
                job.summariser.add_score(e)
        events_n += len(events)
        if events:
            job.summariser.advance(max(e.timing.capture_ts for e in events))

    log.info("replay %s -> %s", "idle", "running")
    decoder.start()  # decoding fills the bounded queue while the models load
    try:
        if job.load_scorer:
            job.scorer.load()
        batches = _Batches(handoff=handoff, batch_max=job.batch_max, span_s=job.batch_span_s,
                           frame_step_s=job.frame_step_s)
        for batch in batches:
            consume(job.scorer.process(batch))
            job.progress.update(
                media_time=batch[-1].media_time, frames=batches.frames, elapsed_s=time.perf_counter() - started
            )
        consume(job.scorer.flush())
    finally:
        decoder.stop.set()
        decoder.join(timeout=5.0)
    job.summariser.flush()
    frames, chunks, peak = batches.frames, batches.chunks, batches.peak
    media_s = _media_extent(batches.media_end, job.expected_duration_s)
    wall_s = time.perf_counter() - started  # one clock for the progress bar and the final line
    job.progress.finish(media_time=media_s, frames=frames, elapsed_s=wall_s)
    report = Report(
        session=ReportSession(id=job.session, source=job.source_name, duration_s=round(media_s, 3)),
        participants=[ReportParticipant(id=job.participant, role=job.role)],
        timeline=_rows_for(timeline, job, media_s),
        summary=job.summariser.summary(),
        warnings=[*job.warnings, *job.source.warnings],
    )
    stats = ReplayStats(
        wall_s=wall_s, media_s=media_s, frames=frames, audio_chunks=chunks,
        events=events_n, queue_peak=peak,
    )
    log.info("replay %s -> %s", "running", "done", extra={"frames": frames, "wall_s": round(stats.wall_s, 2)})
    return report, stats


def _media_extent(media_end: float, expected: float | None) -> float:
    """Seconds of media actually analysed: the end of the last message (a frame lasts one step).

    Never more than the container's declared duration; a truncated file reports what was decoded.
    """
    if expected is not None and expected > 0:
        media_end = min(media_end, expected)
    return round(media_end, 3)


def _rows_for(timeline: TimelineBuilder, job: ReplayJob, media_s: float) -> list[TimelineRow]:
    """Timeline rows; a participant that produced no event at all still gets (empty) rows."""
    if job.participant not in timeline.participants:
        return [
            TimelineRow(t=float(t), participant=job.participant, present=False, attentive=False, speaking=False,
                        hand_raised=False, engagement=0.0, confidence=0.0)
            for t in range(timeline.seconds(media_s))
        ]
    return timeline.rows(media_s)


def default_session_id(path: Path) -> str:
    """A session id from a file name: letters, digits, '-', '_' and '.' kept, the rest '-'."""
    stem = path.stem or "replay"
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in stem).strip("-")
    return cleaned[:128] or "replay"
