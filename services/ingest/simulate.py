"""Simulated students: N real aiortc publishers over WHIP, relaying pre-encoded media.

The clip (VP8 or H.264 video, Opus audio) is demuxed once into memory; every publisher
replays those packets in real time, looping with monotonic timestamps, so no publisher
decodes or encodes anything: the CPU goes to the server under test, and the publisher
process's own CPU is reported separately (:class:`SimulationReport`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import aiohttp
import av
import av.bitstream
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from services.ingest.aiortc_hooks import PC_CLOSE_TIMEOUT_S, close_bounded
from shared.log import get_logger
from shared.testkit.clips import write_clip
from shared.tokens import Secret, issue_token

log = get_logger(__name__)

_RELAY_VIDEO = {"vp8": "video/VP8", "h264": "video/H264"}
_RELAY_AUDIO = {"opus": "audio/opus"}
_CONNECT_TIMEOUT_S = 20.0


class SimulationError(Exception):
    """The simulation cannot run; the message is one user-facing line."""


@dataclass(frozen=True)
class EncodedPacket:
    data: bytes
    pts: int


@dataclass
class EncodedStream:
    """One stream's packets, in order, with its time base and loop length."""

    kind: str
    mime: str
    time_base: Fraction
    packets: list[EncodedPacket]
    duration: int  # in time_base units: one loop


@dataclass
class EncodedClip:
    """A clip demuxed once into memory, ready to relay without decoding."""

    streams: list[EncodedStream]

    @classmethod
    def load(cls, path: Path) -> EncodedClip:
        try:
            container = av.open(str(path))
        except (av.error.FFmpegError, OSError) as exc:
            raise SimulationError(f"cannot open {path} ({exc}); give a VP8/H.264 + Opus file (e.g. .webm)") from exc
        streams: list[EncodedStream] = []
        try:
            for stream in (*container.streams.video[:1], *container.streams.audio[:1]):
                name = stream.codec_context.name
                mime = (_RELAY_VIDEO if stream.type == "video" else _RELAY_AUDIO).get(name)
                if mime is None:
                    log.warning("cannot relay %s %s without re-encoding; stream left out", stream.type, name)
                    continue
                streams.append(_demux(path, stream.index, stream.type, mime, name))
        finally:
            container.close()
        if not streams:
            raise SimulationError(
                f"{path} has no VP8/H.264 video or Opus audio to relay; convert it, e.g. "
                "ffmpeg -i IN -c:v libvpx -c:a libopus OUT.webm"
            )
        return cls(streams=streams)


def _demux(path: Path, index: int, kind: str, mime: str, codec: str) -> EncodedStream:
    container = av.open(str(path))
    try:
        stream = container.streams[index]
        time_base = stream.time_base or Fraction(1, 90_000)
        bsf = av.bitstream.BitStreamFilterContext("h264_mp4toannexb", stream) if codec == "h264" else None
        packets: list[EncodedPacket] = []
        first: int | None = None
        for packet in container.demux(stream):
            if packet.pts is None or not packet.size:
                continue
            for out in bsf.filter(packet) if bsf is not None else (packet,):
                if out.pts is None:
                    continue
                first = out.pts if first is None else first
                packets.append(EncodedPacket(bytes(out), int(out.pts - first)))
        packets.sort(key=lambda p: p.pts)
        if not packets:
            raise SimulationError(f"{path}: its {kind} stream has no packets; give a complete recording")
        step = packets[1].pts - packets[0].pts if len(packets) > 1 else int(1 / time_base / 30)
        return EncodedStream(kind, mime, time_base, packets, packets[-1].pts + max(1, step))
    finally:
        container.close()


class _Clock:
    """Shared start time of one publisher's tracks, set by the first ``recv()``."""

    def __init__(self) -> None:
        self.start: float | None = None

    def now(self) -> float:
        if self.start is None:
            self.start = time.monotonic()
        return time.monotonic() - self.start


class RelayTrack(MediaStreamTrack):
    """Replays one encoded stream in real time as ``av.Packet`` objects (aiortc sends them as is)."""

    def __init__(self, stream: EncodedStream, clock: _Clock) -> None:
        super().__init__()
        self.kind = stream.kind
        self._stream = stream
        self._clock = clock
        self._index = 0
        self.sent = 0

    async def recv(self) -> av.Packet:  # type: ignore[override,type-arg]
        if self.readyState != "live":
            raise MediaStreamError
        s = self._stream
        loop, pos = divmod(self._index, len(s.packets))
        item = s.packets[pos]
        pts = item.pts + loop * s.duration
        delay = float(pts * s.time_base) - self._clock.now()
        if delay > 0:
            await asyncio.sleep(delay)
        packet = av.Packet(item.data)
        packet.pts = pts
        packet.dts = pts
        packet.time_base = s.time_base
        self._index += 1
        self.sent += 1
        return packet


@dataclass
class Publisher:
    participant: str
    pc: RTCPeerConnection
    tracks: list[RelayTrack]
    location: str | None = None


@dataclass
class SimulationReport:
    students: int
    connected: int
    duration_s: float
    publisher_cpu_s: float
    errors: list[str] = field(default_factory=list)

    @property
    def publisher_cpu_percent(self) -> float:
        """CPU of the publisher process as a percentage of one core."""
        return 100.0 * self.publisher_cpu_s / self.duration_s if self.duration_s > 0 else 0.0

    def summary(self) -> str:
        text = (
            f"simulated {self.connected}/{self.students} publishers for {self.duration_s:.1f} s; "
            f"publisher process CPU {self.publisher_cpu_percent:.1f} % of one core (server CPU not included)"
        )
        return text + "".join(f"\n  error: {e}" for e in self.errors[:10])


def cpu_seconds() -> float:
    """User + system CPU of this process so far."""
    t = os.times()
    return t.user + t.system


class Simulation:
    """Starts and stops N relaying publishers against one WHIP server."""

    def __init__(
        self, *, base_url: str, session: str, students: int, clip: EncodedClip, secret: Secret, prefix: str = "student"
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.students = students
        self.clip = clip
        self.secret = secret
        self.prefix = prefix
        self.publishers: list[Publisher] = []
        self.errors: list[str] = []
        self._http: aiohttp.ClientSession | None = None

    def token(self, participant: str) -> str:
        return issue_token(secret=self.secret, session=self.session, participant=participant, role="student")

    async def start(self) -> int:
        """Connect every publisher (concurrently); returns how many connected."""
        self._http = aiohttp.ClientSession()
        names = [f"{self.prefix}-{i + 1}" for i in range(self.students)]
        results = await asyncio.gather(*(self._publish(n) for n in names), return_exceptions=True)
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                self.errors.append(f"{name}: {result}")
        return sum(1 for p in self.publishers if p.pc.connectionState == "connected")

    async def _publish(self, participant: str) -> None:
        assert self._http is not None
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        clock = _Clock()
        tracks = [RelayTrack(s, clock) for s in self.clip.streams]
        publisher = Publisher(participant=participant, pc=pc, tracks=tracks)
        self.publishers.append(publisher)
        connected = asyncio.Event()

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                connected.set()

        for track, stream in zip(tracks, self.clip.streams, strict=True):
            transceiver = pc.addTransceiver(track, direction="sendonly")
            caps = RTCRtpSender.getCapabilities(stream.kind)
            wanted = [c for c in caps.codecs if c.mimeType.lower() == stream.mime.lower()]
            transceiver.setCodecPreferences(wanted)
        await pc.setLocalDescription(await pc.createOffer())
        url = f"{self.base_url}/whip/{self.session}/{participant}"
        headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {self.token(participant)}"}
        async with self._http.post(url, data=pc.localDescription.sdp, headers=headers) as resp:
            body = await resp.text()
            if resp.status != 201:
                raise SimulationError(f"WHIP POST answered {resp.status}: {body.strip()}")
            publisher.location = resp.headers.get("Location")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
        try:
            await asyncio.wait_for(connected.wait(), _CONNECT_TIMEOUT_S)
        except TimeoutError as exc:
            raise SimulationError(f"connection did not come up within {_CONNECT_TIMEOUT_S:.0f} s") from exc

    async def stop(self) -> None:
        """DELETE every WHIP resource (all at once, first), then close the peer connections (bounded)."""
        publishers, self.publishers = self.publishers, []
        await asyncio.gather(*(self._delete(p) for p in publishers))
        closed = await asyncio.gather(*(close_bounded(p.pc, timeout_s=PC_CLOSE_TIMEOUT_S) for p in publishers))
        if not all(closed):
            log.warning("peer connections %s -> %s", "closing", "abandoned", extra={"count": closed.count(False)})
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _delete(self, publisher: Publisher) -> None:
        if not publisher.location or self._http is None:
            return
        url = self.base_url + publisher.location if publisher.location.startswith("/") else publisher.location
        headers = {"Authorization": f"Bearer {self.token(publisher.participant)}"}
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with self._http.delete(url, headers=headers, timeout=aiohttp.ClientTimeout(total=10)):
                pass


def default_clip(folder: Path, *, seconds: float = 10.0) -> Path:
    """A VP8 + Opus clip of the sample photo, 640x480 @ 15 fps."""
    return write_clip(folder / "classpulse-sim.webm", seconds=seconds, video="vp8", audio=True)


async def run_simulation(
    *,
    base_url: str,
    session: str,
    students: int,
    media: Path | None,
    duration_s: float | None,
    prefix: str,
    secret: Secret,
) -> SimulationReport:
    """Publish until ``duration_s`` passes (or forever when None), then clean up."""
    if media is not None and not await asyncio.to_thread(media.exists):
        raise SimulationError(f"{media}: no such file; check the path")
    with tempfile.TemporaryDirectory(prefix="classpulse-sim-") as tmp:
        path = media if media is not None else await asyncio.to_thread(default_clip, Path(tmp))
        clip = await asyncio.to_thread(EncodedClip.load, path)
    sim = Simulation(base_url=base_url, session=session, students=students, clip=clip, secret=secret, prefix=prefix)
    cpu0, t0 = cpu_seconds(), time.monotonic()
    try:
        connected = await sim.start()
        print(f"{connected}/{students} publishers connected to {base_url} (session {session})", flush=True)
        await asyncio.sleep(duration_s if duration_s is not None else 10**9)
    finally:
        await sim.stop()
    return SimulationReport(
        students=students,
        connected=connected,
        duration_s=time.monotonic() - t0,
        publisher_cpu_s=cpu_seconds() - cpu0,
        errors=sim.errors,
    )
