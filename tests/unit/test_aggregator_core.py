"""Aggregation core: windows, durations, participation figures, alerts on scripted timelines."""

from __future__ import annotations

import pytest

from services.aggregator.scripted import Behaviour, Script, between, constant, lifecycle_event, score_event
from shared.analytics.config import AggregationConfig
from shared.analytics.session import SessionAggregator
from shared.contracts.events import Alert, ClassAggregate

pytestmark = pytest.mark.unit

BASE = 1_700_000_000.0


def run_all(agg: SessionAggregator, script: Script) -> tuple[list[ClassAggregate], list[Alert]]:
    """Feed every event in order, advancing the clock to each event's time, then flush."""
    aggs: list[ClassAggregate] = []
    alerts: list[Alert] = []
    for ev in script.events():
        agg.add_score(ev)
        a, b = agg.advance(ev.timing.capture_ts)
        aggs += a
        alerts += b
    a, b = agg.flush()
    return aggs + a, alerts + b


def test_talk_time_is_a_duration_not_an_event_count() -> None:
    script = Script(session="s1", base=BASE)
    script.add("t", between(0, 4, Behaviour(speaking=True)), role="teacher", end=10)
    script.add("a", between(5, 7, Behaviour(speaking=True)), end=10)
    agg = SessionAggregator(session="s1", config=AggregationConfig())
    run_all(agg, script)
    s = agg.summary()
    assert s.participants["t"].talk_time_s == pytest.approx(4.0, abs=1e-6)
    assert s.participants["a"].talk_time_s == pytest.approx(2.0, abs=1e-6)
    assert s.teacher_talk_share == pytest.approx(4 / 6)
    assert s.participants["a"].turns == 1
    # the student answered 1 s after the teacher stopped
    assert s.mean_wait_time_s == pytest.approx(1.0, abs=1e-6)
    assert s.duration_s == pytest.approx(10.0, abs=1e-6)


def test_event_duration_follows_the_rate_of_the_source() -> None:
    # 10 fps source: events 0.1 s apart still add up to the real time
    script = Script(session="s2", base=BASE, step_s=0.1)
    script.add("a", constant(speaking=True), end=3)
    agg = SessionAggregator(session="s2", config=AggregationConfig(step_s=0.1))
    run_all(agg, script)
    assert agg.summary().participants["a"].talk_time_s == pytest.approx(3.0, abs=1e-6)


def test_tumbling_and_hopping_windows_cover_the_session() -> None:
    script = Script(session="s3", base=BASE)
    script.add("a", constant(), end=125)
    aggs, _ = run_all(SessionAggregator(session="s3", config=AggregationConfig()), script)
    tumbling = {size: [a for a in aggs if a.window.kind == "tumbling" and a.window.size_s == size]
                for size in (1.0, 10.0, 60.0)}
    assert len(tumbling[1.0]) == 125
    assert len(tumbling[10.0]) == 13
    assert [a.window.start for a in tumbling[60.0]] == [0.0, 60.0, 120.0]
    hopping = [a for a in aggs if a.window.kind == "hopping"]
    assert [a.window.start for a in hopping][:3] == [0.0, 10.0, 20.0]
    assert all(a.window.size_s == 60.0 for a in hopping)
    full = tumbling[10.0][0]
    assert full.participants["a"].present_ratio == 1.0
    assert full.participants_present == 1
    assert full.event_id == "s3/tumbling/10/0"
    assert full.timing.capture_ts == BASE + 10.0
    assert len({a.event_id for a in aggs}) == len(aggs)


def test_duplicates_and_late_events_are_counted_and_ignored() -> None:
    cfg = AggregationConfig(lateness_s=1.0)
    agg = SessionAggregator(session="s4", config=cfg)
    on = Behaviour(speaking=True)
    events = [score_event(session="s4", participant="a", seq=i, t=i * 0.2, base=BASE, b=on) for i in range(50)]
    for ev in events:
        agg.add_score(ev)
        agg.add_score(ev)
    assert agg.duplicate_events == 50
    agg.advance(BASE + 9.8)
    late = score_event(session="s4", participant="a", seq=999, t=5.0, base=BASE, b=on)
    agg.add_score(late)
    assert agg.late_events == 1
    agg.flush()
    assert agg.summary().participants["a"].talk_time_s == pytest.approx(10.0, abs=1e-6)


def test_away_alert_raises_after_threshold_and_clears_on_return() -> None:
    script = Script(session="s5", base=BASE)
    script.add("a", between(10, 25, Behaviour(present=False, attentive=False)), end=40)
    cfg = AggregationConfig(away_after_s=10.0)
    _, alerts = run_all(SessionAggregator(session="s5", config=cfg), script)
    away = [a for a in alerts if a.kind == "away"]
    assert [(a.state, a.since, a.at) for a in away] == [("raised", 10.0, 20.0), ("cleared", 10.0, 25.0)]
    assert away[0].participant == "a"


def test_a_participant_who_stops_sending_is_not_away_without_evidence() -> None:
    """Missing scores are the pipeline's (a pause, stale frames dropped); ingest reports a stream that stops."""
    script = Script(session="s6", base=BASE)
    script.add("a", constant(), end=5)
    script.add("b", constant(), end=30)
    _, alerts = run_all(SessionAggregator(session="s6", config=AggregationConfig(away_after_s=10.0)), script)
    assert [a for a in alerts if a.kind == "away"] == []


def test_a_pipeline_gap_after_a_few_absent_steps_raises_no_away_or_camera_off() -> None:
    """The fault tier's false `away` (kafka_pause, 2026-12-02): the first three steps said "no face", then a
    Kafka pause held the next steps while the wall clock moved on; the away must wait for steps that say so
    for the whole threshold, not be raised by the clock through the gap (the late steps cannot clear it)."""
    cfg = AggregationConfig(away_after_s=10.0, camera_off_after_s=5.0)
    agg = SessionAggregator(session="s6b", config=cfg)
    agg.add_lifecycle(lifecycle_event(session="s6b", participant="a", kind="joined", t=0.0, base=BASE))
    alerts: list[Alert] = []
    absent, audio_only = Behaviour(present=False), Behaviour(present=False, camera_on=False)
    for seq, (t, b) in enumerate([(0.0, absent), (0.4, absent), (0.8, audio_only), (1.2, audio_only)]):
        agg.add_score(score_event(session="s6b", participant="a", seq=seq, t=t, base=BASE, b=b))
        alerts += agg.advance(BASE + t)[1]
    for wall in range(2, 40):  # the pause: nothing arrives, the (wall) clock keeps closing windows
        alerts += agg.advance(BASE + wall)[1]
    for seq, t in enumerate([40.0 + 0.4 * i for i in range(20)], start=10):  # after it: steps, in frame
        agg.add_score(score_event(session="s6b", participant="a", seq=seq, t=t, base=BASE, b=Behaviour()))
        alerts += agg.advance(BASE + t)[1]
    alerts += agg.flush()[1]
    assert [(a.kind, a.state) for a in alerts if a.kind in ("away", "camera_off")] == []


def test_absences_on_both_sides_of_a_pipeline_gap_do_not_add_up_to_away() -> None:
    """The fault tier's second false `away` (kafka_pause): four "no face" steps, then the steps in frame were held
    by the pause and dropped as late, then 7 s of "no face" after it (frames spoiled by the backlog), then in
    frame again. Neither stretch lasts `away_after_s`; the gap between them is no evidence."""
    cfg = AggregationConfig(away_after_s=10.0, camera_off_after_s=5.0)
    agg = SessionAggregator(session="s6d", config=cfg)
    alerts: list[Alert] = []
    steps = ([(0.56 + 0.4 * i, Behaviour(present=False)) for i in range(4)]
             + [(24.64, Behaviour(present=False, camera_on=False))]
             + [(25.2 + 0.8 * i, Behaviour(present=False)) for i in range(9)]
             + [(31.97 + 0.4 * i, Behaviour()) for i in range(10)])
    for seq, (t, b) in enumerate(steps):
        for wall in range(int(agg.watermark - BASE) + 1 if seq else 0, int(t)):
            alerts += agg.advance(BASE + wall)[1]  # the clock goes on through the gap
        agg.add_score(score_event(session="s6d", participant="a", seq=seq, t=t, base=BASE, b=b))
        alerts += agg.advance(BASE + t)[1]
    alerts += agg.flush()[1]
    assert [(a.kind, a.state) for a in alerts if a.kind in ("away", "camera_off")] == []


def test_a_short_gap_inside_a_real_absence_does_not_delay_the_away() -> None:
    script = Script(session="s6e", base=BASE)
    script.add("a", between(10, 30, Behaviour(present=False)), end=40)
    events = [ev for ev in script.events() if not 14.0 <= ev.media_time < 16.0]  # 2 s of frames dropped as stale
    agg = SessionAggregator(session="s6e", config=AggregationConfig(away_after_s=10.0))
    alerts: list[Alert] = []
    for ev in events:
        agg.add_score(ev)
        alerts += agg.advance(ev.timing.capture_ts)[1]
    alerts += agg.flush()[1]
    assert [(a.state, a.since, a.at) for a in alerts if a.kind == "away"] == [("raised", 10.0, 20.0),
                                                                              ("cleared", 10.0, 30.0)]


def test_the_clock_alone_never_raises_away_steps_after_a_gap_count_again_from_there() -> None:
    cfg = AggregationConfig(away_after_s=10.0)
    agg = SessionAggregator(session="s6c", config=cfg)
    alerts: list[Alert] = []
    absent = Behaviour(present=False)
    for seq in range(13):  # "not in frame" from 0 to 5 s
        agg.add_score(score_event(session="s6c", participant="a", seq=seq, t=0.4 * seq, base=BASE, b=absent))
        alerts += agg.advance(BASE + 0.4 * seq)[1]
    alerts += agg.advance(BASE + 11.5)[1]  # the clock passes the threshold: no step since 5 s
    assert [a for a in alerts if a.kind == "away"] == []
    for seq in range(13, 50):  # steps again from 10.9 s, still "not in frame"
        t = 10.9 + 0.4 * (seq - 13)
        agg.add_score(score_event(session="s6c", participant="a", seq=seq, t=t, base=BASE, b=absent))
        alerts += agg.advance(BASE + t)[1]
    alerts += agg.flush()[1]
    assert [(a.state, a.since, a.at) for a in alerts if a.kind == "away"] == [("raised", 10.9, 20.9)]


def test_left_participant_is_not_away() -> None:
    agg = SessionAggregator(session="s7", config=AggregationConfig(away_after_s=10.0))
    script = Script(session="s7", base=BASE)
    script.add("a", constant(), end=5)
    script.add("b", constant(), end=30)
    agg.add_lifecycle(lifecycle_event(session="s7", participant="a", kind="left", t=5.0, base=BASE))
    _, alerts = run_all(agg, script)
    assert [a for a in alerts if a.kind == "away"] == []


def test_attention_dip_raises_and_clears() -> None:
    script = Script(session="s8", base=BASE)
    dip = Behaviour(attentive=False)
    for pid in ("a", "b", "c"):
        script.add(pid, between(20, 60, dip), end=90)
    cfg = AggregationConfig(attention_threshold=0.5, attention_dip_s=30.0)
    _, alerts = run_all(SessionAggregator(session="s8", config=cfg), script)
    dips = [(a.state, a.since, a.at) for a in alerts if a.kind == "attention_dip"]
    assert dips == [("raised", 20.0, 50.0), ("cleared", 20.0, 60.0)]


def test_short_attention_dip_raises_nothing() -> None:
    script = Script(session="s9", base=BASE)
    script.add("a", between(20, 45, Behaviour(attentive=False)), end=90)
    _, alerts = run_all(SessionAggregator(session="s9", config=AggregationConfig(attention_dip_s=30.0)), script)
    assert [a for a in alerts if a.kind == "attention_dip"] == []


def test_silence_and_camera_off_alerts() -> None:
    script = Script(session="s10", base=BASE)
    script.add("a", between(0, 2, Behaviour(speaking=True)), end=200)
    script.add("b", between(150, 152, Behaviour(speaking=True), Behaviour()), end=200)
    script.add("c", between(30, 40, Behaviour(camera_on=False, present=False)), end=200)
    cfg = AggregationConfig(silence_after_s=120.0, camera_off_after_s=5.0, away_after_s=60.0)
    _, alerts = run_all(SessionAggregator(session="s10", config=cfg), script)
    silence = [(a.state, a.since, a.at) for a in alerts if a.kind == "silence"]
    assert silence == [("raised", 2.0, 122.0), ("cleared", 2.0, 150.0)]
    cam = [(a.participant, a.state, a.at) for a in alerts if a.kind == "camera_off"]
    assert cam == [("c", "raised", 35.0), ("c", "cleared", 40.0)]


def test_hand_queue_in_raise_order_and_equity() -> None:
    script = Script(session="s11", base=BASE)
    up = Behaviour(hand_raised=True)
    script.add("a", between(3, 9, up), end=10)
    script.add("b", between(1, 9, up), end=10)
    script.add("c", constant(), end=10)
    aggs, _ = run_all(SessionAggregator(session="s11", config=AggregationConfig()), script)
    window = next(a for a in aggs if a.window.kind == "tumbling" and a.window.size_s == 1.0 and a.window.start == 5.0)
    assert window.hand_queue == ["b", "a"]
    ten = next(a for a in aggs if a.window.size_s == 10.0)
    assert ten.hand_equity_gini == pytest.approx(1 / 3)
    assert ten.participants["c"].hand_raised is False


def test_camera_off_from_lifecycle_events() -> None:
    agg = SessionAggregator(session="s12", config=AggregationConfig(camera_off_after_s=5.0))
    script = Script(session="s12", base=BASE)
    script.add("a", constant(), end=30)
    agg.add_lifecycle(lifecycle_event(session="s12", participant="a", kind="camera_off", t=5.0, base=BASE))
    agg.add_lifecycle(lifecycle_event(session="s12", participant="a", kind="camera_on", t=12.0, base=BASE))
    _, alerts = run_all(agg, script)
    assert [(a.state, a.since, a.at) for a in alerts if a.kind == "camera_off"] == [
        ("raised", 5.0, 10.0), ("cleared", 5.0, 12.0)]


def test_late_joiner_and_summary_figures() -> None:
    script = Script(session="s13", base=BASE)
    script.add("a", between(0, 10, Behaviour(present=False, attentive=False)), end=40)
    script.add("b", constant(attentive=False), start=20.0, end=40)
    agg = SessionAggregator(session="s13", config=AggregationConfig(late_after_s=15.0))
    run_all(agg, script)
    s = agg.summary()
    assert s.participants["a"].joined_at == 0.0 and not s.participants["a"].late
    assert s.participants["b"].joined_at == pytest.approx(20.0) and s.participants["b"].late
    assert s.participants["a"].away_time_s == pytest.approx(10.0, abs=1e-6)
    assert s.participants["a"].present_ratio == pytest.approx(0.75, abs=1e-6)
    assert s.participants["b"].attentive_ratio == 0.0
    assert s.attentive_ratio == pytest.approx(30 / 60, abs=1e-6)


def test_a_wild_clock_does_not_loop_over_empty_windows() -> None:
    agg = SessionAggregator(session="s14", config=AggregationConfig())
    far = 10_000_000.0  # 116 days later: e.g. one participant's broken capture clock
    for seq, t in enumerate((0.0, 0.2, far, far + 0.2)):
        agg.add_score(score_event(session="s14", participant="a", seq=seq, t=t, base=BASE, b=Behaviour()))
    aggs, _ = agg.advance(BASE + far + 10)
    starts = sorted({a.window.start for a in aggs if a.window.kind == "tumbling" and a.window.size_s == 1.0})
    assert starts == [0.0, far]
    assert all(a.participants_total == 1 for a in aggs)


def test_records_read_again_after_the_final_flush_change_nothing() -> None:
    """A worker reading a partition again (after a rebalance) may feed an ended session once more."""
    script = Script(session="s1", base=BASE)
    script.add("a", between(0, 5, Behaviour(speaking=True)), end=10)
    agg = SessionAggregator(session="s1", config=AggregationConfig())
    aggs, _ = run_all(agg, script)
    assert aggs
    summary = agg.summary()
    for ev in script.events()[-5:]:
        agg.add_score(ev)
    assert agg.advance(BASE + 20.0) == ([], [])
    assert agg.summary() == summary


def test_a_class_wide_gap_raises_no_away_and_its_windows_are_emitted_empty() -> None:
    """A broker pause: nobody's scores arrive for 15 s, while the clock goes on; then everyone is back."""
    script = Script(session="s-gap", base=BASE)
    script.add("a", constant(), end=40)
    script.add("b", constant(), end=40)
    agg = SessionAggregator(session="s-gap", config=AggregationConfig(away_after_s=10.0))
    aggs: list[ClassAggregate] = []
    alerts: list[Alert] = []
    for ev in script.events():
        t = ev.timing.capture_ts - BASE
        if 10.0 <= t < 25.0:
            continue
        for now in ([BASE + x for x in range(10, 26)] if 25.0 <= t < 25.2 else []):  # ticks during the pause
            a, b = agg.advance(now)
            aggs += a
            alerts += b
        agg.add_score(ev)
        a, b = agg.advance(ev.timing.capture_ts)
        aggs += a
        alerts += b
    a, b = agg.flush()
    aggs += a
    alerts += b
    assert [x for x in alerts if x.kind == "away"] == []
    seconds = sorted(round(x.window.start) for x in aggs if x.window.kind == "tumbling" and x.window.size_s == 1.0)
    assert seconds == list(range(40)), "every 1 s class window is emitted, the paused ones empty"
    empty = [x for x in aggs if x.window.kind == "tumbling" and x.window.size_s == 1.0 and 11 <= x.window.start < 24]
    assert empty and all(x.participants_present == 0 for x in empty)


def test_one_student_out_of_frame_among_observed_ones_is_away() -> None:
    script = Script(session="s-one", base=BASE)
    script.add("a", between(10, 25, Behaviour(present=False, attentive=False)), end=40)
    script.add("b", constant(), end=40)
    _, alerts = run_all(SessionAggregator(session="s-one", config=AggregationConfig(away_after_s=10.0)), script)
    assert [(x.participant, x.state) for x in alerts if x.kind == "away"] == [("a", "raised"), ("a", "cleared")]
