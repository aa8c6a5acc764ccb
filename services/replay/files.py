"""Wiring a replay: ingest's FileSource per recording + one inference engine + the aggregation core.

:func:`replay_file` analyses one recording (one participant); :func:`replay_class` a folder or
manifest of per-participant recordings on one session clock, into one report.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from services.replay.class_inputs import ClassInput, TrackSpec, container_offsets, container_start
from services.replay.decoding import Track
from services.replay.pipeline import (
    ReplayJob,
    ReplayStats,
    Scorer,
    default_session_id,
    run_replay,
    session_id_from,
)
from services.replay.progress import NoProgress, ProgressBar, ProgressSink
from services.replay.report_files import ReportPaths, write_report
from services.replay.settings import ReplaySettings
from shared.contracts.events import Role
from shared.contracts.report import Report
from shared.torch_threads import torch_threads

if TYPE_CHECKING:
    from services.inference.engine import InferenceEngine
    from services.inference.perception_prefetch import PrefetchPerception
    from services.ingest.sources.base import MediaInfo
    from services.ingest.sources.file import FileSource
    from services.replay.chat import RecordedInteractions
    from services.replay.transcripts import ReplayTranscriber


@contextlib.contextmanager
def native_stderr_muted(enabled: bool = True) -> Iterator[TextIO]:
    """Send file descriptor 2 to /dev/null for a while and yield a stream on the real stderr.

    mediapipe/TFLite print absl warnings straight from C++ while their graphs start, which
    would bury the CLI's progress bar and messages; those go to the yielded stream instead.
    """
    if not enabled:
        yield sys.stderr
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    real = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
    try:
        os.dup2(devnull, 2)
        yield real
    finally:
        real.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
        real.close()


def media_name(location: str) -> str:
    """The file name of a path or URL (``https://host/a/lesson.mp4?x=1`` -> ``lesson.mp4``)."""
    if "://" in location:
        from urllib.parse import urlparse

        return Path(urlparse(location).path).name or urlparse(location).netloc
    return Path(location).name


@dataclass(frozen=True)
class ReplayOutcome:
    report: Report
    paths: ReportPaths
    stats: ReplayStats


@dataclass
class _Analysis:
    """The one engine (one perception backend) every track of a replay shares."""

    engine: InferenceEngine
    prefetch: PrefetchPerception | None
    torch_threads: int
    """torch intra-op threads during the replay (0: torch is not used, nor imported to set them)."""


def _analysis(settings: ReplaySettings, *, tracks: int) -> _Analysis:
    from services.inference.engine import InferenceEngine
    from services.inference.fusion_runtime import fusion_needs_torch
    from services.inference.perception_registry import build_prefetch, spec_for
    from services.inference.settings import InferenceSettings

    trackers = settings.mesh_trackers
    if trackers > 0:  # one tracking graph per participant, or the LRU would rebuild one per frame
        trackers = min(1024, max(trackers, tracks))
    inference = InferenceSettings().model_copy(update={"mesh_trackers": trackers})
    prefetch = build_prefetch(inference) if settings.perception_ahead else None
    # torch only where something runs on it (CPU fusion is numpy): no import just to set its thread count
    uses_torch = spec_for(inference.backend).uses_torch or fusion_needs_torch(inference)
    return _Analysis(engine=InferenceEngine(settings=inference, backend=prefetch), prefetch=prefetch,
                     torch_threads=inference.torch_threads if uses_torch else 0)


def _run(
    job_tracks: list[Track],
    *,
    settings: ReplaySettings,
    session_id: str,
    source_name: str,
    warnings: list[str],
    out_dir: Path,
    show_progress: bool,
    quiet_native: bool,
    class_mode: bool,
    chat: Path | None = None,
    transcripts: bool = False,
    wrap: Callable[[InferenceEngine], Scorer] | None = None,
    amend: Callable[[Report], Report] | None = None,
    transcribe: bool = True,
) -> ReplayOutcome:
    """Replay ``job_tracks`` with one engine (``wrap``: a stage around it); write the report (``amend``: last edits).

    ``transcribe``: run the transcribe stage (off for a gallery's mixed audio, which has no one speaker per track).
    """
    from shared.analytics.config import AggregationConfig
    from shared.analytics.session import SessionAggregator
    from shared.contracts.timing import wall_clock
    from shared.malloc_arenas import limit_malloc_arenas

    # bad lines fail first; --transcripts keeps the chat's text as well as the speech's
    interactions = _chat(chat, session=session_id, keep_text=transcripts) if chat is not None else None
    if interactions is not None:
        warnings.extend(_chat_strangers(interactions, job_tracks))
    limit_malloc_arenas(settings.malloc_arenas)  # before the replay's threads allocate
    parts = _analysis(settings, tracks=len(job_tracks))
    engine = parts.engine
    speech = _speech(job_tracks, transcripts=transcripts) if transcribe else None
    if speech is not None and settings.audio_ahead:  # silero-vad once per chunk: segmenting reuses the engine's
        engine.keep_vad_windows = True
        speech.vad_windows = engine.take_vad_windows
    epoch = wall_clock() if class_mode else None
    summariser = SessionAggregator(session=session_id, config=AggregationConfig(), origin=epoch)
    ends = [t.offset_s + t.expected_duration_s for t in job_tracks
            if t.source is not None and t.expected_duration_s is not None]
    total = max(ends) if ends else None
    with native_stderr_muted(quiet_native) as stderr:
        progress: ProgressSink = ProgressBar(total_s=total, stream=stderr) if show_progress else NoProgress()
        job = ReplayJob(
            tracks=job_tracks, scorer=wrap(engine) if wrap is not None else engine, summariser=summariser,
            session=session_id, source_name=source_name,
            class_mode=class_mode, epoch=epoch, warnings=warnings,
            batch_max=settings.batch_max, batch_span_s=settings.batch_span_s, queue_max=settings.queue_max,
            frame_step_s=1.0 / settings.analysis_fps,
            progress=progress, prepare_audio=engine.prepare_audio if settings.audio_ahead else None,
            prepare_frame=parts.prefetch.submit if parts.prefetch is not None else None,
            interactions=interactions,
            speech=speech, transcripts=transcripts,
        )
        try:
            with torch_threads(parts.torch_threads):  # the fusion model is tiny: more threads only contend
                report, stats = run_replay(job)  # loads the engine while decoding starts
        finally:
            engine.close()
    if amend is not None:
        report = amend(report)
    return ReplayOutcome(report=report, paths=write_report(report, out_dir), stats=stats)


def _chat(path: Path, *, session: str, keep_text: bool) -> RecordedInteractions:
    from services.replay.chat import load_chat
    from shared.settings import CommonSettings
    from shared.text.settings import TextSettings
    from shared.text.stage import build_text_stage

    return load_chat(path, session=session, stage=build_text_stage(TextSettings()),
                     keep_text=keep_text or CommonSettings().keep_text)


def _chat_strangers(recorded: RecordedInteractions, tracks: list[Track]) -> list[str]:
    """A warning when chat events name people with no recording (e.g. a single file's default id ``p1``)."""
    known = {t.participant for t in tracks}
    strangers = sorted({e.participant for e in recorded.events if e.role != "teacher"} - known)
    if not strangers:
        return []
    shown = ", ".join(strangers[:5]) + (f" and {len(strangers) - 5} more" if len(strangers) > 5 else "")
    ids = ", ".join(sorted(known)[:5])
    return [f"{recorded.source}: events of {len(strangers)} participant(s) with no recording ({shown}) are "
            f"counted as participants without media; the recordings' ids are {ids} (--participant names a "
            "single file's)"]


def _speech(tracks: list[Track], *, transcripts: bool) -> ReplayTranscriber | None:
    """The transcribe stage for this replay (text kept only with ``--transcripts``); None when disabled."""
    from services.inference.transcribe.settings import TranscribeSettings
    from services.inference.transcribe.stage import TranscribeStage
    from services.replay.transcripts import ReplayTranscriber

    settings = TranscribeSettings()
    if not settings.enabled:  # the CLI refuses --transcripts then
        return None
    stage = TranscribeStage(settings=settings, keep_text=transcripts)
    stage.model.check()  # a missing model folder: ModelError (one readable line) before any decoding starts
    # the model itself loads in the transcriber's thread, beside the engine's loading and the decoding
    return ReplayTranscriber(stage=stage, offsets={t.participant: t.offset_s for t in tracks})


def _source(location: str, *, session: str, participant: str, role: Role, settings: ReplaySettings) -> FileSource:
    from services.ingest.sources.file import FileSource

    return FileSource(
        path=location, session=session, participant=participant, role=role, fps=settings.analysis_fps,
        frame_width=settings.frame_width, audio_chunk_s=settings.audio_chunk_s, realtime=False,
    )


def _track_warnings(name: str, info: MediaInfo) -> list[str]:
    out = []
    if not info.has_video:
        out.append(f"{name} has no video track: presence, attention and hand raising were not observed (all false)")
    if not info.has_audio:
        out.append(f"{name} has no audio track: speaking and talk time were not observed (all false)")
    if info.video_streams > 1:
        size = f", {info.video_size[0]}x{info.video_size[1]}" if info.video_size else ""
        out.append(
            f"{name} has {info.video_streams} video streams: only the first (stream 0{size}) was analysed; "
            "give one camera per file (e.g. ffmpeg -i IN -map 0:v:1 -map 0:a? -c copy OUT)"
        )
    return out


def replay_file(
    path: Path | str,
    *,
    out_dir: Path,
    session: str | None = None,
    participant: str = "p1",
    role: Role = "student",
    settings: ReplaySettings | None = None,
    show_progress: bool = False,
    quiet_native: bool = False,
    chat: Path | None = None,
    transcripts: bool = False,
) -> ReplayOutcome:
    """Analyse one recording and write its report; raises MediaSourceError for unusable input,
    ChatFileError for a bad ``chat`` file (``--chat``).

    ``transcripts``: keep what was said in ``report.transcript`` (words and questions are counted either way)."""
    settings = settings or ReplaySettings()
    location = str(path)  # a file path, or a URL PyAV opens (http, rtsp, ...)
    name = media_name(location)
    session_id = session or default_session_id(Path(name))
    source = _source(location, session=session_id, participant=participant, role=role, settings=settings)
    info = source.probe()
    track = Track(source=source, participant=participant, role=role, source_name=name,
                  expected_duration_s=info.duration_s)
    return _run([track], settings=settings, session_id=session_id, source_name=name,
                warnings=_track_warnings(name, info), out_dir=out_dir, show_progress=show_progress,
                quiet_native=quiet_native, class_mode=False, chat=chat, transcripts=transcripts)


def class_session_id(spec: ClassInput, session: str | None = None) -> str:
    """``--session``, else the manifest's session, else the folder's name."""
    if session:
        return session
    if spec.session:
        return spec.session
    return session_id_from(Path(spec.source).resolve().name)


def replay_class(
    spec: ClassInput,
    *,
    out_dir: Path,
    session: str | None = None,
    settings: ReplaySettings | None = None,
    show_progress: bool = False,
    quiet_native: bool = False,
    chat: Path | None = None,
    transcripts: bool = False,
) -> ReplayOutcome:
    """Analyse a whole class (:func:`~services.replay.class_inputs.load_class_input`) into one report.

    A recording that cannot be opened is reported in ``warnings`` and its participant's rows read
    not observed; MediaSourceError only when none of them can be.
    """
    from services.ingest.sources.errors import MediaSourceError

    settings = settings or ReplaySettings()
    session_id = class_session_id(spec, session)
    warnings: list[str] = []
    opened: list[tuple[TrackSpec, FileSource | None, MediaInfo | None]] = []
    errors: list[str] = []
    for t in spec.tracks:
        source = _source(t.location, session=session_id, participant=t.participant, role=t.role, settings=settings)
        try:
            info = source.probe()
        except MediaSourceError as exc:
            errors.append(exc.message)
            warnings.append(f"{t.source} (participant {t.participant}) could not be analysed: {exc.message}; "
                            "its rows read not observed")
            opened.append((t, None, None))
            continue
        warnings += _track_warnings(t.source, info)
        opened.append((t, source, info))
    if all(source is None for _, source, _ in opened):
        raise MediaSourceError(f"no recording in {spec.source} could be analysed; the first: {errors[0]}")
    # "relative to the earliest track": every readable recording's start counts, offset given or not
    starts = [container_start(t.location) if source is not None else None for t, source, _ in opened]
    offsets = container_offsets(starts, [t.offset_s for t, _, _ in opened])
    tracks = [
        Track(source=source, participant=t.participant, role=t.role, source_name=t.source, offset_s=offset,
              expected_duration_s=info.duration_s if info is not None else None)
        for (t, source, info), offset in zip(opened, offsets, strict=True)
    ]
    return _run(tracks, settings=settings, session_id=session_id, source_name=spec.source, warnings=warnings,
                out_dir=out_dir, show_progress=show_progress, quiet_native=quiet_native, class_mode=True,
                chat=chat, transcripts=transcripts)


def replay_gallery(
    path: Path | str,
    *,
    out_dir: Path,
    session: str | None = None,
    teacher: str | None = None,
    settings: ReplaySettings | None = None,
    show_progress: bool = False,
    quiet_native: bool = False,
) -> ReplayOutcome:
    """Analyse one gallery-view recording (a grid of tiles, mixed audio): one participant per tile.

    Tiles are found first (:func:`~services.replay.gallery_layout.scan_layout`), then each sampled
    frame is cut into them (:class:`~services.replay.gallery_source.GallerySource`) and the mixed
    audio's speech is attributed (:mod:`services.replay.gallery_speakers`). ``teacher``: the tile id
    (``p1``...) of the teacher. Raises MediaSourceError for unusable input or when no face is found.
    """
    from services.ingest.sources.errors import MediaSourceError
    from services.replay.gallery_layout import LayoutError, scan_layout
    from services.replay.gallery_source import GallerySource, TileCrop
    from services.replay.gallery_speakers import AttributionRule, GalleryScorer, SpeakerAttribution

    settings = settings or ReplaySettings()
    location = str(path)
    name = media_name(location)
    session_id = session or default_session_id(Path(name))
    probe = _source(location, session=session_id, participant="gallery", role="student", settings=settings)
    info = probe.probe()
    if not info.has_video or not info.width:
        raise MediaSourceError(f"{name} has no video track; a gallery replay needs the gallery's picture "
                               "(for audio only, replay it without --layout gallery)")
    with native_stderr_muted(quiet_native):
        try:
            layout = scan_layout(location, samples=settings.gallery_samples)
        except LayoutError as exc:
            raise MediaSourceError(f"{name}: {exc}; --layout gallery needs faces in tiles (replay a single "
                                   "person's recording without it)") from exc
    ids = [t.participant for t in layout.tiles]
    if teacher is not None and teacher not in ids:
        raise MediaSourceError(f"--teacher {teacher} is no tile of {name} (tiles: {', '.join(ids)}, row by row "
                               "from the top left); give one of those")
    tiles = [TileCrop(participant=t.participant, role="teacher" if t.participant == teacher else "student",
                      bbox=t.bbox) for t in layout.tiles]
    width = min(settings.gallery_frame_width, layout.width)
    sampled = settings.model_copy(update={"frame_width": width})
    inner = _source(location, session=session_id, participant="gallery", role="student", settings=sampled)
    source = GallerySource(inner=inner, tiles=tiles, frame_width=layout.width)
    tracks = [Track(source=source if i == 0 else None, participant=t.participant, role=t.role, source_name=name,
                    expected_duration_s=info.duration_s) for i, t in enumerate(tiles)]
    rule = AttributionRule(window_s=settings.gallery_window_s, min_motion=settings.gallery_min_motion,
                           margin=settings.gallery_margin)
    attribution = SpeakerAttribution(participants=ids, rule=rule, has_audio=info.has_audio,
                                     chunk_s=settings.audio_chunk_s)

    def amend(report: Report) -> Report:
        from services.replay.gallery_report import gallery_report

        return gallery_report(report, layout=layout, tiles=tiles, totals=attribution.totals if info.has_audio else None,
                              rule=rule)

    warnings = _track_warnings(name, info)
    return _run(tracks, settings=settings, session_id=session_id, source_name=name, warnings=warnings,
                out_dir=out_dir, show_progress=show_progress, quiet_native=quiet_native, class_mode=False,
                wrap=lambda engine: GalleryScorer(engine=engine, attribution=attribution), amend=amend,
                transcribe=False)
