"""Publish epochs: what lets a participant's reconnect continue their stream (a Protocol and its in-memory store).

Every WHIP publish of a participant gets the next *epoch* of that participant (0 for the
first publish, larger for every publish after it; a failed negotiation may skip one) and the
*offset* of its media clock: the seconds since that participant's first publish. Ingest
stamps both on every frame and chunk (``MediaHeader.epoch``, ``media_time`` = offset + the
track's own clock), so sequence numbers restart at 0 per publish while ``(epoch, seq)`` and
the event ids built from them never repeat, and a reconnect's media continues the
participant's timeline after a gap instead of overwriting its first seconds.

The counter lives with the media transport, so every ingest worker (and a restarted one)
continues the same count: :class:`MemoryPublishRegistry` for embedded mode and unit tests,
:class:`shared.transport.redis_publishes.RedisPublishRegistry` for distributed mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

PUBLISH_TTL_S = 7 * 24 * 3600.0
"""How long a participant's epoch counter outlives their last publish (longer than any class)."""


@dataclass(frozen=True, slots=True)
class Publish:
    """One publish of one participant."""

    epoch: int
    """0 for the participant's first publish; larger for every later one."""
    offset: float
    """Seconds from the participant's first publish to this one: where this publish's media_time starts."""


class PublishRegistry(Protocol):
    """Hands out publish epochs and media-clock offsets per participant."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def begin(self, session: str, participant: str) -> Publish:
        """The next publish of ``session/participant``."""
        ...


class MemoryPublishRegistry:
    """:class:`PublishRegistry` in one process (an injectable clock gives virtual time)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._seen: dict[str, tuple[int, float, float]] = {}  # key -> (last epoch, origin, expires)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def begin(self, session: str, participant: str) -> Publish:
        now = self._clock()
        key = f"{session}/{participant}"
        last = self._seen.get(key)
        if last is None or last[2] <= now:
            self._seen[key] = (0, now, now + PUBLISH_TTL_S)
            return Publish(epoch=0, offset=0.0)
        epoch, origin = last[0] + 1, last[1]
        self._seen[key] = (epoch, origin, now + PUBLISH_TTL_S)
        return Publish(epoch=epoch, offset=max(0.0, now - origin))

    def forget(self, match: Callable[[str], bool]) -> int:
        """Delete the counters whose key (``session/participant``) ``match``es (erasure); how many."""
        gone = [k for k in self._seen if match(k)]
        for key in gone:
            del self._seen[key]
        return len(gone)
