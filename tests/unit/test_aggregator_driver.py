"""The session driver (shared by the faust and plain engines) on in-memory fakes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry

from services.aggregator.driver import DictStore, Output, SessionDriver
from services.aggregator.scripted import Behaviour, Script, between, lifecycle_event
from services.aggregator.settings import AggregatorSettings
from shared.analytics.config import AggregationConfig
from shared.analytics.session import SessionAggregator
from shared.contracts.codec import EventCodec
from shared.contracts.events import ClassAggregate, LifecycleEvent, ScoreEvent
from shared.contracts.report import SessionSummary
from shared.contracts.topics import state_key, summary_key
from shared.metrics import Metrics
from shared.transport.memory import MemoryLiveBus

pytestmark = pytest.mark.unit

BASE = 1_700_000_000.0
GRACE = 0.5
CFG = AggregationConfig(tumbling_sizes_s=(1.0, 5.0), hopping_size_s=10.0, hopping_step_s=5.0, away_after_s=3.0)


class ListEmitter:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Output]] = []

    async def emit(self, session: str, events: Sequence[Output]) -> None:
        self.sent += [(session, e) for e in events]


def driver(store: DictStore, emitter: ListEmitter, live: MemoryLiveBus | None = None) -> SessionDriver:
    return SessionDriver(config=CFG, clock="event", store=store, emitter=emitter,
                         metrics=Metrics(CollectorRegistry()), live=live,
                         end_grace_s=GRACE)


def timeline() -> tuple[list[ScoreEvent], LifecycleEvent]:
    s = Script(session="d1", base=BASE)
    s.add("a", between(2, 4, Behaviour(speaking=True)), end=20)
    s.add("b", between(5, 12, Behaviour(present=False, attentive=False)), end=20)
    end = lifecycle_event(session="d1", participant="a", kind="session_ended", t=20.0, base=BASE)
    return s.events(), end


def expected_ids() -> set[str]:
    events, _ = timeline()
    agg = SessionAggregator(session="d1", config=CFG)
    for e in events:
        agg.add_score(e)
    aggs, alerts = agg.flush()
    return {a.event_id for a in aggs} | {a.event_id for a in alerts}


async def feed(d: SessionDriver, events: list[ScoreEvent], batch: int = 25) -> None:
    codec = EventCodec(ScoreEvent)
    for i in range(0, len(events), batch):
        touched = {d.add("score", codec.encode(e)) for e in events[i:i + batch]}
        await d.close({t for t in touched if t}, received=0.0)


async def test_ended_first_still_counts_every_score_and_writes_live_state() -> None:
    events, end = timeline()
    store, out, live = DictStore(), ListEmitter(), MemoryLiveBus()
    d = driver(store, out, live)
    # session_ended is read before the scores (another topic): nothing may become late
    assert d.add("lifecycle", EventCodec(LifecycleEvent).encode(end)) == "d1"
    await d.close({"d1"}, received=0.0)
    await feed(d, events)
    assert "d1" not in d.finished, "flushed before the input went quiet"
    await asyncio.sleep(GRACE * 1.2)
    await d.tick()
    ids = [e.event_id for _, e in out.sent]
    assert len(ids) == len(set(ids))
    assert set(ids) == expected_ids()
    assert "d1" in d.finished and "d1" not in d.sessions
    assert all(e.timing.stage("aggregator") is not None for _, e in out.sent)
    state = await live.get_state(state_key("d1"))
    assert "aggregate:tumbling:1" in state and "alert:b:away" in state
    summary = SessionSummary.model_validate_json((await live.get_state(summary_key("d1")))["summary"])
    assert summary.participants["a"].talk_time_s == pytest.approx(2.0)


async def test_restart_from_snapshot_loses_nothing() -> None:
    events, end = timeline()
    store, out = DictStore(), ListEmitter()
    half = len(events) // 2
    first = driver(store, out)
    await feed(first, events[:half])
    assert out.sent and "d1" in store.data
    # a new worker with the same store; the broker redelivers the last batch (at least once)
    second = driver(store, out)
    await feed(second, events[half - 25:])
    second.add("lifecycle", EventCodec(LifecycleEvent).encode(end))
    await asyncio.sleep(GRACE * 1.2)
    await second.close({"d1"}, received=0.0)
    ids = [e.event_id for _, e in out.sent]
    assert set(ids) == expected_ids()
    assert len(ids) == len(set(ids)), "a redelivered batch must not emit twice"


async def test_undecodable_record_is_counted_and_skipped() -> None:
    metrics = Metrics(CollectorRegistry())
    d = SessionDriver(config=CFG, clock="event", store=DictStore(), emitter=ListEmitter(), metrics=metrics)
    assert d.add("score", b"{not json") is None
    assert metrics.registry.get_sample_value(
        "classpulse_errors_total", {"stage": "aggregator", "error": "decode"}) == 1.0


async def test_wall_clock_tick_closes_windows_without_new_events() -> None:
    now = time.time()
    s = Script(session="w1", base=now - 12.0)  # the last event (8.8 s) is more than the close delay old
    s.add("a", between(0, 10, Behaviour()), end=9)
    out = ListEmitter()
    d = SessionDriver(config=CFG, clock="wall", store=DictStore(), emitter=out, metrics=Metrics(CollectorRegistry()))
    codec = EventCodec(ScoreEvent)
    for e in s.events():
        d.add("score", codec.encode(e))
    await d.tick()
    starts = sorted(e.window.start for _, e in out.sent if isinstance(e, ClassAggregate) and e.window.size_s == 1.0)
    assert starts == [float(k) for k in range(9)]


def test_settings_build_the_core_config_and_reject_bad_windows() -> None:
    cfg = AggregatorSettings(tumbling_sizes_s=[2.0, 4.0], hopping_size_s=0).aggregation_config()
    assert cfg.tumbling_sizes_s == (2.0, 4.0) and cfg.hopping_size_s is None
    with pytest.raises(ValueError, match="whole multiple"):
        AggregatorSettings(tumbling_sizes_s=[1.5])
    with pytest.raises(ValueError):
        AggregatorSettings(unknown_key=1)  # type: ignore[call-arg]


async def test_interaction_records_reach_the_window_figures_and_survive_a_restart() -> None:
    from shared.contracts.interactions import InteractionEvent

    codec = EventCodec(InteractionEvent)

    def said(eid: str, who: str, t: float, **extra: object) -> bytes:
        role = "teacher" if who == "t" else "student"
        return codec.encode(InteractionEvent.model_validate(
            {"event_id": eid, "session": "d1", "participant": who, "role": role, "kind": "chat", "ts": BASE + t,
             **extra}))

    events, end = timeline()
    store, out = DictStore(), ListEmitter()
    first = driver(store, out)
    assert first.add("interaction", said("q1", "t", 6.2, is_question=True, words=6)) == "d1"
    assert first.add("interaction", b"{not an interaction") is None  # counted, skipped
    await feed(first, events[:40])
    second = driver(store, out)  # a restart: the snapshot has the interaction book
    assert second.add("interaction", said("q1", "t", 6.2, is_question=True, words=6)) == "d1"  # a repeat
    second.add("interaction", said("r1", "b", 8.0, text="it is three", on_topic=True, relevance=0.7))
    await feed(second, events[40:])
    second.add("lifecycle", EventCodec(LifecycleEvent).encode(end))
    await second.close({"d1"}, received=0.0)
    await asyncio.sleep(GRACE + 0.1)
    await second.tick()
    fives = {e.window.start: e for _, e in out.sent if isinstance(e, ClassAggregate)
             and e.window.kind == "tumbling" and e.window.size_s == 5.0}
    assert fives[5.0].questions_teacher == 1 and fives[5.0].chat_messages == 2
    assert fives[5.0].response_latency_s == pytest.approx(1.8)
    assert sum(a.questions_teacher for a in fives.values()) == 1  # the repeat counted once


async def test_an_erased_session_is_not_rebuilt_from_its_records_still_in_flight() -> None:
    from shared.contracts.privacy import PrivacyEvent

    events, _ = timeline()
    d = driver(DictStore(), ListEmitter())
    await feed(d, events[: len(events) // 2])
    assert "d1" in d.sessions
    erased_at = BASE + 30.0  # after every score of the timeline
    change = PrivacyEvent(event_id=PrivacyEvent.make_id("d1", "erased", None, erased_at), session="d1",
                          kind="erased", by="platform", ts=erased_at)
    assert d.add("privacy", EventCodec(PrivacyEvent).encode(change)) == "d1"
    assert "d1" not in d.sessions
    await feed(d, events[len(events) // 2:])  # the rest were still on the topic: from before the erasure
    assert "d1" not in d.sessions
    later = events[-1].model_copy(update={"timing": events[-1].timing.model_copy(
        update={"capture_ts": erased_at + 1.0})})
    await feed(d, [later])  # a new class under the same id, after the erasure, is aggregated again
    assert "d1" in d.sessions
