"""Kafka event bus against a real Apache Kafka broker."""

from __future__ import annotations

import pytest

from shared.contracts import ScoreEvent, TimingTrail
from shared.contracts.topics import EventTopic
from shared.transport.kafka import KafkaEventBus
from shared.transport.typed import EventPublisher, EventSubscriber

pytestmark = pytest.mark.integration


async def _poll_all(sub: EventSubscriber[ScoreEvent], want: int, rounds: int = 40) -> list[ScoreEvent]:
    out: list[ScoreEvent] = []
    for _ in range(rounds):
        out += await sub.poll(timeout_ms=500)
        if len(out) >= want:
            break
    return out


def _score(session: str, seq: int) -> ScoreEvent:
    return ScoreEvent(
        event_id=ScoreEvent.make_id(session, "p", seq),
        session=session,
        participant="p",
        seq=seq,
        media_time=seq * 0.2,
        present=True,
        attentive=True,
        speaking=False,
        hand_raised=False,
        engagement=0.5,
        confidence=0.8,
        timing=TimingTrail(capture_ts=1.0),
    )


async def test_round_trip_ordered_per_session_and_redelivered_after_crash(kafka_bootstrap: str, unique: str) -> None:
    topic = EventTopic(f"test.scores.{unique}", ScoreEvent)
    bus = KafkaEventBus(bootstrap=kafka_bootstrap)
    await bus.start()
    try:
        pub = EventPublisher(bus=bus, topic=topic)
        for seq in range(20):
            for session in ("a", "b", "c"):
                await pub.publish(_score(session, seq))

        first = EventSubscriber(bus=bus, topic=topic, group=f"g-{unique}")
        await first.start()
        got = await _poll_all(first, 60)
        assert len(got) == 60
        for session in ("a", "b", "c"):
            assert [e.seq for e in got if e.session == session] == list(range(20))  # ordered per key
        # the consumer dies without committing: the group gets everything again
        await first.close()

        second = EventSubscriber(bus=bus, topic=topic, group=f"g-{unique}")
        await second.start()
        again = await _poll_all(second, 60)
        assert {e.event_id for e in again} == {e.event_id for e in got}
        await second.commit()
        await second.close()

        third = EventSubscriber(bus=bus, topic=topic, group=f"g-{unique}")
        await third.start()
        assert await third.poll(timeout_ms=1500) == []  # committed: nothing redelivered
        await third.close()
    finally:
        await bus.close()
