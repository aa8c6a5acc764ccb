"""Small, contained hooks into aiortc receivers (private attributes; each checks it applies).

Capture time from RTCP Sender Reports: RTP timestamp -> sender's wall clock.

A sender report pairs an RTP timestamp with the sender's NTP wall-clock time, so a
frame's capture time is ``sr_wall + (frame_rtp - sr_rtp) / clock_rate``. That holds
when the publisher's clock is synchronised with ours (same host, or NTP); a result in
the future or more than ``max_lag_s`` in the past means the clocks disagree, and the
caller falls back to arrival-based timing (:class:`services.ingest.tracks.MediaClock`).

aiortc keeps sender reports to itself, so :func:`attach_sr_clock` wraps the receiver's
RTCP handler (an instance attribute, looked up per packet) to observe them.

:func:`throttle_remb` limits aiortc's REMB feedback: its delay-based estimator sends one
REMB per received packet while it sees "overuse", and a busy ingest process delays its
own packet handling, so under load it measured ~345 REMB/s for 10 publishers (a SRTCP
encrypt and a sendto each), adding load exactly when there is none to spare.

:func:`bound_jitter_buffer` shrinks the video jitter buffer: aiortc's holds 512 packets
and releases nothing past a lost packet until it overflows, so one loss stalls a stream
for up to 512 packets (~6 s at 640x480) and keeps that backlog as latency.

:class:`FrameEndJitterBuffer` (what :func:`bound_jitter_buffer` installs) also releases a video frame
as soon as its last packet (RTP marker bit, RFC 7741 / RFC 6184) is in: aiortc's releases a frame
only when the first packet of the *next* frame arrives, one frame interval late (200 ms for a
camera sent at the analysed 5 fps; measured capture->ingest at 10 students: 206 -> 16 ms).
After packets were given up on (the buffer overflowed past a loss and asked for a keyframe), it
withholds frames until a keyframe comes, as libwebrtc's receiver does: the frames in between
reference a picture the decoder never had and decode to garbage (no face in them: "not in
frame" for as long as the sender takes to send a keyframe). A camera answers the PLI within a
round trip; measured on the fault clip with one frame dropped, VP8 decoded without a face for
6.5 s, the whole stretch to its next keyframe.

:func:`dtls_failure` says why a connection failed when ICE connected but DTLS did not, from
the publisher's certificate (aiortc keeps it on the failed handshake). The case it names:
FFmpeg 8 built with GnuTLS (PyAV's wheels, Debian) makes a secp224r1 (P-224) certificate,
which aiortc's OpenSSL (4.x, in ``cryptography``) no longer knows as a TLS group, so the
handshake ends with an ``illegal_parameter`` alert in either DTLS role; WebRTC asks for
P-256 (RFC 8827, 6.5), which FFmpeg's ``cert_file``/``key_file`` options can supply.

:func:`close_bounded` closes a peer connection within a bound: on a starved box (measured in the
Kafka-pause fault, load ~4 on 2 cores) aiortc's ``RTCPeerConnection.close()`` waited > 17 s for its
transports, so what was queued behind it (the other publishers' DELETEs, a participant's ``left``)
never happened before the process's stop bound ended it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, RtcpSrPacket, RtpPacket

_NTP_UNIX_OFFSET = 2_208_988_800
_WRAP = 1 << 32


PC_CLOSE_TIMEOUT_S = 5.0
"""How long a peer connection's close may take before it is abandoned (what follows it happens either way)."""


async def close_bounded(pc: RTCPeerConnection, *, timeout_s: float) -> bool:
    """Close ``pc``; False when it did not finish within ``timeout_s`` (the close is abandoned then)."""
    try:
        await asyncio.wait_for(pc.close(), timeout_s)
    except TimeoutError:
        return False
    return True


def ntp_to_unix(ntp: int) -> float:
    """A 64-bit NTP timestamp as epoch seconds."""
    return (ntp >> 32) - _NTP_UNIX_OFFSET + (ntp & 0xFFFFFFFF) / _WRAP


class SenderReportClock:
    """Maps RTP timestamps of one receiver to the sender's wall clock from its latest SR."""

    def __init__(self, *, receiver: Any = None, max_lag_s: float = 10.0, max_ahead_s: float = 0.05) -> None:
        self._receiver = receiver
        self.max_lag_s = max_lag_s
        self.max_ahead_s = max_ahead_s
        self._sr: tuple[float, int] | None = None  # (wall time, 32-bit rtp timestamp)
        self.reports = 0
        self.rejected = 0

    def on_report(self, ntp: int, rtp: int) -> None:
        self._sr = (ntp_to_unix(ntp), rtp & 0xFFFFFFFF)
        self.reports += 1

    def _origin(self) -> int | None:
        mapper = getattr(self._receiver, "_RTCRtpReceiver__timestamp_mapper", None)
        origin = getattr(mapper, "_origin", None)
        return int(origin) if origin is not None else None

    def capture(self, pts: int, clock_rate: int, arrival: float) -> float | None:
        """Sender wall time of a frame whose aiortc ``pts`` is ``pts``; None when unknown or implausible."""
        if self._sr is None or clock_rate <= 0:
            return None
        origin = self._origin()
        if origin is None:
            return None
        return self.capture_rtp((pts + origin) % _WRAP, clock_rate, arrival)

    def capture_rtp(self, rtp: int, clock_rate: int, arrival: float) -> float | None:
        """Sender wall time of a 32-bit RTP timestamp; None when unknown or implausible."""
        if self._sr is None:
            return None
        wall, sr_rtp = self._sr
        diff = (rtp - sr_rtp) % _WRAP
        if diff >= _WRAP // 2:
            diff -= _WRAP
        capture = wall + diff / clock_rate
        if capture > arrival + self.max_ahead_s or capture < arrival - self.max_lag_s:
            self.rejected += 1
            return None
        return min(capture, arrival)


def _receiver_of(pc: RTCPeerConnection, track: MediaStreamTrack) -> RTCRtpReceiver | None:
    for receiver in pc.getReceivers():
        if receiver.track is track:
            return receiver
    return None


def last_packet_clock(pc: RTCPeerConnection, track: MediaStreamTrack) -> Callable[[], float | None] | None:
    """A function giving the wall time (epoch s) of the newest RTP packet ``track``'s receiver got within the
    last 10 s (None: none), from the public ``getSynchronizationSources()``; None if there is no receiver.
    Packets are taken on the event loop as they arrive, before the decoder thread, so this stays current
    while decoding lags."""
    receiver = _receiver_of(pc, track)
    if receiver is None:
        return None

    def last() -> float | None:
        return max((source.timestamp.timestamp() for source in receiver.getSynchronizationSources()), default=None)

    return last


def attach_sr_clock(pc: RTCPeerConnection, track: MediaStreamTrack) -> SenderReportClock | None:
    """Observe the sender reports of ``track``'s receiver; None if aiortc's internals differ."""
    receiver = _receiver_of(pc, track)
    original: Callable[[Any], Awaitable[None]] | None = getattr(receiver, "_handle_rtcp_packet", None)
    if receiver is None or original is None:
        return None
    clock = SenderReportClock(receiver=receiver)

    async def handle(packet: Any) -> None:
        if isinstance(packet, RtcpSrPacket):
            clock.on_report(packet.sender_info.ntp_timestamp, packet.sender_info.rtp_timestamp)
        await original(packet)

    receiver._handle_rtcp_packet = handle  # type: ignore[method-assign]
    return clock


def throttle_remb(pc: RTCPeerConnection, track: MediaStreamTrack, *, min_interval_s: float = 0.5) -> bool:
    """Send at most one REMB per ``min_interval_s`` for ``track``'s receiver; False if not applicable."""
    receiver = _receiver_of(pc, track)
    original: Callable[[Any], Awaitable[None]] | None = getattr(receiver, "_send_rtcp", None)
    if receiver is None or original is None:
        return False
    last = [float("-inf")]

    async def send(packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            now = time.monotonic()
            if now - last[0] < min_interval_s:
                return
            last[0] = now
        await original(packet)

    receiver._send_rtcp = send  # type: ignore[method-assign]
    return True


AWAITING_KEYFRAME = "awaiting_keyframe"
"""Drop reason: a video frame withheld after a loss until the next keyframe (it would decode to garbage)."""
_JITTER_ATTR = "_RTCRtpReceiver__jitter_buffer"
_CODECS_ATTR = "_RTCRtpReceiver__codecs"


class FrameEndJitterBuffer(JitterBuffer):
    """aiortc's video jitter buffer that also completes a frame on its marker packet (see the module docstring).

    A frame is still released when the next frame's first packet arrives (a lost marker packet);
    everything else (loss handling, overflow, PLI) is aiortc's. Frames of padding only (no payload)
    are skipped, as the decoder has nothing to decode in them.
    """

    def __init__(
        self, *, capacity: int, is_video: bool = True, is_key: Callable[[RtpPacket, bytes], bool] | None = None,
        on_withheld: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(capacity=capacity, is_video=is_video)
        self.is_key = is_key
        """Whether a frame (the packet that completed it, its data) is a keyframe; None: never withhold."""
        self.on_withheld = on_withheld
        self.awaiting_key = False
        self.withheld = 0
        """Frames withheld waiting for a keyframe, since the start."""

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli, frame = super().add(packet)
        if pli and self.is_key is not None:
            self.awaiting_key = True  # what was given up on is gone: until a keyframe, nothing decodes right
        while frame is not None and self.awaiting_key and self.is_key is not None:
            if self.is_key(packet, frame.data):
                self.awaiting_key = False
                break
            self.withheld += 1
            if self.on_withheld is not None:
                self.on_withheld()
            frame = self._remove_frame(packet.sequence_number)  # the next complete one: no backlog kept
        return pli, frame

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        while self._origin is not None:
            packets: list[RtpPacket] = []
            for count in range(self.capacity):
                packet = self._packets[(self._origin + count) % self.capacity]
                if packet is None:
                    return None  # a packet of this frame is missing (yet)
                if packets and packet.timestamp != packets[0].timestamp:
                    break  # the next frame started: this one is complete
                packets.append(packet)
                if packet.marker:
                    break  # its last packet
            else:
                return None
            self.remove(len(packets))
            data = b"".join(p._data for p in packets)  # type: ignore[attr-defined]
            if data:
                return JitterFrame(data=data, timestamp=packets[0].timestamp)
        return None


def vp8_keyframe(data: bytes) -> bool:
    """A VP8 frame (RTP payload descriptor removed) is a keyframe when bit 0 of its tag is 0 (RFC 6386, 9.1)."""
    return bool(data) and not data[0] & 0x01


def h264_keyframe(data: bytes) -> bool:
    """An H.264 access unit (Annex B, as aiortc depayloads it) holding an IDR slice (NAL type 5)."""
    return any(part and part[0] & 0x1F == 5 for part in data.split(b"\x00\x00\x01"))


_KEYFRAME_TESTS: dict[str, Callable[[bytes], bool]] = {"video/vp8": vp8_keyframe, "video/h264": h264_keyframe}


def bound_jitter_buffer(
    pc: RTCPeerConnection, track: MediaStreamTrack, *, capacity: int, on_withheld: Callable[[], None] | None = None
) -> bool:
    """Give ``track``'s video receiver a :class:`FrameEndJitterBuffer` of ``capacity`` packets (a power of 2),
    withholding frames after a loss until a keyframe for the codecs it knows (VP8, H.264: the ones
    ingest accepts); ``on_withheld`` is called for each frame withheld."""
    if capacity < 16 or capacity & (capacity - 1):
        raise ValueError("jitter buffer capacity must be a power of 2, at least 16")
    receiver = _receiver_of(pc, track)
    current = getattr(receiver, _JITTER_ATTR, None)
    if receiver is None or track.kind != "video" or not isinstance(current, JitterBuffer):
        return False
    codecs = getattr(receiver, _CODECS_ATTR, None)  # payload type -> codec, filled in place on receive()
    if not isinstance(codecs, dict):  # another aiortc: frames end on their marker, none withheld
        setattr(receiver, _JITTER_ATTR, FrameEndJitterBuffer(capacity=capacity))
        return True

    def is_key(packet: RtpPacket, data: bytes) -> bool:
        codec = codecs.get(packet.payload_type)
        test = _KEYFRAME_TESTS.get(str(getattr(codec, "mimeType", "")).lower())
        return True if test is None else test(data)  # a codec it cannot read: never withheld

    setattr(receiver, _JITTER_ATTR, FrameEndJitterBuffer(capacity=capacity, is_key=is_key, on_withheld=on_withheld))
    return True


WEBRTC_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
"""ECDSA curves aiortc's DTLS accepts in a publisher's certificate (its TLS groups)."""


@dataclass(frozen=True)
class DtlsFailure:
    """A DTLS handshake that failed after ICE connected."""

    role: str
    """Our DTLS role: ``client`` (we answered ``a=setup:active``) or ``server``."""
    peer_key: str | None
    """The publisher's certificate key (``EC secp224r1``, ``RSA 2048``), None when none arrived."""

    @property
    def hint(self) -> str:
        """One line for the operator: what the publisher sent and what to change."""
        if self.peer_key is None:
            return "the publisher sent no DTLS certificate; publish with a WebRTC client (DTLS 1.2, ECDSA P-256)"
        kind, _, detail = self.peer_key.partition(" ")
        if kind == "EC" and detail not in WEBRTC_CURVES:
            return (
                f"the publisher's DTLS certificate uses the {detail} curve, which WebRTC peers refuse (RFC 8827 asks "
                "for ECDSA P-256); FFmpeg built with GnuTLS makes such certificates: give it a P-256 certificate "
                "with -cert_file/-key_file (README: Publishers that work)"
            )
        if kind != "EC":
            return f"the publisher's DTLS certificate is {self.peer_key}; this server needs an ECDSA P-256 certificate"
        return f"DTLS handshake failed with a {self.peer_key} certificate (cipher suites or SRTP profiles differ?)"


def _key_name(cert: Any) -> str:
    key = cert.public_key()
    curve = getattr(key, "curve", None)
    if curve is not None:
        return f"EC {curve.name}"
    size = getattr(key, "key_size", None)
    return f"{type(key).__name__.removesuffix('PublicKey').removeprefix('_')} {size}".strip()


def dtls_failure(pc: RTCPeerConnection) -> DtlsFailure | None:
    """Why ``pc``'s DTLS failed when its ICE connected; None when DTLS did not fail (or aiortc differs)."""
    for transceiver in pc.getTransceivers():
        dtls = getattr(transceiver.receiver, "transport", None)
        ice = getattr(dtls, "transport", None)
        if dtls is None or ice is None or dtls.state != "failed" or ice.state not in ("completed", "connected"):
            continue
        ssl = getattr(dtls, "_ssl", None)
        try:
            cert = ssl.get_peer_certificate(as_cryptography=True) if ssl is not None else None
        except Exception:  # pyOpenSSL's API differs: say what we know
            cert = None
        return DtlsFailure(role=str(getattr(dtls, "_role", "auto")), peer_key=_key_name(cert) if cert else None)
    return None
