"""Dynamic micro-batching across streams (the stream-muxer idea): bounded, fair, clock-injected.

Items are queued per stream (a participant). A batch is ready when the batcher holds
``max_batch`` items or its oldest item has waited ``max_wait_s``. :meth:`MicroBatcher.take`
fills a batch round-robin across streams, visiting streams in the order of their oldest
waiting item, so one busy stream cannot crowd out others and the oldest item anywhere is
always in the next batch (no starvation). The batcher never holds more than ``capacity``
items: past it, the oldest item of the longest stream is dropped (media is lossy by
design) and returned to the caller to count. Time comes from an injected clock, so tests
run on virtual time.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Queued(Generic[T]):
    stream: str
    value: T
    enqueued: float


class MicroBatcher(Generic[T]):
    """Per-stream FIFO queues with size/deadline flushing and a hard bound."""

    def __init__(
        self, *, max_batch: int, max_wait_s: float, capacity: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_batch < 1 or capacity < max_batch:
            raise ValueError("need 1 <= max_batch <= capacity")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must be >= 0")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.capacity = capacity
        self._clock = clock
        self._queues: dict[str, deque[Queued[T]]] = {}
        self._served: dict[str, int] = {}
        self._turn = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def full(self) -> bool:
        return self._size >= self.capacity

    def put(self, stream: str, value: T) -> Queued[T] | None:
        """Queue an item; returns the item dropped to stay within capacity, if any."""
        self._queues.setdefault(stream, deque()).append(Queued(stream, value, self._clock()))
        self._size += 1
        if self._size <= self.capacity:
            return None
        longest = max(self._queues.values(), key=lambda q: (len(q), -q[0].enqueued))
        dropped = longest.popleft()
        self._size -= 1
        if not longest:
            del self._queues[dropped.stream]
        return dropped

    def oldest_wait(self) -> float | None:
        """How long the oldest queued item has waited (None when empty)."""
        if not self._queues:
            return None
        return self._clock() - min(q[0].enqueued for q in self._queues.values())

    def ready(self) -> bool:
        """Full batch available, or the oldest item has waited its budget."""
        if self._size >= self.max_batch:
            return True
        wait = self.oldest_wait()
        return wait is not None and wait >= self.max_wait_s

    def time_to_deadline(self) -> float | None:
        """Seconds until the oldest item's budget runs out (0 when ready; None when empty)."""
        if self._size >= self.max_batch:
            return 0.0
        wait = self.oldest_wait()
        return None if wait is None else max(0.0, self.max_wait_s - wait)

    def take(self) -> list[Queued[T]]:
        """Up to ``max_batch`` items, round-robin across streams ordered by their oldest item."""
        batch: list[Queued[T]] = []
        while self._queues and len(batch) < self.max_batch:
            # Oldest head first; among equally old heads, the stream served longest ago.
            order = sorted(self._queues, key=lambda s: (self._queues[s][0].enqueued, self._served.get(s, -1)))
            for stream in order:
                if len(batch) >= self.max_batch:
                    break
                queue = self._queues[stream]
                batch.append(queue.popleft())
                self._turn += 1
                self._served[stream] = self._turn
                self._size -= 1
                if not queue:
                    del self._queues[stream]
        if len(self._served) > 4 * self.capacity:  # forget streams that went quiet
            self._served = {k: v for k, v in self._served.items() if k in self._queues}
        return batch
