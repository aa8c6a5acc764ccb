"""A class replay with fake sources and a scripted scorer: several tracks on one session clock.

* tracks are merged in session-time order whatever each decoder's speed (the same batches, the
  same report), with offsets honoured: rows before a track starts read not observed;
* events keep their own ``media_time`` and get ``capture_ts = epoch + offset + media_time``;
* the aggregation core's class figures (teacher share, wait time, talk equity, late joiner)
  are right for a teacher and three students, and nothing is dropped as late;
* a track that fails part-way, or could not be opened, is reported and the rest analysed;
  only when every track fails before delivering anything does the replay raise.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from services.ingest.sources.errors import MediaSourceError
from services.replay.pipeline import ReplayJob, Track, run_replay
from shared.analytics.config import AggregationConfig
from shared.analytics.equity import gini
from shared.analytics.session import SessionAggregator
from shared.contracts.events import Role, ScoreEvent
from shared.contracts.media import AudioChunk, MediaMessage, VideoFrame
from shared.contracts.timing import TimingTrail

pytestmark = pytest.mark.unit

EPOCH = 1_700_000_000.0
IMG = np.zeros((8, 8, 3), np.uint8)
WAVE = np.zeros(8000, np.float32)


@dataclass(frozen=True)
class Plan:
    """A participant's own script (track time): present throughout unless ``absent``, speech spans."""

    pid: str
    seconds: float
    speech: tuple[tuple[float, float], ...] = ()
    absent: tuple[float, float] | None = None

    def speaking(self, t: float) -> bool:
        return any(a <= t < b for a, b in self.speech)

    def present(self, t: float) -> bool:
        return self.absent is None or not self.absent[0] <= t < self.absent[1]


class FakeSource:
    """5 frames/s and 0.5 s chunks in track time; its own wall base; optionally slow or failing."""

    def __init__(self, plan: Plan, *, delay_s: float = 0.0, fail_at: float | None = None) -> None:
        self.plan = plan
        self.delay_s = delay_s
        self.fail_at = fail_at
        self.warnings: list[str] = []

    def __iter__(self) -> Iterator[MediaMessage]:
        base = time.time()  # a decoder's own clock, as FileSource has
        for k in range(int(self.plan.seconds * 10)):
            t = k / 10
            if self.fail_at is not None and t >= self.fail_at:
                raise MediaSourceError(f"{self.plan.pid}.webm: damaged data; give a complete recording")
            if self.delay_s:
                time.sleep(self.delay_s)
            head = dict(session="c", participant=self.plan.pid, media_time=t, timing=TimingTrail(capture_ts=base + t))
            if k % 2 == 0:
                yield VideoFrame.from_image(IMG, seq=k // 2, **head)
            if k % 5 == 0:
                yield AudioChunk.from_waveform(WAVE, sample_rate=16000, seq=k // 5, **head)


class PlanScorer:
    """Scores each frame from its participant's plan (the engine's stand-in); records its batches."""

    def __init__(self, plans: Sequence[Plan], roles: dict[str, Role]) -> None:
        self.plans = {p.pid: p for p in plans}
        self.roles = roles
        self.batches: list[list[tuple[str, float]]] = []
        self.lock = threading.Lock()

    def load(self) -> None:
        return None

    def process(self, batch: Sequence[MediaMessage]) -> list[ScoreEvent]:
        self.batches.append([(m.participant, m.media_time) for m in batch])
        out = []
        for m in batch:
            if not isinstance(m, VideoFrame):
                continue
            plan = self.plans[m.participant]
            here = plan.present(m.media_time)
            out.append(ScoreEvent(
                event_id=ScoreEvent.make_id(m.session, m.participant, m.seq), session=m.session,
                participant=m.participant, role=self.roles[m.participant], seq=m.seq, media_time=m.media_time,
                present=here, attentive=here, speaking=plan.speaking(m.media_time), hand_raised=False,
                engagement=0.8 if here else 0.2, confidence=0.9, timing=m.timing,
            ))
        return out

    def flush(self) -> list[ScoreEvent]:
        return []


# session time: teacher talks 0.5-3.5 and 8-9.5; s1 answers at 5.5 (wait 2.0); s2 at 11 (wait 1.5);
# s3 joins at 4 s (offset), leaves the frame 2-4 s of its own time, talks 12-13 s of session time
PLANS = [
    Plan("teacher", 14.0, speech=((0.5, 3.5), (8.0, 9.5))),
    Plan("s1", 14.0, speech=((5.5, 7.5),)),
    Plan("s2", 14.0, speech=((11.0, 12.5),)),
    Plan("s3", 10.0, speech=((8.0, 9.0),), absent=(2.0, 4.0)),
]
OFFSETS = {"teacher": 0.0, "s1": 0.0, "s2": 0.0, "s3": 4.0}
ROLES: dict[str, Role] = {"teacher": "teacher", "s1": "student", "s2": "student", "s3": "student"}


def _replay(
    *, delays: dict[str, float] | None = None, fail: dict[str, float] | None = None, unopened: tuple[str, ...] = (),
    queue_max: int = 16,
) -> tuple[object, object, PlanScorer, SessionAggregator]:
    delays, fail = delays or {}, fail or {}
    scorer = PlanScorer(PLANS, ROLES)
    aggregator = SessionAggregator(session="c", config=AggregationConfig(), origin=EPOCH)
    tracks = [
        Track(
            source=None if p.pid in unopened else FakeSource(p, delay_s=delays.get(p.pid, 0.0),
                                                             fail_at=fail.get(p.pid)),
            participant=p.pid, role=ROLES[p.pid], source_name=f"{p.pid}.webm", offset_s=OFFSETS[p.pid],
            expected_duration_s=p.seconds,
        )
        for p in PLANS
    ]
    job = ReplayJob(tracks=tracks, scorer=scorer, summariser=aggregator, session="c", source_name="class/",
                    class_mode=True, epoch=EPOCH, batch_max=16, batch_span_s=0.6, queue_max=queue_max)
    report, stats = run_replay(job)
    return report, stats, scorer, aggregator


def test_tracks_merge_on_the_session_clock_with_offsets() -> None:
    report, stats, scorer, aggregator = _replay()
    assert [(p.id, p.role, p.source) for p in report.participants] == [  # type: ignore[attr-defined]
        (p.pid, ROLES[p.pid], f"{p.pid}.webm") for p in PLANS
    ]
    merged = [OFFSETS[pid] + t for b in scorer.batches for pid, t in b]
    assert merged == sorted(merged)  # session-time order across tracks
    for b in scorer.batches:
        times = [OFFSETS[pid] + t for pid, t in b]
        assert times[-1] - times[0] <= 0.6 + 1e-9
    assert report.session.duration_s == pytest.approx(14.0)  # type: ignore[attr-defined]
    rows = report.timeline  # type: ignore[attr-defined]
    assert len(rows) == 14 * 4
    assert [r.participant for r in rows[:4]] == ["teacher", "s1", "s2", "s3"]  # track order within a second
    s3 = [r for r in rows if r.participant == "s3"]
    assert all(not r.present and r.confidence == 0.0 for r in s3[:4])  # before the track starts: not observed
    assert [r.present for r in s3[4:]] == [True, True, False, False, True, True, True, True, True, True]
    assert [r.speaking for r in s3] == [False] * 12 + [True, False]
    assert stats.tracks == 4 and stats.frames == 5 * (14 * 3 + 10)  # type: ignore[attr-defined]
    assert aggregator.late_events == 0 and aggregator.duplicate_events == 0


def test_events_are_restamped_onto_the_session_clock() -> None:
    seen: list[ScoreEvent] = []
    aggregator = SessionAggregator(session="c", config=AggregationConfig(), origin=EPOCH)
    original = aggregator.add_score

    def spy(e: ScoreEvent) -> None:
        seen.append(e)
        original(e)

    aggregator.add_score = spy  # type: ignore[method-assign]
    scorer = PlanScorer(PLANS[3:], ROLES)
    track = Track(source=FakeSource(PLANS[3]), participant="s3", role="student", source_name="s3.webm",
                  offset_s=4.0, expected_duration_s=10.0)
    run_replay(ReplayJob(tracks=[track], scorer=scorer, summariser=aggregator, session="c", source_name="x",
                         class_mode=True, epoch=EPOCH))
    assert seen and all(e.timing.capture_ts == pytest.approx(EPOCH + 4.0 + e.media_time) for e in seen)
    assert min(e.media_time for e in seen) == 0.0  # media_time stays the track's own
    summary = aggregator.summary()
    assert summary.participants["s3"].joined_at == pytest.approx(4.0)


def test_class_figures_with_a_teacher_and_three_students() -> None:
    report, _, _, _ = _replay()
    s = report.summary  # type: ignore[attr-defined]
    talk = {pid: p.talk_time_s for pid, p in s.participants.items()}
    # frames every 0.2 s, each lasting 0.2 s: 0.5-3.5 -> frames 0.6..3.4 (3.0 s); 8-9.5 -> 8.0..9.4 (1.6 s)
    assert talk == pytest.approx({"teacher": 4.6, "s1": 2.0, "s2": 1.6, "s3": 1.0}, abs=1e-6)
    assert s.teacher_talk_share == pytest.approx(4.6 / 9.2)
    assert s.talk_equity_gini == pytest.approx(gini([2.0, 1.6, 1.0]))
    # teacher's speech ends at 3.6 -> s1 at 5.6 (2.0 s); ends at 9.6 -> s2 at 11.0 (1.4 s); s3 answers nobody
    assert s.mean_wait_time_s == pytest.approx((2.0 + 1.4) / 2, abs=1e-6)
    assert s.participants["s3"].present_ratio == pytest.approx(0.8)
    assert s.participants["s3"].joined_at == pytest.approx(4.0)
    assert s.participants["s3"].away_time_s == pytest.approx(2.0)
    # students observed seconds only: s3's 4 s before joining do not count against the class
    assert s.attentive_ratio == pytest.approx((14 + 14 + 8) / (14 + 14 + 10))


def test_the_same_report_whatever_each_decoder_speed() -> None:
    fast, _, fast_scorer, _ = _replay()
    slow, _, slow_scorer, _ = _replay(delays={"s1": 0.002, "teacher": 0.001}, queue_max=8)
    assert slow_scorer.batches == fast_scorer.batches
    assert slow.timeline == fast.timeline  # type: ignore[attr-defined]
    assert slow.summary == fast.summary  # type: ignore[attr-defined]


def test_a_track_failing_part_way_is_reported_and_the_rest_analysed() -> None:
    before = threading.active_count()
    report, _, _, _ = _replay(fail={"s2": 6.0})
    assert threading.active_count() == before
    (warning,) = report.warnings  # type: ignore[attr-defined]
    assert "s2.webm (participant s2) stopped at 5.8 s" in warning and "damaged data" in warning
    s2 = [r for r in report.timeline if r.participant == "s2"]  # type: ignore[attr-defined]
    assert all(r.present for r in s2[:5]) and not any(r.present or r.confidence for r in s2[6:])
    assert report.summary.participants["s1"].talk_time_s == pytest.approx(2.0)  # type: ignore[attr-defined]


def test_an_unopened_track_keeps_its_rows_not_observed() -> None:
    report, _, _, _ = _replay(unopened=("s1",))
    assert [p.id for p in report.participants] == ["teacher", "s1", "s2", "s3"]  # type: ignore[attr-defined]
    s1 = [r for r in report.timeline if r.participant == "s1"]  # type: ignore[attr-defined]
    assert len(s1) == 14 and not any(r.present or r.confidence for r in s1)
    assert "s1" not in report.summary.participants  # type: ignore[attr-defined]


def test_every_track_failing_before_any_media_raises_the_media_error() -> None:
    with pytest.raises(MediaSourceError, match="damaged data"):
        _replay(fail={p.pid: 0.0 for p in PLANS})
    report, _, _, _ = _replay(fail={p.pid: 1.0 for p in PLANS})  # all broke part-way: what came is reported
    assert len(report.warnings) == 4 and report.session.duration_s == pytest.approx(4.0 + 1.0)  # type: ignore[attr-defined]


def test_single_file_mode_lists_no_source_and_raises_a_failing_track() -> None:
    scorer = PlanScorer(PLANS[:1], ROLES)
    track = Track(source=FakeSource(PLANS[0], fail_at=2.0), participant="teacher", role="teacher",
                  source_name="t.webm")
    job = ReplayJob(tracks=[track], scorer=scorer, summariser=SessionAggregator(session="c",
                    config=AggregationConfig()), session="c", source_name="t.webm")
    with pytest.raises(MediaSourceError):
        run_replay(job)
    ok = Track(source=FakeSource(PLANS[0]), participant="teacher", role="teacher", source_name="t.webm")
    report, _ = run_replay(ReplayJob(tracks=[ok], scorer=scorer, summariser=SessionAggregator(
        session="c", config=AggregationConfig()), session="c", source_name="t.webm"))
    doc = report.model_dump(mode="json")
    assert doc["participants"] == [{"id": "teacher", "role": "teacher"}]
