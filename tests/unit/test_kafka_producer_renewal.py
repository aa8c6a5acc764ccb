"""The Kafka bus replaces a producer whose sender the broker ended (sequence numbers rejected after a restart)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import OutOfOrderSequenceNumber
from prometheus_client import CollectorRegistry

from shared.metrics import Metrics
from shared.transport.kafka import KafkaEventBus

pytestmark = pytest.mark.unit


class FakeProducer:
    """Stands in for AIOKafkaProducer: ``lost`` ones fail every send as aiokafka's dead sender does."""

    def __init__(self, *, lost: bool) -> None:
        self.lost = lost
        self.sent: list[tuple[str, bytes]] = []
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send_and_wait(self, topic: str, *, value: bytes, key: bytes) -> Any:
        await asyncio.sleep(0)
        if self.lost:
            raise OutOfOrderSequenceNumber()
        self.sent.append((topic, value))
        return None


async def test_a_lost_producer_is_renewed_once_and_every_event_is_delivered() -> None:
    metrics = Metrics(CollectorRegistry())
    bus = KafkaEventBus(bootstrap="unused:9092", metrics=metrics)
    made = [FakeProducer(lost=True), FakeProducer(lost=False)]
    queue = list(made)
    bus._new_producer = lambda: queue.pop(0)  # type: ignore[assignment,method-assign,return-value]
    await bus.start()
    await asyncio.gather(*(bus.publish("t", "s1", f"e{i}".encode()) for i in range(5)))
    assert sorted(v for _, v in made[1].sent) == [f"e{i}".encode() for i in range(5)]
    assert queue == []  # five concurrent senders, one renewal
    renewed = metrics.registry.get_sample_value(
        "classpulse_errors_total", {"stage": "kafka", "error": "producer_renewed"}
    )
    assert renewed == 1.0
    assert bus.unacked == 0
    await bus.close()
    assert made[0].stopped and made[1].stopped
