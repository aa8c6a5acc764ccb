"""A local relay: helper processes append media and publish events into another process's buses.

``classpulse up`` keeps its memory transports in its main process but runs WebRTC receive in
ingest processes (one asyncio loop per core). Those processes write what ingest produces
(media appends, lifecycle events) to a Unix socket; :class:`RelayServer` in the main process
applies each record, in order, to the real buses. Records are length-prefixed::

    u8 kind ("M" media | "E" event | "P" publish request | "R" its reply | "F" analysed rate)
    | u16 key_len | u16 topic_len | u32 value_len | key | topic | value

The relay carries writes: :class:`RelayMediaBus` and :class:`RelayEventBus` implement the
append/publish half of their Protocols and refuse reads. The one request is a participant's
next publish epoch (:class:`RelayPublishRegistry`): the main process owns the counter, so a
restarted ingest process continues it. The one record the main process sends unasked is ``F``
(:mod:`shared.transport.rate`): the frame rate its inference analyses now, to every ingest
process (and to each one as it connects), which samples video at it. Back-pressure is the socket's: a slow
main process makes ``append`` wait in ``drain()``, which ingest's keep-latest mailboxes turn
into counted drops instead of growing queues.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import struct
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

from shared.log import get_logger
from shared.metrics import Metrics
from shared.transport.base import AppendResult, EventBus, EventConsumer, MediaBus, StreamEntry
from shared.transport.publishes import Publish, PublishRegistry
from shared.transport.rate import RateError, RateRecord, SourceRate, decode_rate, encode_rate
from shared.transport.shards import shard_of

log = get_logger(__name__)

_HEAD = struct.Struct("<cHHI")
MEDIA = b"M"
EVENT = b"E"
PUBLISH = b"P"
REPLY = b"R"
RATE = b"F"
MAX_VALUE = 64 * 1024 * 1024  # one 4K BGR frame is ~25 MB; anything larger is a broken peer


class RelayError(RuntimeError):
    """The relay was used for something it does not carry, or its peer is gone."""


def pack(kind: bytes, key: str, topic: str, value: bytes) -> bytes:
    """One record: header, key, topic, value."""
    k, t = key.encode(), topic.encode()
    return b"".join((_HEAD.pack(kind, len(k), len(t), len(value)), k, t, value))


class RelayServer:
    """Applies relayed records to this process's media and event buses (one task per client)."""

    def __init__(self, *, path: Path, media: MediaBus, events: EventBus, publishes: PublishRegistry) -> None:
        self.path = path
        self._media = media
        self._events = events
        self._publishes = publishes
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._rate: RateRecord | None = None
        self.records = 0

    def send_rate(self, record: RateRecord) -> None:
        """Tell every ingest process (and each one that connects later) the analysed frame rate."""
        self._rate = record
        data = pack(RATE, "", "", encode_rate(record))
        for writer in list(self._writers):
            if not writer.is_closing():
                writer.write(data)  # tiny and rare; the socket buffer holds it, no drain needed

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
        self._writers.add(writer)
        if self._rate is not None:
            writer.write(pack(RATE, "", "", encode_rate(self._rate)))
        try:
            while True:
                head = await reader.readexactly(_HEAD.size)
                kind, key_len, topic_len, value_len = _HEAD.unpack(head)
                if kind not in (MEDIA, EVENT, PUBLISH) or value_len > MAX_VALUE:
                    log.error("relay record malformed (kind %r, %d bytes); closing that ingest process's relay",
                              kind, value_len)
                    return
                body = await reader.readexactly(key_len + topic_len + value_len)
                key = body[:key_len].decode()
                value = body[key_len + topic_len :]
                if kind == MEDIA:
                    await self._media.append(value, key=key)
                elif kind == PUBLISH:
                    session, _, participant = key.partition("/")
                    publish = await self._publishes.begin(session, participant)
                    reply = json.dumps({"epoch": publish.epoch, "offset": publish.offset}).encode()
                    writer.write(pack(REPLY, key, body[key_len : key_len + topic_len].decode(), reply))
                else:
                    await self._events.publish(body[key_len : key_len + topic_len].decode(), key, value)
                self.records += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the ingest process ended (or restarts): its records so far are applied
        except asyncio.CancelledError:
            pass  # closing: end this connection quietly (asyncio logs a handler that ends cancelled)
        finally:
            self._clients.discard(task)
            self._writers.discard(writer)
            writer.close()


class _RelayClient:
    """One Unix-socket connection shared by the media and event halves of a process."""

    def __init__(self, path: Path, *, rate: SourceRate | None = None) -> None:
        self.path = path
        self._rate = rate
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._replies: dict[str, asyncio.Future[bytes]] = {}
        self._ids = itertools.count()
        self._reader_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._writer is None:
            reader, self._writer = await asyncio.open_unix_connection(str(self.path))
            self._reader_task = asyncio.create_task(self._read_replies(reader), name="relay-replies")

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                kind, key_len, topic_len, value_len = _HEAD.unpack(await reader.readexactly(_HEAD.size))
                body = await reader.readexactly(key_len + topic_len + value_len)
                if kind == RATE:
                    self._set_rate(body[key_len + topic_len :])
                    continue
                future = self._replies.pop(body[key_len : key_len + topic_len].decode(), None)
                if kind == REPLY and future is not None and not future.done():
                    future.set_result(body[key_len + topic_len :])
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for future in self._replies.values():
                if not future.done():
                    future.set_exception(RelayError("the relay to the main process closed"))
            self._replies.clear()

    def _set_rate(self, value: bytes) -> None:
        if self._rate is None:
            return
        try:
            self._rate.set(decode_rate(value))
        except RateError as exc:
            log.warning("relay rate record ignored: %s", exc)

    async def request(self, kind: bytes, key: str, value: bytes = b"") -> bytes:
        """Send one request record and wait for its reply."""
        rid = str(next(self._ids))
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._replies[rid] = future
        await self.send(pack(kind, key, rid, value))
        return await future

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with suppress(asyncio.CancelledError):
                await self._reader_task
            self._reader_task = None
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

    async def mark_publishing(self, marks: Sequence[tuple[Sequence[str], bytes]]) -> None:
        raise RelayError("the relay media bus only appends")

    async def publishing(self, shard: int) -> dict[str, bytes]:
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


class RelayPublishRegistry:
    """A PublishRegistry whose counter lives in the process at the other end of the relay."""

    def __init__(self, client: _RelayClient) -> None:
        self._client = client

    async def start(self) -> None:
        await self._client.start()

    async def close(self) -> None:
        await self._client.close()

    async def begin(self, session: str, participant: str) -> Publish:
        data = json.loads(await self._client.request(PUBLISH, f"{session}/{participant}"))
        return Publish(epoch=int(data["epoch"]), offset=float(data["offset"]))


def relay_buses(
    path: Path, *, shards: int, rate: SourceRate | None = None
) -> tuple[RelayMediaBus, RelayEventBus, RelayPublishRegistry]:
    """Media bus, event bus and publish registry of one helper process, sharing one connection to ``path``;
    ``rate`` follows the analysed frame rate the other end sends."""
    client = _RelayClient(path, rate=rate)
    return RelayMediaBus(client, shards=shards), RelayEventBus(client), RelayPublishRegistry(client)
