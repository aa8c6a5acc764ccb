"""A participant's state moves between engines: snapshot, restore into a fresh engine, carry on.

The restored engine must score the next messages exactly as the original does: same ids,
flags, engagement, confidence, contributions and features. The media exercises every part
of the state: a face tracked across frames (the crop hint), calibration, audio features
computed ahead (with the VAD stream already past them), and audio held for the camera grace.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from numpy.typing import NDArray

from services.inference.engine import InferenceEngine
from services.inference.settings import InferenceSettings
from services.inference.state import ParticipantState
from services.inference.state_snapshot import SnapshotError, pack, unpack
from shared.contracts.events import ScoreEvent
from shared.contracts.media import AudioChunk, MediaMessage
from shared.testkit.frames import place, turn
from shared.testkit.messages import chunks, frames
from shared.testkit.photos import photo
from shared.testkit.speech import speech_scene

pytestmark = pytest.mark.unit

SETTINGS = InferenceSettings(perception_threads=1, mesh_trackers=0, pose_every=5)


def _engine() -> InferenceEngine:
    engine = InferenceEngine(settings=SETTINGS)  # mediapipe, built from the settings' backend name
    engine.load()
    return engine


def _face_frames(n: int, *, turned_from: int) -> list[NDArray[np.uint8]]:
    """A face drifting a few pixels per frame (so tracking matters), turned away from ``turned_from`` on."""
    frontal = place(photo("astronaut"))
    away = turn(frontal, 55.0, (320.0, 190.0))
    return [np.roll(away if i >= turned_from else frontal, 3 * (i % 5), axis=1) for i in range(n)]


def _media() -> list[MediaMessage]:
    """6 s: a camera participant (face, then turned away, with speech) and an audio-only one."""
    msgs: list[MediaMessage] = [*frames(_face_frames(30, turned_from=20), session="s", participant="cam")]
    wave, _ = speech_scene([(0.5, "hello everyone"), (3.5, "one more thing")], seconds=6.0, snr_db=None)
    msgs += chunks(wave, session="s", participant="cam", chunk_s=0.25)
    voice, _ = speech_scene([(1.0, "can you hear me")], seconds=6.0, snr_db=20.0, seed=1)
    msgs += chunks(voice, session="s", participant="voice", chunk_s=0.5)
    return sorted(msgs, key=lambda m: (m.media_time, m.kind != "audio", m.participant))


def _run(engine: InferenceEngine, msgs: list[MediaMessage], size: int = 8) -> list[ScoreEvent]:
    out: list[ScoreEvent] = []
    for i in range(0, len(msgs), size):
        out += engine.process(msgs[i : i + size])
    return out


def _comparable(events: list[ScoreEvent]) -> list[dict[str, object]]:
    return [ev.model_dump(exclude={"timing"}) for ev in events]


def test_restored_participants_continue_exactly_as_the_originals() -> None:
    msgs = _media()
    cut = 3.26  # after the chunk at 3.25 s, before the frame at 3.4 s: that chunk is held
    before = [m for m in msgs if m.media_time < cut]
    after = [m for m in msgs if m.media_time >= cut]
    original = _engine()
    for m in msgs:  # replay-style: the camera participant's audio features computed ahead
        if isinstance(m, AudioChunk) and m.participant == "cam":
            original.prepare_audio(m)
    assert _run(original, before)
    snapshots = {key: original.snapshot(*key) for key in original.participants()}
    assert set(snapshots) == {("s", "cam"), ("s", "voice")}
    assert all(len(data) < 128 * 1024 for data in snapshots.values())  # compact: small arrays and audio
    cam, voice = ParticipantState.restore(snapshots[("s", "cam")]), ParticipantState.restore(snapshots[("s", "voice")])
    assert cam.track.box is not None and cam.ahead and cam.calibrated  # tracking hint, ahead features, baseline
    assert cam.held  # audio still waiting for the camera grace travels with the state
    assert voice.audio and voice.window.maxlen == SETTINGS.window_steps

    restored = _engine()
    for data in snapshots.values():
        restored.restore(data)
    assert sorted(restored.participants()) == sorted(snapshots)
    expected = _run(original, after) + original.flush()
    got = _run(restored, after) + restored.flush()
    assert len(expected) == 13 + 5 and any(not ev.camera_on for ev in expected)  # cam frames, voice chunks
    assert any(ev.features.yaw_deg is not None for ev in expected)
    assert _comparable(got) == _comparable(expected)
    original.close()
    restored.close()


def test_a_restored_state_keeps_its_calibration() -> None:
    images = _face_frames(24, turned_from=16)
    msgs = frames(images, session="s", participant="calibrated")
    original = _engine()
    original.process(msgs[:16])  # 3.2 s of frontal frames: the 3 s baseline is complete
    data = original.snapshot("s", "calibrated")
    state = ParticipantState.restore(data)
    assert state.calibrated
    restored = _engine()
    restored.restore(data)
    turned = restored.process(msgs[16:])
    assert _comparable(turned) == _comparable(original.process(msgs[16:]))
    assert all(ev.present for ev in turned) and not any(ev.attentive for ev in turned[2:])  # against the old baseline
    again = ParticipantState.restore(restored.snapshot("s", "calibrated"))
    assert again.baseline == state.baseline and again.calib_yaw == state.calib_yaw  # no new baseline gathered
    fresh = _engine()
    fresh.process(msgs[16:])
    assert not ParticipantState.restore(fresh.snapshot("s", "calibrated")).calibrated  # what a new state would do
    for engine in (original, restored, fresh):
        engine.close()


def _small_snapshot() -> bytes:
    state = ParticipantState(
        session="s", participant="p", role="student", window_steps=8, calibration_s=3.0, baseline_limit_deg=20.0
    )
    return state.snapshot()


def test_corrupt_or_other_version_snapshots_are_refused_clearly() -> None:
    data = _small_snapshot()
    assert ParticipantState.restore(data).participant == "p"
    with pytest.raises(SnapshotError, match="version 2 is not supported; this build reads version 1"):
        ParticipantState.restore(data[:4] + struct.pack("<H", 2) + data[6:])
    with pytest.raises(SnapshotError, match="not a ClassPulse state snapshot"):
        ParticipantState.restore(b"\x80\x04pickle" + data)
    with pytest.raises(SnapshotError):
        ParticipantState.restore(data[:-3])  # truncated
    with pytest.raises(SnapshotError, match="malformed"):
        ParticipantState.restore(data.replace(b'"fields"', b'"fie1ds"'))
    kind = "inference.participant"
    fields, arrays = unpack(data, kind=kind, version=1)
    with pytest.raises(SnapshotError, match="fields do not match"):
        ParticipantState.restore(pack(kind=kind, version=1, fields={**fields, "frames": "x"}, arrays=arrays))
    with pytest.raises(SnapshotError, match=r"arrays \[\] do not match its fields"):
        ParticipantState.restore(pack(kind=kind, version=1, fields=fields, arrays={}))
    with pytest.raises(SnapshotError, match=r"holds 'other\.kind'"):
        ParticipantState.restore(pack(kind="other.kind", version=1, fields=fields, arrays=arrays))
    with pytest.raises(SnapshotError, match="shorter than its header"):
        ParticipantState.restore(b"CP")


def test_an_engine_refuses_a_snapshot_taken_with_another_fusion_window() -> None:
    engine = InferenceEngine(settings=InferenceSettings(window_steps=4))
    with pytest.raises(SnapshotError, match="8-step fusion window; this engine uses 4"):
        engine.restore(_small_snapshot())
