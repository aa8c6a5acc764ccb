"""Wiring a file replay: ingest's FileSource + the inference engine + the aggregation core."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.replay.pipeline import ReplayJob, ReplayStats, Role, default_session_id, run_replay
from services.replay.progress import NoProgress, ProgressBar, ProgressSink
from services.replay.report_files import ReportPaths, write_report
from services.replay.settings import ReplaySettings
from shared.contracts.report import Report


@dataclass(frozen=True)
class ReplayOutcome:
    report: Report
    paths: ReportPaths
    stats: ReplayStats


def replay_file(
    path: Path,
    *,
    out_dir: Path,
    session: str | None = None,
    participant: str = "p1",
    role: Role = "student",
    settings: ReplaySettings | None = None,
    show_progress: bool = False,
) -> ReplayOutcome:
    """Analyse one recording and write its report; raises MediaSourceError for unusable input."""
    from services.aggregator.core import AggregationConfig, SessionAggregator
    from services.inference.engine import InferenceEngine
    from services.inference.settings import InferenceSettings
    from services.ingest.sources.file import FileSource

    settings = settings or ReplaySettings()
    session_id = session or default_session_id(path)
    source = FileSource(
        path=str(path), session=session_id, participant=participant, role=role, fps=settings.analysis_fps,
        frame_width=settings.frame_width, audio_chunk_s=settings.audio_chunk_s, realtime=False,
    )
    info = source.probe()
    warnings = []
    if not info.has_video:
        warnings.append(
            f"{path.name} has no video track: presence, attention and hand raising were not observed (all false)"
        )
    if not info.has_audio:
        warnings.append(f"{path.name} has no audio track: speaking and talk time were not observed (all false)")
    engine = InferenceEngine(settings=InferenceSettings())
    engine.load()
    progress: ProgressSink = ProgressBar(total_s=info.duration_s) if show_progress else NoProgress()
    try:
        job = ReplayJob(
            source=source, scorer=engine, summariser=SessionAggregator(session=session_id, config=AggregationConfig()),
            session=session_id, source_name=path.name, participant=participant, role=role,
            expected_duration_s=info.duration_s, warnings=warnings, batch_max=settings.batch_max,
            queue_max=settings.queue_max, frame_step_s=1.0 / settings.analysis_fps, progress=progress,
        )
        report, stats = run_replay(job)
    finally:
        engine.close()
    return ReplayOutcome(report=report, paths=write_report(report, out_dir), stats=stats)
