"""Wiring a file replay: ingest's FileSource + the inference engine + the aggregation core."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from services.replay.pipeline import ReplayJob, ReplayStats, default_session_id, run_replay
from services.replay.progress import NoProgress, ProgressBar, ProgressSink
from services.replay.report_files import ReportPaths, write_report
from services.replay.settings import ReplaySettings
from shared.contracts.events import Role
from shared.contracts.report import Report
from shared.torch_threads import torch_threads


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
) -> ReplayOutcome:
    """Analyse one recording and write its report; raises MediaSourceError for unusable input."""
    from services.inference.engine import InferenceEngine
    from services.inference.perception_registry import build_prefetch
    from services.inference.settings import InferenceSettings
    from services.ingest.sources.file import FileSource
    from shared.analytics.config import AggregationConfig
    from shared.analytics.session import SessionAggregator

    settings = settings or ReplaySettings()
    location = str(path)  # a file path, or a URL PyAV opens (http, rtsp, ...)
    name = media_name(location)
    session_id = session or default_session_id(Path(name))
    source = FileSource(
        path=location, session=session_id, participant=participant, role=role, fps=settings.analysis_fps,
        frame_width=settings.frame_width, audio_chunk_s=settings.audio_chunk_s, realtime=False,
    )
    info = source.probe()
    warnings = []
    if not info.has_video:
        warnings.append(
            f"{name} has no video track: presence, attention and hand raising were not observed (all false)"
        )
    if not info.has_audio:
        warnings.append(f"{name} has no audio track: speaking and talk time were not observed (all false)")
    inference = InferenceSettings().model_copy(update={"mesh_trackers": settings.mesh_trackers})
    prefetch = build_prefetch(inference) if settings.perception_ahead else None
    engine = InferenceEngine(settings=inference, backend=prefetch)
    summariser = SessionAggregator(session=session_id, config=AggregationConfig())
    with native_stderr_muted(quiet_native) as stderr:
        progress: ProgressSink = ProgressBar(total_s=info.duration_s, stream=stderr) if show_progress else NoProgress()
        job = ReplayJob(
            source=source, scorer=engine, summariser=summariser, session=session_id, source_name=name,
            participant=participant, role=role, expected_duration_s=info.duration_s, warnings=warnings,
            batch_max=settings.batch_max, batch_span_s=settings.batch_span_s, queue_max=settings.queue_max,
            frame_step_s=1.0 / settings.analysis_fps,
            progress=progress, prepare_audio=engine.prepare_audio if settings.audio_ahead else None,
            prepare_frame=prefetch.submit if prefetch is not None else None,
        )
        try:
            with torch_threads(inference.torch_threads):  # the fusion model is tiny: more threads only contend
                report, stats = run_replay(job)  # loads the engine while decoding starts
        finally:
            engine.close()
    return ReplayOutcome(report=report, paths=write_report(report, out_dir), stats=stats)
