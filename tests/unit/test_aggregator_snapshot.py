"""Snapshots: a restored aggregator continues exactly where the original stopped."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.aggregator.scripted import Behaviour, Script, between, lifecycle_event
from shared.analytics.config import AggregationConfig
from shared.analytics.session import SessionAggregator
from shared.analytics.snapshot import SnapshotError, dump, load

pytestmark = pytest.mark.unit

BASE = 1_700_000_000.0
CFG = AggregationConfig(tumbling_sizes_s=(1.0, 10.0), hopping_size_s=20.0, hopping_step_s=10.0,
                        away_after_s=4.0, attention_dip_s=5.0, silence_after_s=8.0)


def script() -> Script:
    s = Script(session="snap", base=BASE)
    s.add("t", between(0, 6, Behaviour(speaking=True)), role="teacher", end=40)
    s.add("a", between(8, 12, Behaviour(speaking=True, hand_raised=True)), end=40)
    s.add("b", between(10, 20, Behaviour(present=False, attentive=False)), end=35)
    s.add("c", between(5, 30, Behaviour(attentive=False, camera_on=False)), end=40)
    return s


def run(cut: int | None) -> tuple[list[str], str]:
    events = script().events()
    agg = SessionAggregator(session="snap", config=CFG)
    agg.add_lifecycle(lifecycle_event(session="snap", participant="b", kind="left", t=35.0, base=BASE))
    out: list[str] = []
    for i, ev in enumerate(events):
        if i == cut:
            agg = load(dump(agg), config=CFG)
        agg.add_score(ev)
        if i % 3 == 0:
            agg.add_score(ev)
        aggs, alerts = agg.advance(ev.timing.capture_ts)
        out += [x.model_dump_json() for x in [*aggs, *alerts]]
    aggs, alerts = agg.flush()
    out += [x.model_dump_json() for x in [*aggs, *alerts]]
    return out, agg.summary().model_dump_json()


BASELINE = run(None)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 700))
def test_restored_aggregator_continues_identically(cut: int) -> None:
    assert run(cut) == BASELINE


def test_baseline_has_alerts_and_windows() -> None:
    kinds = {x.split('"kind":"')[1].split('"')[0] for x in BASELINE[0] if '"kind":"' in x}
    assert {"away", "camera_off", "attention_dip", "silence"} <= kinds


def test_bad_snapshot_is_a_clear_error() -> None:
    with pytest.raises(SnapshotError, match="version"):
        load(b'{"v": 99}', config=CFG)
    with pytest.raises(SnapshotError):
        load(b"not json", config=CFG)
