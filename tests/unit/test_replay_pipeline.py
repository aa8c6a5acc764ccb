"""The replay pipeline with a fake source and scorer: decode in its own thread, bounded hand-off,
short batches, errors surfaced, report assembled with the real aggregation core."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from services.ingest.sources.errors import MediaSourceError
from services.replay.pipeline import ReplayJob, Track, default_session_id, run_replay
from shared.analytics.config import AggregationConfig
from shared.analytics.session import SessionAggregator
from shared.contracts.events import ScoreEvent
from shared.contracts.media import AudioChunk, MediaMessage, VideoFrame
from shared.contracts.timing import TimingTrail

pytestmark = pytest.mark.unit

BASE = 1_700_000_000.0


class FakeSource:
    """5 frames/s and 0.5 s audio chunks for ``seconds``; optionally fails part-way."""

    def __init__(self, *, seconds: float, fail_at: float | None = None) -> None:
        self.seconds = seconds
        self.fail_at = fail_at
        self.warnings: list[str] = []
        self.thread: int | None = None

    def __iter__(self) -> Iterator[MediaMessage]:
        self.thread = threading.get_ident()
        img = np.zeros((48, 64, 3), np.uint8)
        wave = np.zeros(8000, np.float32)
        steps = int(self.seconds * 10)
        for k in range(steps):
            t = k / 10
            if self.fail_at is not None and t >= self.fail_at:
                raise MediaSourceError("clip.mp4: damaged beyond repair; give a complete recording")
            head = dict(session="s", participant="p1", media_time=t, timing=TimingTrail(capture_ts=BASE + t))
            if k % 2 == 0:
                yield VideoFrame.from_image(img, seq=k // 2, **head)
            if k % 5 == 0:
                yield AudioChunk.from_waveform(wave, sample_rate=16000, seq=k // 5, **head)
        self.warnings.append("clip.mp4 ends early")


class FakeScorer:
    """Speaking from 2 s to 4 s, present throughout; records batches and its thread."""

    def __init__(self) -> None:
        self.batches: list[list[MediaMessage]] = []
        self.thread: int | None = None

    def load(self) -> None:
        return None

    def process(self, batch: Sequence[MediaMessage]) -> list[ScoreEvent]:
        self.thread = threading.get_ident()
        self.batches.append(list(batch))
        return [
            ScoreEvent(
                event_id=ScoreEvent.make_id(m.session, m.participant, m.seq), session=m.session,
                participant=m.participant, seq=m.seq, media_time=m.media_time, present=True, attentive=True,
                speaking=2.0 <= m.media_time < 4.0, hand_raised=False, engagement=0.7, confidence=0.9,
                timing=m.timing,
            )
            for m in batch if isinstance(m, VideoFrame)
        ]

    def flush(self) -> list[ScoreEvent]:
        return []


def _job(source: FakeSource, scorer: FakeScorer, **kw: object) -> ReplayJob:
    return ReplayJob(
        tracks=[Track(source=source, participant="p1", source_name="clip.mp4", expected_duration_s=6.0)],
        scorer=scorer, summariser=SessionAggregator(session="s", config=AggregationConfig()),
        session="s", source_name="clip.mp4", **kw,  # type: ignore[arg-type]
    )


def test_decode_runs_in_another_thread_with_short_batches_and_bounded_queue() -> None:
    source, scorer = FakeSource(seconds=6.0), FakeScorer()
    report, stats = run_replay(_job(source, scorer, queue_max=4, batch_max=16, batch_span_s=0.6))
    assert source.thread is not None and scorer.thread is not None and source.thread != scorer.thread
    assert stats.frames == 30 and stats.audio_chunks == 12 and stats.events == 30
    assert stats.queue_peak <= 4
    for batch in scorer.batches:
        assert batch[-1].media_time - batch[0].media_time <= 0.6 + 1e-9
        assert len(batch) <= 16
    assert [m.media_time for b in scorer.batches for m in b] == sorted(m.media_time for b in scorer.batches for m in b)
    assert report.session.duration_s == pytest.approx(6.0)
    assert [r.speaking for r in report.timeline] == [False, False, True, True, False, False]
    assert report.summary.participants["p1"].talk_time_s == pytest.approx(2.0, abs=0.01)
    assert report.warnings == ["clip.mp4 ends early"]


def test_source_error_surfaces_in_the_caller_and_stops_the_decoder() -> None:
    source = FakeSource(seconds=6.0, fail_at=3.0)
    before = threading.active_count()
    with pytest.raises(MediaSourceError, match="damaged beyond repair"):
        run_replay(_job(source, FakeScorer(), queue_max=2))
    assert threading.active_count() == before


def test_job_warnings_come_first_and_empty_participant_still_gets_rows() -> None:
    class Silent(FakeScorer):
        def process(self, batch: Sequence[MediaMessage]) -> list[ScoreEvent]:
            return []

    report, _ = run_replay(_job(FakeSource(seconds=3.0), Silent(), warnings=["no audio track"]))
    assert report.warnings[0] == "no audio track"
    assert len(report.timeline) == 3 and not any(r.present for r in report.timeline)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("class 3 (Mon).mp4", "class-3--Mon"), ("ok_name-1.webm", "ok_name-1"), ("???.mkv", "replay")],
)
def test_default_session_id(name: str, expected: str) -> None:
    from pathlib import Path

    assert default_session_id(Path(name)) == expected
