"""The video jitter buffer releases a frame on its marker packet, not one frame interval later, and after
a loss it gave up on withholds frames until a keyframe (the ones between decode to garbage)."""

from __future__ import annotations

import pytest
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from services.ingest.aiortc_hooks import FrameEndJitterBuffer, h264_keyframe, vp8_keyframe

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


KEY, DELTA = b"\x10key", b"\x11delta"  # VP8 frame tags: bit 0 clear on a keyframe


def test_after_a_loss_it_gave_up_on_frames_wait_for_a_keyframe() -> None:
    withheld: list[int] = []
    buffer = FrameEndJitterBuffer(capacity=16, is_key=lambda _p, data: vp8_keyframe(data),
                                  on_withheld=lambda: withheld.append(1))
    # frames of one packet each, 3000 ticks apart; seq 3 is lost and never comes
    stream = [packet(seq, seq * 3000, KEY if seq in (1, 25) else DELTA, marker=True)
              for seq in range(1, 30) if seq != 3]
    released = [ts // 3000 for ts, _, _ in frames_out(buffer, stream)]
    # 1-2 leave at once; 4.. wait behind the hole until the buffer overflows at 19 (aiortc asks for a
    # keyframe then), and 4..24 reference the lost frame: withheld (not kept as a backlog), until the
    # keyframe at 25, which leaves as soon as it is in
    assert released == [1, 2, 25, 26, 27, 28, 29]
    assert buffer.withheld == len(withheld) == 21 and not buffer.awaiting_key


def test_without_a_keyframe_test_nothing_is_withheld() -> None:
    buffer = FrameEndJitterBuffer(capacity=16)
    stream = [packet(seq, seq * 3000, DELTA, marker=True) for seq in range(1, 30) if seq != 3]
    released = [ts // 3000 for ts, _, _ in frames_out(buffer, stream)]
    assert released == [1, 2, *range(4, 15)]  # aiortc's way: one frame per packet from the backlog
    assert buffer.withheld == 0


def test_keyframes_are_read_from_the_vp8_tag_and_the_h264_nal_type() -> None:
    assert vp8_keyframe(KEY) and not vp8_keyframe(DELTA) and not vp8_keyframe(b"")
    sps, idr, non_idr = b"\x00\x00\x00\x01\x67abc", b"\x00\x00\x00\x01\x65xyz", b"\x00\x00\x00\x01\x41xyz"
    assert h264_keyframe(sps + idr) and not h264_keyframe(non_idr) and not h264_keyframe(sps)
