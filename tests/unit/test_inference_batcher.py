"""Micro-batcher on virtual time: size flush, deadline flush, fairness, no starvation, bound."""

from __future__ import annotations

import pytest

from services.inference.batcher import MicroBatcher

pytestmark = pytest.mark.unit


class VirtualClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make(max_batch: int = 4, wait: float = 0.05, capacity: int = 16) -> tuple[MicroBatcher[int], VirtualClock]:
    clock = VirtualClock()
    return MicroBatcher(max_batch=max_batch, max_wait_s=wait, capacity=capacity, clock=clock), clock


def test_flush_on_size() -> None:
    b, _ = make(max_batch=4)
    for i in range(3):
        b.put("s", i)
    assert not b.ready()
    b.put("s", 3)
    assert b.ready() and b.time_to_deadline() == 0.0
    assert [q.value for q in b.take()] == [0, 1, 2, 3]
    assert len(b) == 0 and b.time_to_deadline() is None


def test_flush_on_deadline_of_oldest_item() -> None:
    b, clock = make(max_batch=8, wait=0.05)
    b.put("a", 1)
    clock.t = 0.03
    b.put("b", 2)
    assert not b.ready()
    assert b.time_to_deadline() == pytest.approx(0.02)
    clock.t = 0.05
    assert b.ready()
    assert sorted(q.value for q in b.take()) == [1, 2]


def test_fair_round_robin_across_streams() -> None:
    b, clock = make(max_batch=6, capacity=64)
    for i in range(20):
        b.put("busy", i)
    clock.t = 0.001
    b.put("quiet1", 100)
    b.put("quiet2", 200)
    batch = b.take()
    streams = [q.stream for q in batch]
    assert streams.count("quiet1") == 1 and streams.count("quiet2") == 1
    assert [q.value for q in batch if q.stream == "busy"] == [0, 1, 2, 3]  # FIFO within a stream


def test_no_starvation_with_more_streams_than_batch_slots() -> None:
    b, clock = make(max_batch=3, capacity=200)
    served: dict[str, int] = {}
    waits: list[float] = []
    for tick in range(40):
        clock.t = tick * 0.01
        for s in range(10):  # 10 streams, 3 slots per batch
            if b.put(f"s{s}", tick) is not None:
                pass
        for q in b.take():
            served[q.stream] = served.get(q.stream, 0) + 1
            waits.append(clock.t - q.enqueued)
    assert set(served) == {f"s{s}" for s in range(10)}
    assert max(served.values()) - min(served.values()) <= 2
    # Oldest first: the oldest waiting item is always in the next batch.
    oldest_before = b.oldest_wait()
    first = b.take()[0]
    assert oldest_before is not None and clock.t - first.enqueued == pytest.approx(oldest_before)


def test_bounded_drops_oldest_of_longest_stream() -> None:
    b, _ = make(max_batch=2, capacity=4)
    for i in range(3):
        assert b.put("big", i) is None
    assert b.put("small", 9) is None
    dropped = b.put("small", 10)
    assert dropped is not None and dropped.stream == "big" and dropped.value == 0
    assert len(b) == 4 and b.full


def test_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(max_batch=8, max_wait_s=0.1, capacity=4)
