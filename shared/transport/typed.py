"""Typed publisher/subscriber pairs over the untyped transports: one model per topic."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

from pydantic import BaseModel

from shared.contracts.codec import EventCodec
from shared.contracts.topics import EventTopic
from shared.transport.base import EventBus, EventConsumer, EventRecord

E = TypeVar("E", bound=BaseModel)


class EventPublisher(Generic[E]):
    """Publishes one topic's model, keyed by its ``session`` field."""

    def __init__(self, *, bus: EventBus, topic: EventTopic[E]) -> None:
        self._bus = bus
        self.topic = topic
        self._codec = EventCodec(topic.model)

    async def publish(self, event: E) -> None:
        key = str(getattr(event, "session"))  # noqa: B009  (every event model has a session)
        await self._bus.publish(self.topic.name, key, self._codec.encode(event))


class EventSubscriber(Generic[E]):
    """Reads one topic's model as a consumer-group member; commit after handling."""

    def __init__(self, *, bus: EventBus, topic: EventTopic[E], group: str, from_beginning: bool = True) -> None:
        self.topic = topic
        self._codec = EventCodec(topic.model)
        self._consumer: EventConsumer = bus.consumer([topic.name], group=group, from_beginning=from_beginning)

    async def start(self) -> None:
        await self._consumer.start()

    async def close(self) -> None:
        await self._consumer.close()

    async def poll(self, *, max_records: int = 500, timeout_ms: int = 1000) -> list[E]:
        records: Sequence[EventRecord] = await self._consumer.poll(max_records=max_records, timeout_ms=timeout_ms)
        return [self._codec.decode(r.value) for r in records]

    async def commit(self) -> None:
        await self._consumer.commit()
