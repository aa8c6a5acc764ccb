"""Publish epochs: the memory registry, both event-id formats, samplers and the gateway's stream order."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.gateway.history import SessionHistory
from services.ingest.sampling import AudioChunker, FrameSampler
from shared.contracts.events import ScoreEvent
from shared.contracts.timing import TimingTrail
from shared.metrics import Metrics
from shared.transport.publishes import PUBLISH_TTL_S, MemoryPublishRegistry

pytestmark = pytest.mark.unit


async def test_memory_registry_counts_epochs_and_offsets_per_participant() -> None:
    now = [1000.0]
    reg = MemoryPublishRegistry(clock=lambda: now[0])
    first = await reg.begin("s", "a")
    now[0] += 20.0
    second = await reg.begin("s", "a")
    other = await reg.begin("s", "b")
    assert (first.epoch, first.offset) == (0, 0.0)
    assert (second.epoch, second.offset) == (1, 20.0)
    assert (other.epoch, other.offset) == (0, 0.0)
    now[0] += PUBLISH_TTL_S + 1  # forgotten long after the class: a new participant stream
    assert (await reg.begin("s", "a")).epoch == 0


def test_event_ids_keep_the_old_format_for_epoch_zero_and_parse_both() -> None:
    assert ScoreEvent.make_id("s", "p", 12) == "s/p/12"
    assert ScoreEvent.make_id("s", "p", 12, 3) == "s/p/3-12"
    assert ScoreEvent.parse_id("s/p/12") == ("s", "p", 0, 12)
    assert ScoreEvent.parse_id("s.1/p-2/3-12") == ("s.1", "p-2", 3, 12)
    for bad in ("s/p/x", "s/p/-1", "p/12", "s/p/a-1"):
        with pytest.raises(ValueError):
            ScoreEvent.parse_id(bad)


def test_samplers_stamp_the_epoch_and_continue_media_time() -> None:
    image = np.zeros((48, 64, 3), dtype=np.uint8)
    sampler = FrameSampler(session="s", participant="p", width=64, epoch=2, media_offset=30.0)
    frames = [sampler.sample(image, media_time=t / 5, capture_ts=100.0 + t / 5) for t in range(3)]
    assert [(f.epoch, f.seq) for f in frames] == [(2, 0), (2, 1), (2, 2)]
    assert [f.media_time for f in frames] == pytest.approx([30.0, 30.2, 30.4])
    chunker = AudioChunker(session="s", participant="p", chunk_s=0.5, epoch=2, media_offset=30.0)
    chunks = chunker.push_samples(np.zeros(16_000 * 2, dtype=np.float32), rate=16_000, media_time=0.0,
                                  capture_ts=100.0)
    chunks += chunker.flush()
    assert chunks and all(c.epoch == 2 for c in chunks)
    assert chunks[0].seq == 0 and chunks[0].media_time == pytest.approx(30.0)


def _score(seq: int, *, epoch: int, media_time: float) -> ScoreEvent:
    return ScoreEvent(
        event_id=ScoreEvent.make_id("s", "p", seq, epoch), session="s", participant="p", epoch=epoch, seq=seq,
        media_time=media_time, present=True, attentive=True, speaking=False, hand_raised=False, engagement=0.5,
        confidence=0.9, timing=TimingTrail(capture_ts=1000.0 + media_time),
    )


def test_gateway_keeps_a_reconnect_and_still_drops_repeats() -> None:
    history = SessionHistory(metrics=Metrics(CollectorRegistry()), max_sessions=2, max_rows=100, max_aggregates=10)
    first = [_score(2 * i, epoch=0, media_time=i / 5) for i in range(10)]  # 2 s
    second = [_score(2 * i, epoch=1, media_time=5.0 + i / 5) for i in range(10)]  # after a 3 s gap
    for e in [*first, *second, first[3], second[4]]:  # two redelivered repeats
        history.apply(e)
    record = history.get("s")
    assert record is not None and record.scores == 20
    assert {int(r.t) for r in record.timeline.observed_rows()} == {0, 1, 5, 6}  # 2, 3, 4: absent
    history.apply(_score(41, epoch=0, media_time=1.9))  # a late audio-only step with a smaller (epoch, seq)
    history.apply(_score(41, epoch=0, media_time=1.9))
    assert record.scores == 21
