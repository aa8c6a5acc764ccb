"""The engine's results do not depend on how media is cut into batches (replay may use large ones).

Pose scheduling is decided per frame from up-to-date state, and audio processed ahead of a
batch's frames never turns into spurious camera-off steps; audio features computed ahead in
another thread (``prepare_audio``, replay's decode thread) give the same events.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.inference.engine import InferenceEngine
from services.inference.perception import FaceObservation, PerceptionRequest, PerceptionResult
from services.inference.settings import InferenceSettings
from shared.contracts.events import ScoreEvent
from shared.contracts.media import AudioChunk, MediaMessage
from shared.metrics import Metrics
from shared.testkit.messages import chunks, frames
from shared.testkit.speech import speech_scene

pytestmark = pytest.mark.unit


class FaceUntil:
    """A face box in frames before ``gone_at`` s (no mesh); records which frames pose was asked for."""

    name = "face-until"

    def __init__(self, gone_at: float) -> None:
        self.gone_at = gone_at
        self.pose_frames: list[int] = []

    def load(self) -> None:
        return None

    def analyze(self, requests: Sequence[PerceptionRequest]) -> list[PerceptionResult]:
        out = []
        for r in requests:
            t = float(r.image[0, 0, 1]) / 10.0  # media time painted into the image
            if r.want_pose:
                self.pose_frames.append(int(r.image[0, 0, 0]))
            seen = t < self.gone_at
            face = FaceObservation(box=(10.0, 10.0, 40.0, 40.0), score=0.9, landmarks=None) if seen else None
            out.append(PerceptionResult(face=face, pose=None, pose_ran=r.want_pose))
        return out

    def forget(self, key: str) -> None:
        return None

    def close(self) -> None:
        return None


def _media(video: list[tuple[float, float]], audio_s: float) -> list[MediaMessage]:
    """Frames (5 fps) in the given spans, moving every other frame; audio throughout."""
    msgs: list[MediaMessage] = []
    seq = 0
    for start, end in video:
        n = round((end - start) * 5)
        images = []
        for i in range(n):
            img = np.full((48, 64, 3), 60 + 90 * ((seq + i) // 3 % 2), np.uint8)
            img[0, 0, 0], img[0, 0, 1] = seq + i, round((start + i / 5) * 10)
            images.append(img)
        batch = frames(images, session="s", participant="p", start_seq=seq)
        msgs += [f.model_copy(update={"media_time": round(start + i / 5, 3)}) for i, f in enumerate(batch)]
        seq += n
    wave, _ = speech_scene([(0.5, "hello everyone"), (4.0, "and goodbye")], seconds=audio_s, snr_db=None)
    msgs += chunks(wave, session="s", participant="p", chunk_s=0.5)
    return sorted(msgs, key=lambda m: (m.media_time, m.kind != "audio"))


Row = tuple[int, float, bool, bool, bool, bool, float]


def _run(msgs: list[MediaMessage], size: int, *, ahead: bool = False) -> tuple[list[Row], list[int]]:
    backend = FaceUntil(gone_at=8.0)
    e = InferenceEngine(settings=InferenceSettings(pose_every=3, pose_max_interval=9), backend=backend)
    e.load()
    if ahead:
        for m in msgs:
            if isinstance(m, AudioChunk):
                e.prepare_audio(m)
    events: list[ScoreEvent] = []
    for i in range(0, len(msgs), size):
        events += e.process(msgs[i : i + size])
    events += e.flush()
    rows = sorted(
        (ev.seq, ev.media_time, ev.camera_on, ev.present, ev.speaking, ev.hand_raised, round(ev.engagement, 3))
        for ev in events
    )
    return rows, backend.pose_frames


def test_pose_and_events_do_not_depend_on_batch_size() -> None:
    msgs = _media([(0.0, 10.0)], 10.0)
    reference, poses = _run(msgs, 1)
    assert poses and len(reference) == 50
    for size in (3, 16, 64, len(msgs)):
        assert _run(msgs, size) == (reference, poses), size


def test_camera_off_gap_is_found_the_same_way_with_large_batches() -> None:
    msgs = _media([(0.0, 2.0), (5.0, 7.0)], 7.0)
    reference, _ = _run(msgs, 1)
    off = [row for row in reference if not row[2]]
    assert off and all(3.0 <= row[1] <= 5.0 for row in off)  # the gap, after the 1 s camera-off delay
    for size in (4, 16, 64, len(msgs)):
        assert _run(msgs, size)[0] == reference, size


def test_audio_features_computed_ahead_give_the_same_events() -> None:
    msgs = _media([(0.0, 2.0), (5.0, 7.0)], 7.0)
    assert _run(msgs, 16, ahead=True) == _run(msgs, 16)


def test_redelivered_and_late_media_change_nothing_and_are_counted() -> None:
    """A redelivery (a retried batch, a claim of entries already taken in) and an old entry arriving
    after newer ones never enter the state again: the same events as without them, each counted."""
    msgs = _media([(0.0, 2.0), (5.0, 7.0)], 7.0)
    reference, _ = _run(msgs, 8)
    metrics = Metrics(CollectorRegistry())
    e = InferenceEngine(settings=InferenceSettings(pose_every=3, pose_max_interval=9), backend=FaceUntil(8.0),
                        metrics=metrics)
    e.load()
    events: list[ScoreEvent] = []
    repeats = 0
    for i in range(0, len(msgs), 8):
        batch = msgs[i : i + 8]
        events += e.process(batch)
        again = batch[::2] + msgs[max(0, i - 3) : i]  # part of this batch again, and the end of the previous one
        repeats += len(again)
        assert e.process(again) == []
    events += e.flush()
    rows = sorted(
        (ev.seq, ev.media_time, ev.camera_on, ev.present, ev.speaking, ev.hand_raised, round(ev.engagement, 3))
        for ev in events
    )
    assert rows == reference
    assert metrics.registry.get_sample_value("classpulse_media_dropped_total", {"reason": "repeated"}) == repeats


def test_taken_media_marks_follow_the_epoch_and_survive_a_snapshot() -> None:
    e = InferenceEngine(settings=InferenceSettings(), backend=FaceUntil(8.0))
    e.load()
    first = frames([np.zeros((48, 64, 3), np.uint8)] * 3, session="s", participant="p")
    assert len(e.process(first)) == 3
    restored = InferenceEngine(settings=InferenceSettings(), backend=FaceUntil(8.0))
    restored.load()
    restored.restore(e.snapshot("s", "p"))
    assert restored.process(first[1:]) == []  # taken in before the snapshot: repeats there too
    reconnect = [f.model_copy(update={"epoch": 1, "media_time": f.media_time + 10}) for f in first[:2]]
    assert [ev.seq for ev in restored.process(reconnect)] == [0, 2]  # a new publish epoch starts at seq 0 again


def test_media_claimed_after_newer_media_is_scored_not_dropped() -> None:
    """A dead worker's pending frames reach its successor after newer ones: each still gets its step."""
    e = InferenceEngine(settings=InferenceSettings(), backend=FaceUntil(8.0))
    e.load()
    sent = frames([np.zeros((48, 64, 3), np.uint8)] * 8, session="s", participant="p")
    later = [ev.seq for ev in e.process(sent[4:])]
    earlier = [ev.seq for ev in e.process(sent[:4])]
    assert sorted(later + earlier) == [2 * m.seq for m in sent]
    assert e.process(sent[2:6]) == []  # and a repeat of either part is still refused
