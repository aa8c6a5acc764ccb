"""Transports behind small Protocols: memory (embedded), Redis Streams, Kafka."""

from shared.transport.base import AppendResult, EventBus, EventConsumer, EventRecord, LiveBus, MediaBus, StreamEntry
from shared.transport.factory import Transports, build_transports
from shared.transport.leases import Lease, LeaseStore, MemoryLeaseStore
from shared.transport.typed import EventPublisher, EventSubscriber

__all__ = [
    "AppendResult",
    "EventBus",
    "EventConsumer",
    "EventPublisher",
    "EventRecord",
    "EventSubscriber",
    "Lease",
    "LeaseStore",
    "LiveBus",
    "MediaBus",
    "MemoryLeaseStore",
    "StreamEntry",
    "Transports",
    "build_transports",
]
