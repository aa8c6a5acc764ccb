"""Transport interfaces: a bounded media stream, an event log, and a live fan-out bus.

Implementations: :mod:`.memory` (embedded default), :mod:`.redis_streams` (media and
live fan-out), :mod:`.kafka` (events). Services depend on these Protocols only.

Semantics every implementation keeps:

* **Media** is lossy by design and sharded by participant: an entry goes to the shard of
  its routing key (``"<session>/<participant>"``, :func:`shared.transport.shards.shard_of`),
  and each shard is its own bounded stream; appending to a full shard evicts its oldest
  undelivered entry and counts it as a drop. Entries are read through a consumer group,
  from the shards a reader names (the ones it holds leases on); an entry stays pending
  until acked (then it is deleted), and a consumer can claim a shard's entries another
  consumer left pending. Entry ids name their shard (``"<shard>/<stream id>"``).
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
    """Shard-qualified: ``"<shard>/<stream id>"``."""
    data: bytes
    shard: int = 0


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where an append landed (shard-qualified id) and how many old entries of that shard it evicted."""

    id: str
    evicted: int
    shard: int = 0


class MediaBus(Protocol):
    """Bounded shard streams with consumer groups (Redis Streams semantics)."""

    @property
    def shards(self) -> int:
        """How many shard streams there are (``CLASSPULSE_MEDIA_SHARDS``)."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def append(self, data: bytes, *, key: str) -> AppendResult:
        """Append one entry to the shard of ``key``; evicts (and counts) that shard's oldest past its bound."""
        ...

    async def ensure_group(self, group: str) -> None:
        """Create the consumer group on every shard stream (idempotent)."""
        ...

    async def read_group(
        self, group: str, consumer: str, *, shards: Sequence[int], count: int, block_ms: int
    ) -> list[StreamEntry]:
        """At most ``count`` new entries of the named shards; waits up to ``block_ms`` when there are none."""
        ...

    async def ack(self, group: str, ids: Sequence[str]) -> None:
        """Mark entries (shard-qualified ids, any shards) handled; they leave their streams."""
        ...

    async def claim_stale(
        self, group: str, consumer: str, *, shard: int, min_idle_ms: int, count: int
    ) -> list[StreamEntry]:
        """Take over entries of one shard that other consumers left pending for at least ``min_idle_ms``."""
        ...

    async def mark_publishing(self, marks: Sequence[tuple[Sequence[str], bytes]]) -> None:
        """Record that results of these pending entries are about to be published (cleared by :meth:`ack`):
        per group of entries of one shard, their results (opaque bytes, kept until the entries are acked),
        so that a next owner can publish the very same results instead of scoring the entries again."""
        ...

    async def publishing(self, shard: int) -> dict[str, bytes]:
        """The marked, not yet acked entries of one shard (shard-qualified ids), each with the results
        recorded for its group (``b""``: none, or erased with the group's first entry)."""
        ...

    async def length(self) -> int:
        """Entries in all shard streams together."""
        ...


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
