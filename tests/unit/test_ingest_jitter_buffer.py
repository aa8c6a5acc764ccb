"""The video jitter buffer releases a frame on its marker packet, not one frame interval later."""

from __future__ import annotations

import pytest
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from services.ingest.aiortc_hooks import FrameEndJitterBuffer

pytestmark = pytest.mark.unit


def packet(seq: int, ts: int, data: bytes, *, marker: bool = False) -> RtpPacket:
    p = RtpPacket(payload_type=96, sequence_number=seq, timestamp=ts, marker=int(marker))
    p._data = data  # type: ignore[attr-defined]  # what the receiver's depayloader sets
    return p


def frames_out(buffer: JitterBuffer, packets: list[RtpPacket]) -> list[tuple[int, bytes, int]]:
    """(timestamp, data, index of the packet whose arrival released it) of every released frame."""
    out = []
    for i, p in enumerate(packets):
        _, frame = buffer.add(p)
        if frame is not None:
            out.append((frame.timestamp, frame.data, i))
    return out


def test_a_frame_leaves_with_its_last_packet() -> None:
    stream = [packet(10, 0, b"a1"), packet(11, 0, b"a2", marker=True), packet(12, 18000, b"b1", marker=True)]
    assert frames_out(FrameEndJitterBuffer(capacity=64, is_video=True), stream) == [
        (0, b"a1a2", 1), (18000, b"b1", 2),
    ]
    # aiortc's own buffer: each frame waits for the next one's first packet (200 ms at 5 fps)
    assert frames_out(JitterBuffer(capacity=64, is_video=True), stream) == [(0, b"a1a2", 2)]


def test_a_lost_marker_packet_still_ends_the_frame_at_the_next_one() -> None:
    buffer = FrameEndJitterBuffer(capacity=64, is_video=True)
    stream = [packet(1, 0, b"a1"), packet(2, 0, b"a2"), packet(3, 9000, b"b1"), packet(4, 9000, b"b2", marker=True)]
    assert frames_out(buffer, stream) == [(0, b"a1a2", 2), (9000, b"b1b2", 3)]


def test_a_missing_packet_holds_the_frame_until_it_arrives_out_of_order() -> None:
    stream = [packet(1, 0, b"a1"), packet(3, 0, b"a3", marker=True), packet(2, 0, b"a2")]
    assert frames_out(FrameEndJitterBuffer(capacity=64, is_video=True), stream) == [(0, b"a1a2a3", 2)]


def test_padding_without_payload_makes_no_frame() -> None:
    stream = [packet(1, 0, b"a1", marker=True), packet(2, 0, b""), packet(3, 9000, b"b1", marker=True)]
    assert frames_out(FrameEndJitterBuffer(capacity=64, is_video=True), stream) == [(0, b"a1", 0), (9000, b"b1", 2)]
