"""The live envelope round-trips every event kind and keeps the latest per subject."""

from __future__ import annotations

import pytest

from shared.contracts.codec import DecodeError
from shared.contracts.events import Alert, ClassAggregate, LifecycleEvent, ScoreEvent, WindowRef
from shared.contracts.live import LiveAggregate, LiveAlert, LiveScore, decode_live, encode_live, state_field, wrap_live
from shared.contracts.timing import TimingTrail
from shared.contracts.topics import live_channel
from shared.transport.live import LivePublisher, read_state
from shared.transport.memory import MemoryLiveBus

pytestmark = pytest.mark.unit


def _score(participant: str, seq: int, engagement: float) -> ScoreEvent:
    return ScoreEvent(
        event_id=ScoreEvent.make_id("s1", participant, seq),
        session="s1",
        participant=participant,
        seq=seq,
        media_time=seq * 0.2,
        present=True,
        attentive=seq % 2 == 0,
        speaking=False,
        hand_raised=False,
        engagement=engagement,
        confidence=0.9,
        timing=TimingTrail(capture_ts=1000.0 + seq),
    )


def _aggregate() -> ClassAggregate:
    return ClassAggregate(
        event_id="s1/tumbling/1/0",
        session="s1",
        window=WindowRef(size_s=1, start=0, end=1),
        participants_total=2,
        participants_present=1,
        attentive_ratio=0.5,
        engagement_mean=0.4,
        engagement_p10=0.1,
        engagement_p90=0.8,
        teacher_talk_share=0.0,
        talk_equity_gini=0.0,
        hand_equity_gini=0.0,
        timing=TimingTrail(capture_ts=1000.0),
    )


def test_every_kind_round_trips_and_has_its_own_state_field() -> None:
    alert = Alert(
        event_id="s1/away/a/1",
        session="s1",
        participant="a",
        kind="away",
        state="raised",
        since=1,
        at=11,
        message="a away for 10 s",
        timing=TimingTrail(capture_ts=1.0),
    )
    life = LifecycleEvent(event_id="s1/a/joined", session="s1", participant="a", kind="joined", ts=5.0)
    fields = set()
    for event in (_score("a", 1, 0.5), _aggregate(), alert, life):
        message = wrap_live(event)
        back = decode_live(encode_live(message))
        assert back == message
        fields.add(state_field(back))
    assert fields == {"score:a", "aggregate:tumbling:1", "alert:a:away", "lifecycle:a"}


def test_decode_rejects_a_bare_event() -> None:
    with pytest.raises(DecodeError):
        decode_live(_score("a", 1, 0.5).model_dump_json().encode())


async def test_publisher_keeps_latest_per_participant_and_fans_out() -> None:
    bus = MemoryLiveBus()
    publisher = LivePublisher(bus=bus)
    async with bus.subscribe(live_channel("s1")) as feed:
        await publisher.publish(_score("a", 1, 0.2))
        await publisher.publish(_score("a", 2, 0.7))
        await publisher.publish(_score("b", 1, 0.3))
        await publisher.publish(_aggregate())
        received = [decode_live(await feed.__anext__()) for _ in range(4)]
    assert [m.kind for m in received] == ["score", "score", "score", "aggregate"]
    state = await read_state(bus, "s1")
    scores = {m.event.participant: m.event.engagement for m in state if isinstance(m, LiveScore)}
    assert scores == {"a": 0.7, "b": 0.3}
    assert sum(isinstance(m, LiveAggregate) for m in state) == 1
    assert not any(isinstance(m, LiveAlert) for m in state)
