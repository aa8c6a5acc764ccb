"""Publishing sampled media to the media transport without ever blocking track consumers.

Every message is appended to its participant's media shard (routing key
``"<session>/<participant>"``), so one inference worker sees all of a participant's media.

Each stream (one participant's video or audio) owns a :class:`StreamPublisher` with a
one-slot mailbox: the consumer drops the newest message in; a background task appends it
to the media bus. If the bus is slower than the analysis rate, the waiting message is
replaced by the newer one (keep-latest) and the replaced one is counted as a drop
(``classpulse_media_dropped_total{reason="publish_backlog"}``).
"""

from __future__ import annotations

import asyncio

from shared.contracts.codec import encode_media
from shared.contracts.media import MediaMessage
from shared.contracts.timing import StageStamp, TimingTrail, wall_clock
from shared.log import get_logger, spawn
from shared.metrics import Metrics
from shared.transport.base import MediaBus
from shared.transport.shards import participant_key

log = get_logger(__name__)

STAGE = "ingest"
BACKLOG_DROP = "publish_backlog"


def restamp(msg: MediaMessage, *, emitted: float) -> MediaMessage:
    """The message with its ``ingest`` stamp's emit time set to ``emitted``."""
    stamp = msg.timing.stage(STAGE)
    received = stamp.received if stamp is not None else emitted
    stages = [s for s in msg.timing.stages if s.stage != STAGE]
    trail = TimingTrail(
        capture_ts=msg.timing.capture_ts, stages=[*stages, StageStamp(stage=STAGE, received=received, emitted=emitted)]
    )
    return msg.model_copy(update={"timing": trail})


async def publish_now(bus: MediaBus, msg: MediaMessage, metrics: Metrics) -> None:
    """Stamp, encode and append one message; record latency and throughput."""
    stamped = restamp(msg, emitted=wall_clock())
    await bus.append(encode_media(stamped), key=participant_key(stamped.session, stamped.participant))
    metrics.observe_trail(stamped.timing, stage=STAGE)
    metrics.messages_total.labels(STAGE, stamped.kind).inc()


class StreamPublisher:
    """Keep-latest mailbox plus one task appending to the media bus."""

    def __init__(self, *, bus: MediaBus, metrics: Metrics, name: str) -> None:
        self._bus = bus
        self._metrics = metrics
        self._name = name
        self._slot: MediaMessage | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.dropped = 0

    def start(self) -> None:
        if self._task is None:
            self._task = spawn(self._run(), name=f"publish-{self._name}")

    def offer(self, msg: MediaMessage) -> None:
        """Hand over a message; replaces (and counts) one still waiting."""
        if self._slot is not None:
            self.dropped += 1
            self._metrics.media_dropped_total.labels(BACKLOG_DROP).inc()
        self._slot = msg
        self._ready.set()

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            msg, self._slot = self._slot, None
            if msg is None:
                continue
            try:
                await publish_now(self._bus, msg, self._metrics)
                self.published += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a transport hiccup must not end the stream
                self._metrics.errors_total.labels(STAGE, type(exc).__name__).inc()
                log.warning("media append failed: %s", exc)
                await asyncio.sleep(0.1)

    async def close(self) -> None:
        """Publish what is waiting, then stop."""
        if self._task is None:
            return
        pending, self._slot = self._slot, None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        if pending is not None:
            try:
                await publish_now(self._bus, pending, self._metrics)
                self.published += 1
            except Exception as exc:
                log.warning("media append failed: %s", exc)
