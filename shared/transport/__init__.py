"""Transports behind small Protocols: memory (embedded), Redis Streams, Kafka."""

from shared.transport.base import AppendResult, EventBus, EventConsumer, EventRecord, LiveBus, MediaBus, StreamEntry
from shared.transport.factory import Transports, build_transports
from shared.transport.typed import EventPublisher, EventSubscriber

__all__ = [
    "AppendResult",
    "EventBus",
    "EventConsumer",
    "EventPublisher",
    "EventRecord",
    "EventSubscriber",
    "LiveBus",
    "MediaBus",
    "StreamEntry",
    "Transports",
    "build_transports",
]
