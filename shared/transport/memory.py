"""In-memory transports for the embedded default (one process) and unit tests."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from shared.metrics import Metrics
from shared.transport.base import AppendResult, EventRecord, StreamEntry
from shared.transport.shards import entry_id as qualify
from shared.transport.shards import shard_of, split_entry_id


class _Signal:
    """Wakes every waiter on each :meth:`fire` (a fresh event per round, so waiting is cancel-safe,
    unlike ``asyncio.wait_for(Condition.wait())``, which can lose the lock when it times out while
    several tasks wait)."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def _current(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    def fire(self) -> None:
        event, self._event = self._event, None
        if event is not None:
            event.set()

    async def wait(self, seconds: float) -> bool:
        """Wait for the next :meth:`fire`; False after ``seconds`` without one."""
        try:
            await asyncio.wait_for(self._current().wait(), seconds)
        except TimeoutError:
            return False
        return True


@dataclass
class _Pending:
    consumer: str
    since: float
    data: bytes


@dataclass
class _Group:
    last_delivered: int = 0
    pending: dict[int, _Pending] = field(default_factory=dict)


@dataclass
class _Shard:
    entries: OrderedDict[int, bytes] = field(default_factory=OrderedDict)
    groups: dict[str, _Group] = field(default_factory=dict)
    publishing: dict[int, bytes] = field(default_factory=dict)


class MemoryMediaBus:
    """Bounded shard streams with consumer groups, in process (Redis Streams semantics).

    ``maxlen`` bounds each shard; ids are numbered across all shards and qualified by shard.
    """

    def __init__(self, *, maxlen: int, shards: int = 1, metrics: Metrics | None = None) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be >= 1")
        if shards < 1:
            raise ValueError("shards must be >= 1")
        self.maxlen = maxlen
        self._metrics = metrics
        self._shards = [_Shard() for _ in range(shards)]
        self._next_id = 1
        self._appended = _Signal()

    @property
    def shards(self) -> int:
        return len(self._shards)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def append(self, data: bytes, *, key: str) -> AppendResult:
        k = shard_of(key, len(self._shards))
        shard = self._shards[k]
        entry_id = self._next_id
        self._next_id += 1
        shard.entries[entry_id] = data
        evicted = 0
        while len(shard.entries) > self.maxlen:
            old_id, _ = shard.entries.popitem(last=False)
            for group in shard.groups.values():
                group.pending.pop(old_id, None)
            evicted += 1
        if evicted and self._metrics is not None:
            self._metrics.media_dropped_total.labels("stream_full").inc(evicted)
        self._appended.fire()
        return AppendResult(id=qualify(k, str(entry_id)), evicted=evicted, shard=k)

    async def ensure_group(self, group: str) -> None:
        for shard in self._shards:
            shard.groups.setdefault(group, _Group())

    def _group(self, k: int, group: str) -> _Group:
        state = self._shards[k].groups.get(group)
        if state is None:
            raise KeyError(f"consumer group {group!r} does not exist; call ensure_group first")
        return state

    def _take_new(self, group: str, consumer: str, shards: Sequence[int], count: int) -> list[StreamEntry]:
        out: list[StreamEntry] = []
        now = time.monotonic()
        per_shard = max(1, -(-count // max(1, len(shards))))
        for k in shards:
            state = self._group(k, group)
            taken = 0
            for entry_id, data in self._shards[k].entries.items():
                if len(out) >= count or taken >= per_shard:
                    break
                if entry_id <= state.last_delivered:
                    continue
                state.pending[entry_id] = _Pending(consumer, now, data)
                state.last_delivered = entry_id
                out.append(StreamEntry(qualify(k, str(entry_id)), data, k))
                taken += 1
        return out

    async def read_group(
        self, group: str, consumer: str, *, shards: Sequence[int], count: int, block_ms: int
    ) -> list[StreamEntry]:
        deadline = time.monotonic() + block_ms / 1000
        while True:
            out = self._take_new(group, consumer, shards, count)
            remaining = deadline - time.monotonic()
            if out or remaining <= 0:
                return out
            await self._appended.wait(remaining)

    async def ack(self, group: str, ids: Sequence[str]) -> None:
        for raw in ids:
            k, stream_id = split_entry_id(raw)
            entry_id = int(stream_id)
            shard = self._shards[k]
            state = shard.groups.get(group)
            if state is not None:
                state.pending.pop(entry_id, None)
            shard.entries.pop(entry_id, None)
            shard.publishing.pop(entry_id, None)

    async def mark_publishing(self, marks: Sequence[tuple[Sequence[str], bytes]]) -> None:
        for ids, results in marks:
            if len({split_entry_id(raw)[0] for raw in ids}) > 1:
                raise ValueError("a group of marked entries must be of one shard")
            for raw in ids:
                k, stream_id = split_entry_id(raw)
                self._shards[k].publishing[int(stream_id)] = results

    async def publishing(self, shard: int) -> dict[str, bytes]:
        return {qualify(shard, str(i)): v for i, v in self._shards[shard].publishing.items()}

    async def claim_stale(
        self, group: str, consumer: str, *, shard: int, min_idle_ms: int, count: int
    ) -> list[StreamEntry]:
        state = self._shards[shard].groups.get(group)
        if state is None:
            return []
        now = time.monotonic()
        out: list[StreamEntry] = []
        for entry_id, pend in sorted(state.pending.items()):
            if (now - pend.since) * 1000 >= min_idle_ms:  # like XAUTOCLAIM: any consumer's, this one's too
                state.pending[entry_id] = _Pending(consumer, now, pend.data)
                out.append(StreamEntry(qualify(shard, str(entry_id)), pend.data, shard))
                if len(out) >= count:
                    break
        return out

    async def length(self) -> int:
        return sum(len(shard.entries) for shard in self._shards)

    def discard(self, match: Callable[[bytes], bool]) -> int:
        """Delete every entry (pending ones too) whose data ``match``es (erasure); how many were deleted."""
        removed = 0
        for shard in self._shards:
            for entry_id in [i for i, data in shard.entries.items() if match(data)]:
                del shard.entries[entry_id]
                shard.publishing.pop(entry_id, None)
                for state in shard.groups.values():
                    state.pending.pop(entry_id, None)
                removed += 1
        return removed


class _TopicLog:
    """One topic's records with absolute offsets; the oldest fall off past the retention."""

    __slots__ = ("base", "records")

    def __init__(self) -> None:
        self.base = 0
        self.records: list[tuple[str, bytes]] = []

    @property
    def end(self) -> int:
        return self.base + len(self.records)

    def append(self, key: str, value: bytes, *, retention: int) -> None:
        self.records.append((key, value))
        # trim in chunks (amortised O(1)): keep at most retention * 1.25 records
        if len(self.records) > retention + retention // 4:
            cut = len(self.records) - retention
            del self.records[:cut]
            self.base += cut

    def get(self, offset: int) -> tuple[str, bytes]:
        return self.records[offset - self.base]


class MemoryEventBus:
    """An in-process log per topic with consumer-group offsets (one partition).

    Like Kafka's retention, each topic keeps its newest ``retention`` records (so a
    long-running ``classpulse up`` has bounded memory); a consumer whose position fell
    behind the retained range continues from the oldest retained record.
    """

    def __init__(self, *, retention: int = 300_000) -> None:
        if retention < 1:
            raise ValueError("retention must be >= 1")
        self.retention = retention
        self._logs: dict[str, _TopicLog] = defaultdict(_TopicLog)
        self._committed: dict[tuple[str, str], int] = {}
        self._published = _Signal()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        self._logs[topic].append(key, value, retention=self.retention)
        self._published.fire()

    def consumer(self, topics: Sequence[str], *, group: str, from_beginning: bool = True) -> MemoryEventConsumer:
        return MemoryEventConsumer(self, list(topics), group, from_beginning)

    def records(self, topic: str) -> list[tuple[str, bytes]]:
        """Every retained record of ``topic`` (for replay and tests)."""
        return list(self._logs[topic].records)


class MemoryEventConsumer:
    def __init__(self, bus: MemoryEventBus, topics: list[str], group: str, from_beginning: bool) -> None:
        self._bus = bus
        self._topics = topics
        self._group = group
        self._from_beginning = from_beginning
        self._position: dict[str, int] = {}

    async def start(self) -> None:
        for topic in self._topics:
            log = self._bus._logs[topic]
            committed = self._bus._committed.get((self._group, topic))
            if committed is None:
                committed = log.base if self._from_beginning else log.end
            self._position[topic] = committed

    async def close(self) -> None:
        return None

    def _take(self, max_records: int) -> list[EventRecord]:
        out: list[EventRecord] = []
        for topic in self._topics:
            log = self._bus._logs[topic]
            pos = max(self._position[topic], log.base)
            while pos < log.end and len(out) < max_records:
                key, value = log.get(pos)
                out.append(EventRecord(topic, key, value, 0, pos))
                pos += 1
            self._position[topic] = pos
        return out

    async def poll(self, *, max_records: int, timeout_ms: int) -> list[EventRecord]:
        out = self._take(max_records)
        if out or timeout_ms <= 0:
            return out
        deadline = time.monotonic() + timeout_ms / 1000
        while not self._has_new():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            await self._bus._published.wait(remaining)
        return self._take(max_records)

    def _has_new(self) -> bool:
        return any(self._position[t] < self._bus._logs[t].end for t in self._topics)

    async def commit(self) -> None:
        for topic, pos in self._position.items():
            self._bus._committed[(self._group, topic)] = pos


class MemoryLiveBus:
    """In-process fan-out with bounded per-subscriber queues (slow viewers lose oldest)."""

    def __init__(self, *, queue_size: int = 256) -> None:
        self._queue_size = queue_size
        self._subscribers: dict[str, set[asyncio.Queue[bytes]]] = defaultdict(set)
        self._state: dict[str, dict[str, bytes]] = defaultdict(dict)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(self, channel: str, data: bytes) -> None:
        for queue in list(self._subscribers.get(channel, ())):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(data)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[bytes]]:
        queue: asyncio.Queue[bytes] = asyncio.Queue(self._queue_size)
        self._subscribers[channel].add(queue)

        async def messages() -> AsyncIterator[bytes]:
            while True:
                yield await queue.get()

        try:
            yield messages()
        finally:
            self._subscribers[channel].discard(queue)

    async def set_state(self, key: str, field: str, data: bytes) -> None:
        self._state[key][field] = data

    async def get_state(self, key: str) -> dict[str, bytes]:
        return dict(self._state.get(key, {}))

    def delete_state(self, key: str, fields: Callable[[str], bool] | None = None) -> int:
        """Delete the state hash ``key`` (or its fields that ``fields`` matches); how many fields went."""
        state = self._state.get(key, {})
        gone = [f for f in state if fields is None or fields(f)]
        for name in gone:
            del state[name]
        if not state:
            self._state.pop(key, None)
        return len(gone)
