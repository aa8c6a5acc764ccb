"""A local relay: helper processes append media and publish events into another process's buses.

``classpulse up`` keeps its memory transports in its main process but runs WebRTC receive in
ingest processes (one asyncio loop per core). Those processes write what ingest produces
(media appends, lifecycle events) to a Unix socket; :class:`RelayServer` in the main process
applies each record, in order, to the real buses. Records are length-prefixed::

    u8 kind ("M" media | "E" event) | u16 key_len | u16 topic_len | u32 value_len | key | topic | value

The relay only carries writes: :class:`RelayMediaBus` and :class:`RelayEventBus` implement the
append/publish half of their Protocols and refuse reads. Back-pressure is the socket's: a slow
main process makes ``append`` wait in ``drain()``, which ingest's keep-latest mailboxes turn
into counted drops instead of growing queues.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

from shared.log import get_logger
from shared.metrics import Metrics
from shared.transport.base import AppendResult, EventBus, EventConsumer, MediaBus, StreamEntry
from shared.transport.shards import shard_of

log = get_logger(__name__)

_HEAD = struct.Struct("<cHHI")
MEDIA = b"M"
EVENT = b"E"
MAX_VALUE = 64 * 1024 * 1024  # one 4K BGR frame is ~25 MB; anything larger is a broken peer


class RelayError(RuntimeError):
    """The relay was used for something it does not carry, or its peer is gone."""


def pack(kind: bytes, key: str, topic: str, value: bytes) -> bytes:
    """One record: header, key, topic, value."""
    k, t = key.encode(), topic.encode()
    return b"".join((_HEAD.pack(kind, len(k), len(t), len(value)), k, t, value))


class RelayServer:
    """Applies relayed records to this process's media and event buses (one task per client)."""

    def __init__(self, *, path: Path, media: MediaBus, events: EventBus) -> None:
        self.path = path
        self._media = media
        self._events = events
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self.records = 0

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._clients):
            task.cancel()
        for task in list(self._clients):
            with suppress(asyncio.CancelledError):
                await task
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            while True:
                head = await reader.readexactly(_HEAD.size)
                kind, key_len, topic_len, value_len = _HEAD.unpack(head)
                if kind not in (MEDIA, EVENT) or value_len > MAX_VALUE:
                    log.error("relay record malformed (kind %r, %d bytes); closing that ingest process's relay",
                              kind, value_len)
                    return
                body = await reader.readexactly(key_len + topic_len + value_len)
                key = body[:key_len].decode()
                value = body[key_len + topic_len :]
                if kind == MEDIA:
                    await self._media.append(value, key=key)
                else:
                    await self._events.publish(body[key_len : key_len + topic_len].decode(), key, value)
                self.records += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the ingest process ended (or restarts): its records so far are applied
        except asyncio.CancelledError:
            pass  # closing: end this connection quietly (asyncio logs a handler that ends cancelled)
        finally:
            self._clients.discard(task)
            writer.close()


class _RelayClient:
    """One Unix-socket connection shared by the media and event halves of a process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        if self._writer is None:
            _, self._writer = await asyncio.open_unix_connection(str(self.path))

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with suppress(ConnectionError):
                await self._writer.wait_closed()
            self._writer = None

    async def send(self, record: bytes) -> None:
        if self._writer is None:
            raise RelayError("relay not started")
        self._writer.write(record)  # whole records only: write() never interleaves
        async with self._lock:
            await self._writer.drain()


class RelayMediaBus:
    """The append half of a MediaBus, relayed to the process that owns the shards."""

    def __init__(self, client: _RelayClient, *, shards: int, metrics: Metrics | None = None) -> None:
        self._client = client
        self._shards = shards

    @property
    def shards(self) -> int:
        return self._shards

    async def start(self) -> None:
        await self._client.start()

    async def close(self) -> None:
        await self._client.close()

    async def append(self, data: bytes, *, key: str) -> AppendResult:
        await self._client.send(pack(MEDIA, key, "", data))
        k = shard_of(key, self._shards)
        return AppendResult(id=f"relayed:{k}", evicted=0, shard=k)  # evictions are counted by the owner

    async def ensure_group(self, group: str) -> None:
        raise RelayError("the relay media bus only appends")

    async def read_group(
        self, group: str, consumer: str, *, shards: Sequence[int], count: int, block_ms: int
    ) -> list[StreamEntry]:
        raise RelayError("the relay media bus only appends")

    async def ack(self, group: str, ids: Sequence[str]) -> None:
        raise RelayError("the relay media bus only appends")

    async def claim_stale(
        self, group: str, consumer: str, *, shard: int, min_idle_ms: int, count: int
    ) -> list[StreamEntry]:
        raise RelayError("the relay media bus only appends")

    async def length(self) -> int:
        return 0


class RelayEventBus:
    """The publish half of an EventBus, relayed to the process that owns the event log."""

    def __init__(self, client: _RelayClient) -> None:
        self._client = client

    async def start(self) -> None:
        await self._client.start()

    async def close(self) -> None:
        await self._client.close()

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        await self._client.send(pack(EVENT, key, topic, value))

    def consumer(self, topics: Sequence[str], *, group: str, from_beginning: bool = True) -> EventConsumer:
        raise RelayError("the relay event bus only publishes")


def relay_buses(path: Path, *, shards: int) -> tuple[RelayMediaBus, RelayEventBus]:
    """Media and event buses of one helper process, sharing one connection to ``path``."""
    client = _RelayClient(path)
    return RelayMediaBus(client, shards=shards), RelayEventBus(client)
