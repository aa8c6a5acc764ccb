"""The fault tier's figures (``shared.testkit.fault_report``) and its bar (``tests/faults/verdict.py``), on
hand-made events: a harness that miscounts would let a fault test pass or fail for the wrong reason."""

from __future__ import annotations

import pytest

from shared.contracts.events import Alert, ClassAggregate, ScoreEvent, WindowRef
from shared.contracts.timing import StageStamp, TimingTrail
from shared.testkit.fault_report import (
    FaultReport,
    aggregator_resumed,
    alert_figures,
    inference_resumed,
    metric_sum,
    score_figures,
    step_runs,
    window_figures,
)
from tests.faults.verdict import problems

pytestmark = pytest.mark.unit


def _score(participant: str, seq: int, *, present: bool = True, capture: float = 100.0, producer: str = "w1",
           emitted: float | None = None) -> ScoreEvent:
    stages = [StageStamp(stage="inference", received=capture, emitted=emitted if emitted is not None else capture)]
    return ScoreEvent(event_id=ScoreEvent.make_id("s", participant, seq), session="s", participant=participant,
                      seq=seq, media_time=seq * 0.2, present=present, attentive=True, speaking=False,
                      hand_raised=False, engagement=0.5, confidence=0.9, producer=producer,
                      timing=TimingTrail(capture_ts=capture, stages=stages))


def _window(start: float, *, size: float = 1.0, emitted: float = 0.0) -> ClassAggregate:
    return ClassAggregate(
        event_id=f"s/tumbling/{size}/{start}", session="s",
        window=WindowRef(size_s=size, start=start, end=start + size),
        participants_total=1, participants_present=1, attentive_ratio=1.0, engagement_mean=0.5, engagement_p10=0.5,
        engagement_p90=0.5, teacher_talk_share=0.0, talk_equity_gini=0.0, hand_equity_gini=0.0,
        timing=TimingTrail(capture_ts=0.0, stages=[StageStamp(stage="aggregator", received=emitted, emitted=emitted)]),
    )


def test_a_redelivered_score_is_a_duplicate_and_a_changed_one_a_conflict() -> None:
    report = FaultReport(fault="x")
    score_figures(report, [_score("a", 0), _score("a", 0, producer="w2"), _score("a", 2), _score("a", 2, present=False),
                           _score("a", 3)])
    assert (report.scores, report.score_records, report.duplicates) == (3, 5, 2)
    assert report.conflicting_ids == 1  # seq 2; seq 0 differs only in producer/timing
    assert report.frames_scored == 2  # even seqs are video steps; 3 is an audio-only step


def test_missing_class_windows_are_counted_between_the_first_and_the_last() -> None:
    report = FaultReport(fault="x")
    window_figures(report, [_window(0.0), _window(1.0), _window(4.0), _window(5.0), _window(0.0, size=10.0)])
    assert (report.windows, report.windows_missing) == (4, 2)


def test_only_raised_away_and_camera_off_alerts_are_false_alerts() -> None:
    def alert(kind: str, state: str) -> Alert:
        return Alert(event_id=f"{kind}{state}", session="s", participant="a", kind=kind, state=state,  # type: ignore[arg-type]
                     since=1.0, at=12.0, message="m", timing=TimingTrail(capture_ts=0.0))

    report = FaultReport(fault="x")
    alert_figures(report, [alert("away", "raised"), alert("away", "cleared"), alert("camera_off", "raised"),
                           alert("attention_dip", "raised")])
    assert report.false_alerts == ["away a@12", "camera_off a@12"]


def test_steps_that_could_raise_an_alert_are_shown_as_runs() -> None:
    steps = [_score("a", 0), _score("a", 2), _score("a", 2, producer="w2"), _score("a", 5), _score("a", 7),
             _score("a", 20, present=False), _score("a", 22, producer="w2", present=False), _score("b", 4)]
    assert step_runs(s for s in steps if s.participant == "a") == (
        "in frame x2 0.0-0.4 (w1,w2) | audio-only x2 1.0-1.4 (w1) | gap 2.6 s | not in frame x2 4.0-4.4 (w1,w2)")
    report = FaultReport(fault="x")
    score_figures(report, steps)
    assert report.camera_off_steps == 2
    assert report.timelines == {"a": step_runs(steps[:7])}  # b was in frame throughout


def test_resumed_means_every_participant_scored_again_after_the_fault() -> None:
    scores = [_score("a", 0, capture=5.0), _score("a", 2, capture=11.0, emitted=12.5),
              _score("b", 0, capture=5.0), _score("b", 2, capture=10.5, emitted=14.0)]
    assert inference_resumed(scores, 10.0) == pytest.approx(4.0)
    assert inference_resumed(scores[:3], 10.0) is None  # b never scored again
    windows = [_window(3.0, emitted=9.0), _window(8.0, emitted=13.0), _window(12.0, emitted=15.0)]
    assert aggregator_resumed(windows, 10.0, origin=0.0) == pytest.approx(5.0)  # the window at 12 s, not 8 s


def test_metric_sum_adds_the_matching_samples() -> None:
    text = ('# HELP x\nclassroom_total 9\nclasspulse_messages_total{stage="ingest",kind="video"} 3.0\n'
            'classpulse_messages_total{stage="ingest",kind="audio"} 5.0\n'
            'classpulse_messages_total{stage="inference",kind="video"} 7.0\n')
    assert metric_sum(text, "classpulse_messages_total", {"stage": "ingest", "kind": "video"}) == 3.0
    assert metric_sum(text, "classpulse_messages_total") == 15.0


def _clean() -> FaultReport:
    return FaultReport(
        fault="x", healthy_after_s=dict.fromkeys(("ingest", "w1", "w2", "aggregator", "gateway"), 0.0),
        resumed_after_s={"inference": 2.0, "aggregator": 3.0, "gateway": 1.0}, frames_in=100, scores=95,
        frames_scored=90, score_records=97, dropped_counted=10, gateway_scores=95, gateway_left="3/3", windows=30,
        exit_codes=dict.fromkeys(("ingest", "w1", "w2", "aggregator", "gateway"), 0),
    )


def test_a_clean_run_has_no_problems_and_each_shortfall_is_named() -> None:
    assert problems(_clean()) == []
    broken = _clean()
    broken.conflicting_ids, broken.gateway_scores, broken.dropped_counted = 2, 80, 0
    broken.windows_missing, broken.false_alerts = 3, ["away a@12"]
    broken.healthy_after_s["w1"], broken.resumed_after_s["aggregator"] = None, 45.0
    broken.gateway_left, broken.exit_codes["gateway"] = "1/3", 1
    found = "\n".join(problems(broken))
    for text in ("2 score ids", "kept 80 of the 95", "10 of 100 published frames", "3 one-second class windows",
                 "away a@12", "w1 not healthy", "aggregator output", "1/3 students", "{'gateway': 1}"):
        assert text in found
