"""Property tests of the aggregation core (hypothesis)."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.aggregator.scripted import Behaviour, Script, between, score_event
from shared.analytics.alerts import alert_order
from shared.analytics.config import AggregationConfig
from shared.analytics.equity import gini, talk_shares
from shared.analytics.session import SessionAggregator
from shared.contracts.events import Role, ScoreEvent

pytestmark = pytest.mark.unit

BASE = 1_700_000_000.0
CFG = AggregationConfig(
    tumbling_sizes_s=(1.0, 5.0), hopping_size_s=10.0, hopping_step_s=5.0, lateness_s=1.0,
    away_after_s=3.0, attention_dip_s=3.0, silence_after_s=6.0, camera_off_after_s=2.0,
)
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

step = st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.integers(0, 9))
participant_steps = st.lists(step, min_size=1, max_size=60)
timelines = st.lists(participant_steps, min_size=1, max_size=4)


def to_events(timeline: list[list[tuple[bool, bool, bool, bool, bool, int]]]) -> list[ScoreEvent]:
    """Participant i does steps[n] at t = n * 0.2; a step with drop digit 0 is missing (a gap)."""
    events: list[ScoreEvent] = []
    for i, steps in enumerate(timeline):
        role: Role = "teacher" if i == 0 and len(timeline) > 2 else "student"
        for n, (present, attentive, speaking, hand, camera, drop) in enumerate(steps):
            if drop == 0:
                continue
            b = Behaviour(present=present, attentive=attentive and present, speaking=speaking, hand_raised=hand,
                          camera_on=camera, engagement=(n % 10) / 10)
            events.append(score_event(session="p", participant=f"p{i}", seq=n, t=n * 0.2, base=BASE, b=b,
                                      role=role))
    events.sort(key=lambda e: (e.timing.capture_ts, e.participant))
    return events


def replay(arrivals: list[tuple[float, ScoreEvent]], *, duplicates: int = 0) -> tuple[list[str], list[str], str]:
    """Feed events at their arrival times, advancing the clock; return everything emitted as JSON."""
    agg = SessionAggregator(session="p", config=CFG)
    aggs, alerts = [], []
    for now, ev in arrivals:
        agg.add_score(ev)
        a, b = agg.advance(now)
        aggs += a
        alerts += b
    a, b = agg.flush()
    aggs += a
    alerts += b
    assert agg.late_events == 0
    assert agg.duplicate_events == duplicates
    # Windows close in end order whatever the arrival order. Which advance() call detects an
    # alert depends on when the clock moved, so alerts are compared in their own time order.
    return ([x.model_dump_json() for x in aggs], [x.model_dump_json() for x in sorted(alerts, key=alert_order)],
            agg.summary().model_dump_json())


@FAST
@given(st.dictionaries(st.text(min_size=1, max_size=4), st.floats(0, 1e4), min_size=1, max_size=30))
def test_talk_shares_sum_to_one(talk: dict[str, float]) -> None:
    shares = talk_shares(talk)
    assert set(shares) == set(talk)
    if sum(talk.values()) > 0:
        assert sum(shares.values()) == pytest.approx(1.0)
    else:
        assert all(v == 0 for v in shares.values())


@FAST
@given(st.lists(st.floats(0, 1e4), max_size=40))
def test_gini_is_within_unit_interval(values: list[float]) -> None:
    assert 0.0 <= gini(values) <= 1.0


@FAST
@given(st.floats(0, 1e4), st.integers(1, 40))
def test_gini_is_zero_for_equal_talk(value: float, n: int) -> None:
    assert gini([value] * n) == pytest.approx(0.0, abs=1e-9)


@FAST
@given(timelines, st.randoms(use_true_random=False))
def test_windows_are_deterministic_under_reordering_within_lateness(timeline, rnd: random.Random) -> None:  # type: ignore[no-untyped-def]
    events = to_events(timeline)
    in_order = replay([(e.timing.capture_ts, e) for e in events])
    delayed = [(e.timing.capture_ts + rnd.uniform(0, CFG.lateness_s * 0.99), e) for e in events]
    delayed.sort(key=lambda a: a[0])
    assert replay(delayed) == in_order


@FAST
@given(timelines, st.randoms(use_true_random=False))
def test_duplicates_are_ignored(timeline, rnd: random.Random) -> None:  # type: ignore[no-untyped-def]
    events = to_events(timeline)
    in_order = replay([(e.timing.capture_ts, e) for e in events])
    extra = [(e.timing.capture_ts + rnd.uniform(0, 0.9), e) for e in events if rnd.random() < 0.5]
    doubled = sorted([(e.timing.capture_ts, e) for e in events] + extra, key=lambda a: a[0])
    assert replay(doubled, duplicates=len(extra)) == in_order


@FAST
@given(timelines)
def test_summary_and_window_figures_stay_in_range(timeline) -> None:  # type: ignore[no-untyped-def]
    events = to_events(timeline)
    aggs_json, _, summary_json = replay([(e.timing.capture_ts, e) for e in events])
    agg = SessionAggregator(session="p", config=CFG)
    for ev in events:
        agg.add_score(ev)
    aggs, _ = agg.flush()
    s = agg.summary()
    total_talk = sum(p.talk_time_s for p in s.participants.values())
    assert 0.0 <= s.talk_equity_gini <= 1.0 and 0.0 <= s.hand_equity_gini <= 1.0
    assert total_talk <= s.duration_s * len(s.participants) + 1e-6
    for a in aggs:
        assert 0.0 <= a.talk_equity_gini <= 1.0
        assert a.engagement_p10 <= a.engagement_mean + 1e-9 or a.participants_total > 1
        assert all(p.talk_time_s <= a.window.size_s + CFG.max_gap_s for p in a.participants.values())
    # flushing at once gives what advancing event by event gave
    assert [x.model_dump_json() for x in aggs] == aggs_json
    assert s.model_dump_json() == summary_json


@FAST
@given(st.floats(1.0, 20.0), st.floats(0.2, 12.0))
@example(start=1.5, length=3.0)  # absence lasting exactly the threshold (float sums 1.6 + 3.0 != 4.6)
def test_away_alert_fires_and_clears_on_time(start: float, length: float) -> None:
    start, length = round(start, 1), round(length, 1)
    script = Script(session="p", base=BASE)
    script.add("a", between(start, start + length, Behaviour(present=False, attentive=False)), end=40)
    agg = SessionAggregator(session="p", config=CFG)
    alerts = []
    for ev in script.events():
        agg.add_score(ev)
        alerts += agg.advance(ev.timing.capture_ts)[1]
    alerts += agg.flush()[1]
    away: list[tuple[str, object, object]] = [(a.state, a.since, a.at) for a in alerts if a.kind == "away"]
    # the participant is missing from the first step at or after `start` to the first step at or after the end
    grid = [round(n * 0.2, 6) for n in range(200)]
    off = min(t for t in grid if t >= start)
    back = min(t for t in grid if t >= start + length)
    if back - off >= CFG.away_after_s - 1e-6:
        assert away == [("raised", pytest.approx(off), pytest.approx(off + CFG.away_after_s)),
                        ("cleared", pytest.approx(off), pytest.approx(back))]
    else:
        assert away == []
