"""Live fan-out inside the gateway: one bus subscription per watched session, many viewers.

Each message is decoded once, stamped with the ``gateway`` stage (so the timing trail
reaches the dashboard), measured (hop from the previous stage, capture -> gateway), and
put on every viewer's bounded queue; a slow viewer loses its oldest messages, never
blocks the others. The session's privacy policy is applied first
(:func:`shared.analytics.privacy.redact_live`): no message about an opted-out participant, and
class figures only in aggregate-only sessions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from shared.analytics.privacy import AnyLive, redact_live
from shared.contracts.codec import DecodeError
from shared.contracts.live import LiveInteraction, LiveLifecycle, LivePrivacy, LiveScore, decode_live, encode_live
from shared.contracts.privacy import SessionPrivacy
from shared.contracts.timing import wall_clock
from shared.contracts.topics import live_channel
from shared.log import get_logger, spawn
from shared.metrics import Metrics
from shared.privacy.view import PrivacyView
from shared.transport.base import LiveBus

_log = get_logger(__name__)
STAGE = "gateway"
END = b""
"""Put on a viewer's queue when the session's live feed failed."""


class LiveHub:
    """Shares one live-bus subscription per session among all of its viewers."""

    def __init__(self, *, bus: LiveBus, metrics: Metrics, queue_size: int, privacy: PrivacyView | None = None) -> None:
        self._bus = bus
        self._privacy = privacy
        self._metrics = metrics
        self._queue_size = queue_size
        self._viewers: dict[str, set[asyncio.Queue[bytes]]] = {}
        self._pumps: dict[str, asyncio.Task[None]] = {}
        self._subscribed: dict[str, asyncio.Event] = {}

    @asynccontextmanager
    async def watch(self, session: str) -> AsyncIterator[asyncio.Queue[bytes]]:
        """A queue of encoded live messages for one viewer of ``session`` (subscribed on entry).

        An empty message (:data:`END`) means the live feed failed: close the viewer, who reconnects.
        """
        queue: asyncio.Queue[bytes] = asyncio.Queue(self._queue_size)
        viewers = self._viewers.setdefault(session, set())
        viewers.add(queue)
        if session not in self._pumps:
            subscribed = self._subscribed[session] = asyncio.Event()
            self._pumps[session] = spawn(self._pump(session, subscribed), name=f"gateway-live-{len(self._pumps)}")
        await self._subscribed[session].wait()
        try:
            yield queue
        finally:
            viewers.discard(queue)
            if not viewers and self._viewers.get(session) is viewers:
                await self._stop(session)

    async def _stop(self, session: str) -> None:
        self._viewers.pop(session, None)
        self._subscribed.pop(session, None)
        task = self._pumps.pop(session, None)
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        for session in list(self._pumps):
            await self._stop(session)

    async def _pump(self, session: str, subscribed: asyncio.Event) -> None:
        try:
            async with self._bus.subscribe(live_channel(session)) as feed:
                subscribed.set()
                _log.debug("live feed state %s -> %s", "new", "subscribed")
                async for data in feed:
                    stamped = self._stamp(data)
                    if stamped is None:
                        continue
                    policy = await self._privacy.get(session) if self._privacy is not None else None
                    out = self._redact(stamped, policy)
                    if out is not None:
                        self._fan_out(session, out)
        except Exception as exc:
            self._metrics.errors_total.labels(STAGE, "live_subscribe").inc()
            _log.error("live feed state %s -> %s: %s", "subscribed", "failed", exc)
            if self._pumps.get(session) is asyncio.current_task():
                del self._pumps[session]
                self._subscribed.pop(session, None)
                viewers = self._viewers.pop(session, set())
                for queue in viewers:
                    if queue.full():
                        queue.get_nowait()
                    queue.put_nowait(END)
            subscribed.set()

    def deliver(self, session: str, data: bytes) -> None:
        """Hand a message produced inside the gateway (lifecycle from the event log) to the session's viewers."""
        if self._privacy is not None and session in self._viewers:
            policy = self._privacy.cached(session)
            if policy.aggregate_only or policy.opted_out:
                try:
                    redacted = self._redact((decode_live(data), data), policy)
                except DecodeError:
                    return
                if redacted is None:
                    return
                data = redacted
        self._fan_out(session, data)

    @staticmethod
    def _redact(stamped: tuple[AnyLive, bytes], policy: SessionPrivacy | None) -> bytes | None:
        message, data = stamped
        if policy is None or not (policy.aggregate_only or policy.opted_out):
            return data
        kept = redact_live(message, policy)
        if kept is None:
            return None
        return data if kept is message else encode_live(kept)

    def _fan_out(self, session: str, out: bytes) -> None:
        for queue in list(self._viewers.get(session, ())):
            if queue.full():
                queue.get_nowait()
                self._metrics.errors_total.labels(STAGE, "viewer_overflow").inc()
            queue.put_nowait(out)

    def _stamp(self, data: bytes) -> tuple[AnyLive, bytes] | None:
        received = wall_clock()
        try:
            message = decode_live(data)
        except DecodeError as exc:
            self._metrics.errors_total.labels(STAGE, "decode").inc()
            _log.warning("live message skipped: %s", exc)
            return None
        self._metrics.messages_total.labels(STAGE, f"live_{message.kind}").inc()
        if isinstance(message, LiveLifecycle | LiveInteraction | LivePrivacy):
            return message, data  # no timing trail: passed through as is
        trail = message.event.timing
        self._metrics.observe_hop(trail, transport="live", received=received)
        stamped = trail.stamped(STAGE, received=received)
        message.event.timing = stamped
        # Student signals measure capture -> delivery ("gateway"); aggregates and alerts are
        # emitted when their window closes, so their delay is kept apart ("gateway_aggregate" ...).
        label = STAGE if isinstance(message, LiveScore) else f"{STAGE}_{message.kind}"
        stamp = stamped.stages[-1]
        self._metrics.stage_seconds.labels(label).observe(max(0.0, stamp.emitted - stamp.received))
        self._metrics.since_capture_seconds.labels(label).observe(max(0.0, stamp.emitted - stamped.capture_ts))
        return message, encode_live(message)
