"""Participant lifecycle: joined/left, camera on/off, mic muted/unmuted, published as events.

:class:`PresenceMonitor` is a pure state machine fed by track consumers (frame arrivals,
black frames, digital silence) and polled by :class:`LifecycleReporter`, which publishes
:class:`~shared.contracts.events.LifecycleEvent` on ``classpulse.lifecycle`` in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from shared.contracts.events import LifecycleEvent, LifecycleKind, Role
from shared.contracts.timing import wall_clock
from shared.contracts.topics import LIFECYCLE
from shared.log import get_logger, pii, spawn
from shared.transport.base import EventBus
from shared.transport.typed import EventPublisher

log = get_logger(__name__)

_POLL_S = 0.25
_QUEUE = 64
OWN_STALL_S = 2.0
"""Checks further apart than this mean the ingest itself did not run (a busy box, a blocked loop)."""


class PresenceMonitor:
    """Tracks whether camera and microphone are live from what the tracks deliver.

    What the ingest did not see while it was not running itself is no evidence: after checks more than
    :data:`OWN_STALL_S` apart the thresholds count again from that check. With :meth:`watch_video_packets`,
    a camera whose RTP packets keep arriving while decoded frames lag behind (a busy ingest decodes late)
    stays on, unless its last decoded frames were black.
    """

    def __init__(
        self, *, camera_off_after_s: float, mic_muted_after_s: float, has_video: bool, has_audio: bool, now: float
    ) -> None:
        self.camera_off_after_s = camera_off_after_s
        self.mic_muted_after_s = mic_muted_after_s
        self.camera_on = has_video
        self.mic_on = has_audio
        # A track that was never offered never counts as live.
        self._last_video = now if has_video else float("-inf")
        self._last_sound = now if has_audio else float("-inf")
        self._black = False
        self._last_check: float | None = None
        self._awake_from = now
        self._video_packets: Callable[[], float | None] | None = None

    def watch_video_packets(self, last_packet: Callable[[], float | None]) -> None:
        """``last_packet()``: wall time of the newest video RTP packet (None: none lately)."""
        self._video_packets = last_packet

    def video_frame(self, now: float, *, black: bool | None) -> None:
        """A frame arrived; ``black`` is None when it was not examined (it inherits the last verdict)."""
        if black is not None:
            self._black = black
        if not self._black:
            self._last_video = now

    def audio_frame(self, now: float, *, silent: bool) -> None:
        if not silent:
            self._last_sound = now

    def initial(self) -> list[LifecycleKind]:
        """Events to send right after 'joined' (a publisher without camera or mic)."""
        out: list[LifecycleKind] = []
        if not self.camera_on:
            out.append("camera_off")
        if not self.mic_on:
            out.append("mic_muted")
        return out

    def check(self, now: float) -> list[LifecycleKind]:
        """State changes since the last check."""
        out: list[LifecycleKind] = []
        if self._last_check is not None and now - self._last_check > OWN_STALL_S:
            self._awake_from = now  # the ingest itself stalled: what it missed meanwhile says nothing
        self._last_check = now
        last_video = max(self._last_video, self._awake_from) if self.camera_on else self._last_video
        video_live = now - last_video < self.camera_off_after_s
        if not video_live and self.camera_on and not self._black and self._video_packets is not None:
            packet = self._video_packets()
            video_live = packet is not None and now - packet < self.camera_off_after_s
        if self.camera_on and not video_live:
            self.camera_on = False
            out.append("camera_off")
        elif not self.camera_on and video_live:
            self.camera_on = True
            out.append("camera_on")
        last_sound = max(self._last_sound, self._awake_from) if self.mic_on else self._last_sound
        sound_live = now - last_sound < self.mic_muted_after_s
        if self.mic_on and not sound_live:
            self.mic_on = False
            out.append("mic_muted")
        elif not self.mic_on and sound_live:
            self.mic_on = True
            out.append("mic_unmuted")
        return out


class LifecycleReporter:
    """Publishes one participant's lifecycle events in order, from one task."""

    def __init__(
        self, *, bus: EventBus, session: str, participant: str, role: Role, resource: str, monitor: PresenceMonitor
    ) -> None:
        self._publisher = EventPublisher(bus=bus, topic=LIFECYCLE)
        self.session = session
        self.participant = participant
        self.role: Role = role
        self.resource = resource
        self.monitor = monitor
        self.sent: list[LifecycleKind] = []
        self._count = 0
        self._queue: asyncio.Queue[LifecycleKind] = asyncio.Queue(_QUEUE)
        self._task: asyncio.Task[None] | None = None
        self._started = False

    def start(self) -> None:
        """Send 'joined' (plus camera/mic state) and start watching."""
        if self._started:
            return
        self._started = True
        for kind in ("joined", *self.monitor.initial()):
            self._queue.put_nowait(kind)  # type: ignore[arg-type]
        self._task = spawn(self._run(), name=f"lifecycle-{self.resource}")

    async def _run(self) -> None:
        while True:
            while not self._queue.empty():
                await self._send(self._queue.get_nowait())
            for kind in self.monitor.check(wall_clock()):
                await self._send(kind)
            await asyncio.sleep(_POLL_S)

    async def _send(self, kind: LifecycleKind) -> None:
        event = LifecycleEvent(
            event_id=f"{self.session}/{self.participant}/{self.resource}/{self._count}",
            session=self.session,
            participant=self.participant,
            role=self.role,
            kind=kind,
            ts=wall_clock(),
        )
        self._count += 1
        await self._publisher.publish(event)
        self.sent.append(kind)
        log.info("participant state -> %s", kind, extra=pii(participant=self.participant, session=self.session))

    async def close(self) -> None:
        """Stop watching and send 'left' (only if 'joined' was sent)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._started:
            while not self._queue.empty():
                await self._send(self._queue.get_nowait())
            await self._send("left")
            self._started = False
