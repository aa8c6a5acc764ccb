"""The media bus of a process with privacy controls: opted-out participants' media never reaches analysis.

:class:`PrivateMediaBus` wraps any :class:`~shared.transport.base.MediaBus`. An append of an
opted-out participant's frame or audio chunk is dropped before it enters a shard stream (ingest,
``classpulse up``'s relay), and entries read or claimed by inference that belong to a participant
who opted out meanwhile are acked unanalysed; both are counted as
``classpulse_media_dropped_total{reason="opted_out"}``. The subject is read from the entry's
header only (:func:`shared.contracts.codec.media_subject`).
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.contracts.codec import DecodeError, media_subject
from shared.metrics import Metrics
from shared.privacy.view import PrivacyView
from shared.transport.base import AppendResult, MediaBus, StreamEntry

REASON = "opted_out"


class PrivateMediaBus:
    """A :class:`MediaBus` that drops the media of opted-out participants."""

    def __init__(self, bus: MediaBus, *, view: PrivacyView, metrics: Metrics | None = None) -> None:
        self.inner = bus
        self.view = view
        self._metrics = metrics
        self.dropped = 0

    @property
    def shards(self) -> int:
        return self.inner.shards

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def _blocked(self, data: bytes) -> bool:
        try:
            session, participant = media_subject(data)
        except DecodeError:
            return False  # not ours to judge: the reader rejects it as undecodable
        return await self.view.opted_out(session, participant)

    def _count(self, n: int) -> None:
        self.dropped += n
        if self._metrics is not None and n:
            self._metrics.media_dropped_total.labels(REASON).inc(n)

    async def _blocked_key(self, key: str, data: bytes) -> bool:
        """By the routing key ``session/participant`` (ids from WHIP paths hold no '/'), else by the header."""
        session, sep, participant = key.partition("/")
        if not sep or "/" in participant:
            return await self._blocked(data)
        return await self.view.opted_out(session, participant)

    async def append(self, data: bytes, *, key: str) -> AppendResult:
        if await self._blocked_key(key, data):
            self._count(1)
            return AppendResult(id="", evicted=0, shard=-1)
        return await self.inner.append(data, key=key)

    async def _filter(self, group: str, entries: list[StreamEntry]) -> list[StreamEntry]:
        keep: list[StreamEntry] = []
        drop: list[str] = []
        for entry in entries:
            if await self._blocked(entry.data):
                drop.append(entry.id)
            else:
                keep.append(entry)
        if drop:
            await self.inner.ack(group, drop)
            self._count(len(drop))
        return keep

    async def ensure_group(self, group: str) -> None:
        await self.inner.ensure_group(group)

    async def read_group(
        self, group: str, consumer: str, *, shards: Sequence[int], count: int, block_ms: int
    ) -> list[StreamEntry]:
        entries = await self.inner.read_group(group, consumer, shards=shards, count=count, block_ms=block_ms)
        return await self._filter(group, entries)

    async def ack(self, group: str, ids: Sequence[str]) -> None:
        await self.inner.ack(group, ids)

    async def claim_stale(
        self, group: str, consumer: str, *, shard: int, min_idle_ms: int, count: int
    ) -> list[StreamEntry]:
        entries = await self.inner.claim_stale(group, consumer, shard=shard, min_idle_ms=min_idle_ms, count=count)
        return await self._filter(group, entries)

    async def mark_publishing(self, marks: Sequence[tuple[Sequence[str], bytes]]) -> None:
        await self.inner.mark_publishing(marks)

    async def publishing(self, shard: int) -> dict[str, bytes]:
        return await self.inner.publishing(shard)

    async def length(self) -> int:
        return await self.inner.length()
