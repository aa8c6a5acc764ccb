"""``classpulse up``'s in-process aggregation: scores in, aggregates and alerts out on both buses."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from services.aggregator.config import AggregationConfig
from services.up.aggregation import InProcessAggregation
from shared.contracts.events import Alert, ClassAggregate, ScoreEvent
from shared.contracts.live import LiveAggregate, LiveAlert
from shared.contracts.timing import TimingTrail, wall_clock
from shared.contracts.topics import AGGREGATES, ALERTS, SCORES
from shared.metrics import Metrics
from shared.transport.live import read_state
from shared.transport.memory import MemoryEventBus, MemoryLiveBus
from shared.transport.typed import EventPublisher

pytestmark = pytest.mark.unit


def _score(participant: str, seq: int, t0: float, *, present: bool) -> ScoreEvent:
    return ScoreEvent(
        event_id=ScoreEvent.make_id("s1", participant, seq),
        session="s1",
        participant=participant,
        seq=seq,
        media_time=seq * 0.2,
        present=present,
        attentive=present,
        speaking=False,
        hand_raised=False,
        engagement=0.8 if present else 0.0,
        confidence=0.9,
        timing=TimingTrail(capture_ts=t0 + seq * 0.2),
    )


async def test_scores_become_aggregates_and_alerts_on_event_and_live_bus() -> None:
    events, live = MemoryEventBus(), MemoryLiveBus()
    metrics = Metrics(CollectorRegistry())
    config = AggregationConfig(tumbling_sizes_s=(1.0,), hopping_size_s=None, away_after_s=2.0)
    aggregation = InProcessAggregation(events=events, live=live, metrics=metrics, config=config, tick_s=0.05)
    t0 = wall_clock() - 10.0  # 5 s of media that ended 5 s ago: every window can close now
    publisher = EventPublisher(bus=events, topic=SCORES)
    for seq in range(25):
        await publisher.publish(_score("alice", seq, t0, present=True))
        await publisher.publish(_score("bob", seq, t0, present=seq < 5))  # bob leaves the frame after 1 s
    task = asyncio.create_task(aggregation.run())
    try:
        for _ in range(200):
            if len(events.records(AGGREGATES.name)) >= 5 and events.records(ALERTS.name):
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    aggregates = [ClassAggregate.model_validate_json(v) for _, v in events.records(AGGREGATES.name)]
    assert [a.window.start for a in aggregates[:5]] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert aggregates[0].participants_present == 2 and aggregates[4].participants_present == 1
    assert all(a.timing.stages[-1].stage == "aggregator" for a in aggregates)
    alerts = [Alert.model_validate_json(v) for _, v in events.records(ALERTS.name)]
    assert [(a.participant, a.kind, a.state) for a in alerts][:1] == [("bob", "away", "raised")]

    state = await read_state(live, "s1")
    assert any(isinstance(m, LiveAggregate) and m.event.window.start >= 4.0 for m in state)
    assert any(isinstance(m, LiveAlert) and m.event.participant == "bob" for m in state)
    reg = metrics.registry
    assert reg.get_sample_value("classpulse_messages_total", {"stage": "aggregator", "kind": "aggregate"}) == len(
        aggregates
    )
