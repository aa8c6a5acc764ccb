"""Per-second timeline rules: majority votes, means, empty seconds, dedupe, session-time placement."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.analytics.timeline import TimelineBuilder, build_timeline
from shared.contracts.events import ScoreEvent
from shared.contracts.timing import TimingTrail

pytestmark = pytest.mark.unit


def ev(t: float, seq: int, *, participant: str = "p1", present: bool = True, attentive: bool = True,
       speaking: bool = False, hand: bool = False, engagement: float = 0.5, confidence: float = 0.8,
       capture: float | None = None) -> ScoreEvent:
    return ScoreEvent(
        event_id=ScoreEvent.make_id("s", participant, seq), session="s", participant=participant, seq=seq,
        media_time=t, present=present, attentive=attentive, speaking=speaking, hand_raised=hand,
        engagement=engagement, confidence=confidence,
        timing=TimingTrail(capture_ts=1000.0 + (t if capture is None else capture)),
    )


def test_majority_and_means_per_second() -> None:
    events = [
        ev(0.0, 0, speaking=True, engagement=0.2), ev(0.2, 1, speaking=True, engagement=0.4),
        ev(0.4, 2, speaking=False, engagement=0.6), ev(0.6, 3, attentive=False), ev(0.8, 4, attentive=False),
        ev(1.0, 5, present=False, attentive=False), ev(1.5, 6, present=False, attentive=False), ev(1.9, 7),
    ]
    rows = build_timeline(events, duration_s=2.0)
    assert [r.t for r in rows] == [0.0, 1.0]
    first, second = rows
    assert first.present and first.attentive and not first.speaking  # 2 of 5 speaking: no majority
    assert first.engagement == pytest.approx((0.2 + 0.4 + 0.6 + 0.5 + 0.5) / 5)
    assert not second.present and not second.attentive


def test_tie_reads_false() -> None:
    rows = build_timeline([ev(0.1, 0, speaking=True), ev(0.5, 1, speaking=False)], duration_s=1.0)
    assert rows[0].speaking is False


def test_seconds_without_events_are_empty_rows_and_duration_sets_count() -> None:
    rows = build_timeline([ev(0.5, 0), ev(3.2, 1)], duration_s=4.4)
    assert [r.t for r in rows] == [0.0, 1.0, 2.0, 3.0, 4.0]
    gap = rows[1]
    assert (gap.present, gap.speaking, gap.engagement, gap.confidence) == (False, False, 0.0, 0.0)
    assert rows[3].present


def test_duplicates_are_ignored() -> None:
    b = TimelineBuilder()
    assert b.add(ev(0.1, 0, speaking=True))
    assert not b.add(ev(0.1, 0, speaking=True))
    b.add(ev(0.3, 1, speaking=False))
    assert b.events == 2
    assert b.rows(1.0)[0].speaking is False  # a counted duplicate would have made it 2 of 3


def test_rows_cover_every_participant_every_second_in_order() -> None:
    events = [ev(0.1, 0, participant="a"), ev(2.1, 0, participant="b")]
    rows = build_timeline(events, duration_s=3.0)
    assert [(r.t, r.participant) for r in rows] == [
        (0.0, "a"), (0.0, "b"), (1.0, "a"), (1.0, "b"), (2.0, "a"), (2.0, "b")
    ]


def test_at_places_events_on_session_time() -> None:
    b = TimelineBuilder()
    late_joiner = ev(0.2, 0, participant="late", capture=5.2)  # own media time 0.2, session time 5.2
    b.add(late_joiner, at=5.2)
    rows = b.rows(6.0)
    assert [r.present for r in rows] == [False] * 5 + [True]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 9.99), st.booleans(), st.floats(0, 1)), min_size=1, max_size=80))
def test_every_row_is_a_majority_of_its_second(samples: list[tuple[float, bool, float]]) -> None:
    events = [ev(t, i, speaking=s, engagement=e) for i, (t, s, e) in enumerate(samples)]
    rows = build_timeline(events, duration_s=10.0)
    assert len(rows) == 10
    for row in rows:
        inside = [(s, e) for t, s, e in samples if row.t <= t < row.t + 1]
        assert row.speaking == (2 * sum(s for s, _ in inside) > len(inside))
        mean = sum(e for _, e in inside) / len(inside) if inside else 0.0
        assert row.engagement == pytest.approx(mean, abs=1e-9)


def test_a_trailing_sliver_gets_no_row() -> None:
    b = TimelineBuilder()
    b.add(ev(5.8, 0))
    assert b.seconds(6.007) == 6  # Opus padding
    assert b.seconds(6.3) == 7
    assert b.seconds(0.05) == 1


def test_a_bounded_builder_keeps_the_newest_seconds_and_lists_only_observed_ones() -> None:
    b = TimelineBuilder(max_rows=2)  # the gateway's live history
    for seq, t in enumerate((0.1, 1.1, 3.1)):
        b.add(ev(t, seq, participant="b"))
    b.add(ev(3.5, 0, participant="a"))
    assert [(r.t, r.participant) for r in b.observed_rows()] == [(3.0, "a"), (3.0, "b")]
    assert [r.participant for r in b.observed_rows(participant="b", since=3.0)] == ["b"]
    assert b.observed_rows(since=4.0) == []
