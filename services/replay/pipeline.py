"""Replay of recordings: decode -> sample -> perception/fusion -> per-second timeline + aggregation.

The same code as live use, on in-process hand-offs instead of transports. Each track (one
participant's recording; a single file is one track) is decoded and sampled by the ingest
:class:`~services.ingest.sources.file.FileSource` in its own **worker thread** (PyAV, OpenCV
and torchaudio release the GIL while they work) feeding a bounded queue; the tracks are merged
in session-time order (:mod:`services.replay.decoding`), and the **main thread** takes
micro-batches off the merge and runs the one inference engine (it batches across
participants), the timeline builder and the aggregation core. Decode and analysis so overlap,
and memory stays bounded (at most ``queue_max`` sampled messages wait in all the queues
together, at least 4 per track). No media is written anywhere.

Session time = a track's ``offset_s`` + its media time. Score events keep their track's
``media_time`` (the contract: seconds from the start of this participant's media); in a class
replay their ``capture_ts`` is restamped to ``epoch + offset_s + media_time`` so the aggregation
core (built with ``origin=epoch``) sees one session clock.
"""

from __future__ import annotations

import math
import queue
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from services.replay.chat import RecordedInteractions, merge_interactions
from services.replay.decoding import Source, Track, TrackDecoder, TrackMerge, track_queue_size
from services.replay.progress import NoProgress, ProgressSink
from shared.analytics.timeline import TimelineBuilder
from shared.contracts.attendance import Attendance
from shared.contracts.events import ScoreEvent
from shared.contracts.interactions import InteractionEvent
from shared.contracts.media import AudioChunk, MediaMessage, VideoFrame
from shared.contracts.report import (
    AnalysisInfo,
    QuestionItem,
    Report,
    ReportParticipant,
    ReportSession,
    SessionSummary,
    TimelineRow,
    TranscriptLine,
)
from shared.log import get_logger

log = get_logger(__name__)

__all__ = ["ReplayJob", "ReplayStats", "Scorer", "Source", "Summariser", "Track", "run_replay"]

SUMMARY_LAG_S = 5.0
"""The aggregation core is advanced this far behind the newest score: the engine holds a
participant's audio back for up to about a second (camera on or off?), and in a class those
scores come after other participants' later ones; the core drops anything later than its
lateness (1 s) as late."""


class Scorer(Protocol):
    """What replay needs from the inference engine (:class:`services.inference.engine.InferenceEngine`)."""

    def load(self) -> None: ...

    def process(self, batch: Sequence[MediaMessage]) -> list[ScoreEvent]: ...

    def flush(self) -> list[ScoreEvent]: ...


class Summariser(Protocol):
    """What replay needs from the aggregation core (:class:`shared.analytics.session.SessionAggregator`)."""

    def add_score(self, event: ScoreEvent) -> None: ...

    def add_interaction(self, event: InteractionEvent) -> bool: ...

    def advance(self, now: float) -> object: ...

    def flush(self) -> object: ...

    def summary(self) -> SessionSummary: ...

    def questions(self) -> list[QuestionItem]: ...

    def attendance(self, *, late_after_s: float | None = None) -> Attendance: ...

    @property
    def origin(self) -> float | None: ...


class Speech(Protocol):
    """What replay needs from its transcriber (:class:`services.replay.transcripts.ReplayTranscriber`)."""

    def start(self) -> None: ...

    def put(self, chunk: AudioChunk) -> None: ...

    def finish(self) -> list[InteractionEvent]: ...

    def close(self) -> None: ...

    def transcript(self, events: list[InteractionEvent]) -> list[TranscriptLine]: ...


@dataclass(frozen=True, kw_only=True)
class ReplayStats:
    """How a replay went (printed by the CLI, used by the benchmark)."""

    wall_s: float
    media_s: float
    frames: int
    audio_chunks: int
    events: int
    queue_peak: int
    tracks: int = 1
    speech_events: int = 0
    recordings_s: float = 0.0
    """Seconds of media over all tracks (a class: more than ``media_s``, the session's length)."""

    @property
    def realtime_factor(self) -> float:
        return self.media_s / self.wall_s if self.wall_s > 0 else math.inf


@dataclass(kw_only=True)
class ReplayJob:
    """Recordings replayed into one session: one track per participant (a single file: one track)."""

    tracks: Sequence[Track]
    scorer: Scorer
    summariser: Summariser
    session: str
    source_name: str
    """The input as given (``session.source`` of the report): a file, a folder or a manifest."""
    class_mode: bool = False
    """A class replay (folder/manifest): participants carry ``source``, every track is listed in its
    order, and a track that fails part-way is reported while the others are analysed."""
    epoch: float | None = None
    """Class mode: events are restamped ``capture_ts = epoch + offset_s + media_time``; the summariser
    must use ``origin=epoch``. None: events keep the source's timing (a single file)."""
    frame_step_s: float = 0.2
    warnings: list[str] = field(default_factory=list)
    batch_max: int = 16
    load_scorer: bool = True
    """Call ``scorer.load()`` after the decoders have started (overlaps model loading with decoding)."""
    batch_span_s: float = 0.6
    """Session time one batch may span. A batch is complete at ``batch_max`` messages or this span, so
    its composition never depends on how fast decoding runs; the engine's results do not depend on
    the batching at all (audio is decided camera on/off in media order, pose per frame)."""
    queue_max: int = 64
    progress: ProgressSink = field(default_factory=NoProgress)
    prepare_audio: Callable[[AudioChunk], None] | None = None
    """Called in the decode thread for each audio chunk, in order, before it is queued (the engine's
    :meth:`~services.inference.engine.InferenceEngine.prepare_audio`: VAD and log-mel then run on the
    decode core, alongside perception on the analysis thread)."""
    prepare_frame: Callable[[VideoFrame], None] | None = None
    interactions: RecordedInteractions | None = None
    """``--chat``: interaction events with ``ts`` in seconds from the recording start, merged into the report."""
    """Called in the decode thread for each sampled frame, in order, before it is queued
    (:meth:`services.inference.perception_prefetch.PrefetchPerception.submit`: face analysis starts ahead)."""
    speech: Speech | None = None
    """The transcribe stage: gets every analysed audio chunk; its speech events are counted into the
    summary (``words_spoken``, ``questions``). None: no transcription (those counts stay 0)."""
    transcripts: bool = False
    """Keep the transcript in the report (``replay --transcripts``); the speech events then carry text."""


class _Batches:
    """Batches off the merge: up to ``batch_max`` messages spanning at most ``span_s`` of session time.

    A batch is complete only by those two rules (or the end), never by what happens to be queued, so
    the same recordings always give the same batches and the same report.
    """

    def __init__(self, *, merge: TrackMerge, batch_max: int, span_s: float, frame_step_s: float) -> None:
        self.merge = merge
        self.batch_max = batch_max
        self.span_s = span_s
        self.frame_step_s = frame_step_s
        self.frames = self.chunks = 0
        self.track_end: dict[int, float] = {}
        """Track index -> end (session time) of its last message."""

    def _counted(self) -> Iterator[tuple[float, MediaMessage]]:
        for i, at, item in self.merge:
            if isinstance(item, AudioChunk):
                self.chunks += 1
                end = at + item.duration
            else:
                self.frames += 1
                end = at + self.frame_step_s
            self.track_end[i] = max(self.track_end.get(i, 0.0), end)
            yield at, item

    def __iter__(self) -> Iterator[list[MediaMessage]]:
        batch: list[MediaMessage] = []
        first = 0.0
        for at, item in self._counted():
            if batch and (len(batch) >= self.batch_max or at - first > self.span_s + 1e-9):
                yield batch
                batch = []
            if not batch:
                first = at
            batch.append(item)
        if batch:
            yield batch


def run_replay(job: ReplayJob) -> tuple[Report, ReplayStats]:
    """Replay the job's tracks to a :class:`Report`; raises what a source raises (e.g. MediaSourceError)
    — in class mode only when no track delivered anything."""
    if job.class_mode and job.epoch is None:
        raise ValueError("a class replay needs an epoch (the session clock of its restamped events)")
    started = time.perf_counter()
    timeline = TimelineBuilder()
    tracks = list(job.tracks)
    offsets = {t.participant: t.offset_s for t in tracks}
    size = track_queue_size(job.queue_max, len(tracks))
    queues: list[queue.Queue[object] | None] = [
        queue.Queue(maxsize=size) if t.source is not None else None for t in tracks
    ]
    decoders = [
        TrackDecoder(source=t.source, out=q, index=i, prepare=job.prepare_audio, prepare_frame=job.prepare_frame)
        for i, (t, q) in enumerate(zip(tracks, queues, strict=True)) if t.source is not None and q is not None
    ]
    merge = TrackMerge(tracks=tracks, queues=queues, tolerate_failures=job.class_mode)
    batches = _Batches(merge=merge, batch_max=job.batch_max, span_s=job.batch_span_s, frame_step_s=job.frame_step_s)
    events_n = 0
    newest = -math.inf

    def consume(events: list[ScoreEvent]) -> None:
        nonlocal events_n, newest
        for e in events:
            offset = offsets.get(e.participant, 0.0)
            if job.epoch is not None:
                e = e.model_copy(update={"timing": e.timing.model_copy(
                    update={"capture_ts": job.epoch + offset + e.media_time})})
            if timeline.add(e, at=offset + e.media_time):
                job.summariser.add_score(e)
            newest = max(newest, e.timing.capture_ts)
        events_n += len(events)
        if events:
            job.summariser.advance(newest - SUMMARY_LAG_S)

    log.info("replay %s -> %s", "idle", "running", extra={"tracks": len(tracks)})
    speech = job.speech
    if speech is not None:
        speech.start()  # loads Whisper while decoding starts
    for d in decoders:
        d.start()  # decoding fills the bounded queues while the models load
    spoken: list[InteractionEvent] = []
    try:
        if job.load_scorer:
            job.scorer.load()
        for batch in batches:
            if speech is not None:
                for m in batch:
                    if isinstance(m, AudioChunk):
                        speech.put(m)
            consume(job.scorer.process(batch))
            job.progress.update(
                media_time=offsets.get(batch[-1].participant, 0.0) + batch[-1].media_time, frames=batches.frames,
                elapsed_s=time.perf_counter() - started,
            )
        consume(job.scorer.flush())
        if speech is not None:
            spoken = speech.finish()
    finally:
        if speech is not None:
            speech.close()
        for d in decoders:
            d.stop.set()
        for d in decoders:
            d.join(timeout=5.0)
    for event in spoken:
        job.summariser.add_interaction(event)
    job.summariser.flush()
    if job.interactions is not None:
        merge_interactions(job.summariser, job.interactions, epoch=job.epoch)
    media_s = max(
        (_media_extent(end - tracks[i].offset_s, tracks[i].expected_duration_s) + tracks[i].offset_s
         for i, end in batches.track_end.items()),
        default=0.0,
    )
    media_s = round(media_s, 3)
    wall_s = time.perf_counter() - started  # one clock for the progress bar and the final line
    job.progress.finish(media_time=media_s, frames=batches.frames, elapsed_s=wall_s)
    warnings = [*job.warnings]
    for t in tracks:
        if t.source is not None:
            warnings += t.source.warnings
    warnings += [
        f"{f.track.source_name or f.track.participant} (participant {f.track.participant}) stopped at "
        f"{f.at_s:.1f} s of the session: {f.error.message}; the other recordings were analysed, "
        "its later seconds read not observed"
        for f in merge.failures
    ]
    report = Report(
        session=ReportSession(id=job.session, source=job.source_name, duration_s=media_s),
        participants=[
            ReportParticipant(id=t.participant, role=t.role, source=t.source_name if job.class_mode else None)
            for t in tracks
        ],
        timeline=_rows_for(timeline, tracks, media_s),
        summary=job.summariser.summary(),
        questions=job.summariser.questions(),
        attendance=job.summariser.attendance(),
        warnings=warnings,
        transcript=speech.transcript(spoken) if speech is not None and job.transcripts else None,
        analysis=_analysis(job.scorer),
    )
    stats = ReplayStats(
        wall_s=wall_s, media_s=media_s, frames=batches.frames, audio_chunks=batches.chunks,
        events=events_n, queue_peak=merge.peak, tracks=len(tracks), speech_events=len(spoken),
        recordings_s=round(sum(
            _media_extent(end - tracks[i].offset_s, tracks[i].expected_duration_s)
            for i, end in batches.track_end.items()), 3),
    )
    log.info("replay %s -> %s", "running", "done", extra={"frames": stats.frames, "wall_s": round(wall_s, 2)})
    return report, stats


def _analysis(scorer: object) -> AnalysisInfo | None:
    """The engine's perception backend and device (a wrapping scorer, e.g. gallery's, holds the engine)."""
    for candidate in (scorer, getattr(scorer, "engine", None)):
        info = getattr(candidate, "analysis", None)
        if isinstance(info, AnalysisInfo):
            return info
    return None


def _media_extent(media_end: float, expected: float | None) -> float:
    """Seconds of media actually analysed: the end of the last message (a frame lasts one step).

    Never more than the container's declared duration; a truncated file reports what was decoded.
    """
    if expected is not None and expected > 0:
        media_end = min(media_end, expected)
    return round(media_end, 3)


def _rows_for(timeline: TimelineBuilder, tracks: Sequence[Track], media_s: float) -> list[TimelineRow]:
    """The full grid: every second of the session, every track's participant in track order.

    A second without any event of a participant (before their track starts, after it ends, or a
    recording that could not be read) reads all false with confidence 0: nothing was observed.
    """
    seconds = timeline.seconds(media_s)
    observed = {(r.participant, r.t): r for r in timeline.rows(media_s)}
    return [
        observed.get((t.participant, float(s))) or TimelineRow(
            t=float(s), participant=t.participant, present=False, attentive=False, speaking=False,
            hand_raised=False, engagement=0.0, confidence=0.0,
        )
        for s in range(seconds)
        for t in tracks
    ]


def default_session_id(path: Path) -> str:
    """A session id from a file name's stem (see :func:`session_id_from`)."""
    return session_id_from(path.stem)


def session_id_from(name: str) -> str:
    """A session id from a name: letters, digits, '-', '_' and '.' kept, the rest '-' (``replay`` if empty)."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-")
    return cleaned[:128] or "replay"
