"""Contracts: media binary codec, event JSON round trips, timing trail, schemas."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared.contracts import (
    AudioChunk,
    DecodeError,
    EventCodec,
    ScoreEvent,
    TimingTrail,
    VideoFrame,
    decode_media,
    encode_media,
)
from shared.contracts.schemas import topic_schemas

pytestmark = pytest.mark.unit


def _trail() -> TimingTrail:
    return TimingTrail(capture_ts=1000.0).stamped("ingest", received=1000.01, emitted=1000.02)


def test_video_frame_round_trip_keeps_pixels_and_ids() -> None:
    image = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    frame = VideoFrame.from_image(image, session="s", participant="p", seq=7, media_time=1.4, timing=_trail())
    data = encode_media(frame)
    assert len(data) < image.nbytes + 600  # raw pixels plus a small header, no base64
    back = decode_media(data)
    assert isinstance(back, VideoFrame)
    assert (back.session, back.participant, back.seq) == ("s", "p", 7)
    assert np.array_equal(back.image(), image)
    assert back.timing.stages[0].stage == "ingest"


def test_audio_chunk_round_trip() -> None:
    wave = np.linspace(-1, 1, 8000, dtype=np.float32)
    chunk = AudioChunk.from_waveform(
        wave, sample_rate=16000, session="s", participant="p", seq=0, media_time=0.0, timing=_trail()
    )
    back = decode_media(encode_media(chunk))
    assert isinstance(back, AudioChunk)
    assert back.duration == pytest.approx(0.5)
    assert np.array_equal(back.waveform(), wave)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"XXXX\x00\x00\x00\x00",
        b"CPM1\xff\x00\x00\x00{}",
        b"CPM1\x02\x00\x00\x00{}",
        b'CPM1\x10\x00\x00\x00{"kind":"video"}',
    ],
)
def test_malformed_media_raises_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_media(data)


def test_video_payload_size_is_checked() -> None:
    frame = VideoFrame.from_image(
        np.zeros((4, 4, 3), np.uint8), session="s", participant="p", seq=0, media_time=0.0, timing=_trail()
    )
    with pytest.raises(DecodeError, match="width"):
        decode_media(encode_media(frame)[:-3])


def test_score_event_json_round_trip_and_rejects_unknown_fields() -> None:
    codec = EventCodec(ScoreEvent)
    event = ScoreEvent(
        event_id=ScoreEvent.make_id("s", "p", 3),
        session="s",
        participant="p",
        seq=3,
        media_time=0.6,
        present=True,
        attentive=False,
        speaking=True,
        hand_raised=False,
        engagement=0.4,
        confidence=0.9,
        contributions={"attention": -0.2},
        timing=_trail(),
    )
    assert codec.decode(codec.encode(event)) == event
    bad = json.loads(codec.encode(event))
    bad["emotion"] = "happy"
    with pytest.raises(DecodeError):
        codec.decode(json.dumps(bad).encode())


def test_timing_trail_stamps_are_appended_in_order() -> None:
    trail = _trail().stamped("inference", received=1000.05, emitted=1000.08)
    assert [s.stage for s in trail.stages] == ["ingest", "inference"]
    assert trail.stage("inference") is not None
    assert trail.since_capture(now=1000.1) == pytest.approx(0.1)


def test_committed_schemas_match_the_contracts() -> None:
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "deploy" / "schemas"
    for name, schema in topic_schemas().items():
        committed = json.loads((folder / f"{name}.schema.json").read_text())
        assert committed == json.loads(json.dumps(schema)), f"{name}: run `classpulse schemas` and commit"


def test_committed_document_schemas_match_the_contracts() -> None:
    from pathlib import Path

    from shared.contracts.schemas import document_schemas

    folder = Path(__file__).resolve().parents[2] / "deploy" / "schemas"
    assert set(document_schemas()) == {"classpulse.attendance", "classpulse.webhook"}
    for name, schema in document_schemas().items():
        committed = json.loads((folder / f"{name}.schema.json").read_text())
        assert committed == json.loads(json.dumps(schema)), f"{name}: run `classpulse schemas` and commit"
