"""Transport interfaces: a bounded media stream, an event log, and a live fan-out bus.

Implementations: :mod:`.memory` (embedded default), :mod:`.redis_streams` (media and
live fan-out), :mod:`.kafka` (events). Services depend on these Protocols only.

Semantics every implementation keeps:

* **Media** is lossy by design: the stream is bounded, appending to a full stream evicts
  the oldest undelivered entry and counts it as a drop. Entries are read through a
  consumer group; an entry stays pending until acked (then it is deleted), and a
  consumer can claim entries another consumer left pending too long.
* **Events** are never dropped: at-least-once, ordered per key (session), with offsets
  committed by the consumer after it handled the records.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One media stream entry."""

    id: str
    data: bytes


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where an append landed and how many old entries it evicted."""

    id: str
    evicted: int


class MediaBus(Protocol):
    """A bounded stream with consumer groups (Redis Streams semantics)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def append(self, data: bytes) -> AppendResult:
        """Append one entry; evicts (and counts) the oldest ones past the bound."""
        ...

    async def ensure_group(self, group: str) -> None: ...

    async def read_group(self, group: str, consumer: str, *, count: int, block_ms: int) -> list[StreamEntry]:
        """New entries for this consumer; waits up to ``block_ms`` when there are none."""
        ...

    async def ack(self, group: str, ids: Sequence[str]) -> None:
        """Mark entries handled; they leave the stream."""
        ...

    async def claim_stale(self, group: str, consumer: str, *, min_idle_ms: int, count: int) -> list[StreamEntry]:
        """Take over entries other consumers left pending for at least ``min_idle_ms``."""
        ...

    async def length(self) -> int: ...


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One event as read from the log."""

    topic: str
    key: str
    value: bytes
    partition: int
    offset: int


class EventConsumer(Protocol):
    """A consumer-group member of one or more topics."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def poll(self, *, max_records: int, timeout_ms: int) -> list[EventRecord]: ...

    async def commit(self) -> None:
        """Commit the offsets of every record returned by ``poll`` so far."""
        ...


class EventBus(Protocol):
    """A durable, keyed, partitioned event log (Kafka semantics)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        """Publish and wait until the log has it (acks=all on Kafka)."""
        ...

    def consumer(self, topics: Sequence[str], *, group: str, from_beginning: bool = True) -> EventConsumer: ...


class LiveBus(Protocol):
    """Fire-and-forget fan-out to live viewers plus a latest-state map per key."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, channel: str, data: bytes) -> None: ...

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[bytes]]: ...

    async def set_state(self, key: str, field: str, data: bytes) -> None: ...

    async def get_state(self, key: str) -> dict[str, bytes]: ...
