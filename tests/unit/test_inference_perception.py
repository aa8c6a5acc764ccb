"""Perception on real photos (scikit-image astronaut, matplotlib grace_hopper) in 640x480 frames."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from services.inference.engine import InferenceEngine
from services.inference.features_video import eye_openness, gaze_offset, head_pose
from services.inference.perception import PerceptionRequest
from services.inference.perception_mediapipe import MediapipeBackend
from services.inference.settings import InferenceSettings
from shared.testkit.frames import grey_frame, place, turn
from shared.testkit.messages import frames
from shared.testkit.photos import photo

pytestmark = pytest.mark.unit

PHOTOS = ("astronaut", "grace_hopper")


@pytest.fixture(scope="module")
def backend() -> Iterator[MediapipeBackend]:
    b = MediapipeBackend()
    b.load()
    yield b
    b.close()


@pytest.fixture(scope="module")
def engine(backend: MediapipeBackend) -> InferenceEngine:
    e = InferenceEngine(settings=InferenceSettings(pose_every=5), backend=backend)
    e.load()
    return e


@pytest.mark.parametrize("name", PHOTOS)
def test_face_found_with_sane_landmarks(backend: MediapipeBackend, name: str) -> None:
    frame = place(photo(name))
    result = backend.analyze([PerceptionRequest(key=f"sane-{name}", image=frame, want_pose=False)])[0]
    assert result.face is not None and result.face.landmarks is not None
    lm = result.face.landmarks
    assert lm.shape == (478, 3)
    x0, y0, x1, y1 = result.face.box
    assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480
    assert 40 < x1 - x0 < 400  # a face, not the whole frame
    # Anatomy: eyes above the nose tip, nose above the mouth and chin; eyes left/right of the nose.
    eye_y = (lm[33, 1] + lm[263, 1]) / 2
    assert eye_y < lm[1, 1] < lm[13, 1] < lm[152, 1]
    assert min(lm[33, 0], lm[263, 0]) < lm[1, 0] < max(lm[33, 0], lm[263, 0])
    # Each iris centre sits between the corners of one eye.
    for a, b in ((33, 133), (362, 263)):
        lo, hi = sorted((lm[a, 0], lm[b, 0]))
        assert any(lo <= lm[i, 0] <= hi for i in (468, 473))
    assert 0.15 < eye_openness(lm) < 0.5  # open eyes in both photos
    gaze = gaze_offset(lm)
    assert gaze is not None and gaze < 0.5  # looking at the camera
    pose = head_pose(lm, 640, 480)
    assert pose is not None and abs(pose.yaw) < 15


def test_frame_without_face_reads_absent(engine: InferenceEngine, backend: MediapipeBackend) -> None:
    result = backend.analyze([PerceptionRequest(key="empty", image=grey_frame(), want_pose=True)])[0]
    assert result.face is None and result.pose is None
    noise = np.random.default_rng(3).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    events = engine.process(frames([grey_frame(), noise], session="t", participant="nobody"))
    assert [e.present for e in events] == [False, False]
    assert not any(e.attentive for e in events)
    assert all(e.features.face_present is False for e in events)


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("degrees", [50.0, 55.0, 60.0])
def test_turned_face_reads_not_attentive_against_frontal_baseline(
    engine: InferenceEngine, backend: MediapipeBackend, name: str, degrees: float
) -> None:
    frontal = place(photo(name))
    found = backend.analyze([PerceptionRequest(key="centre", image=frontal, want_pose=False)])[0]
    assert found.face is not None and found.face.landmarks is not None
    nose = (float(found.face.landmarks[1, 0]), float(found.face.landmarks[1, 1]))
    turned = turn(frontal, degrees, nose)
    participant = f"{name}-{degrees:g}"
    # 2 s of frontal frames at 5 fps calibrate the baseline, then 1.4 s turned away. Head pose is
    # the median of the last 3 frames, so the first 2 turned frames are the transition.
    msgs = frames([frontal] * 10 + [turned] * 7, session="t", participant=participant)
    events = engine.process(msgs[:10]) + engine.process(msgs[10:])
    assert all(e.present and e.attentive for e in events[:10]), [e.features for e in events[:10]]
    turned_events = events[10:]
    assert all(e.present for e in turned_events)
    yaws = [abs(e.features.yaw_deg or 0.0) for e in turned_events[2:]]
    assert min(yaws) > 20, yaws  # outside the +/-20 deg cone around the frontal baseline
    assert not any(e.attentive for e in turned_events[2:]), [e.features for e in turned_events]
    assert turned_events[-1].engagement < events[9].engagement
    assert turned_events[-1].contributions.get("head_yaw", 0.0) < events[9].contributions["head_yaw"]
    ids = {e.event_id for e in events}
    assert len(ids) == len(events) and all(e.timing.stage("inference") is not None for e in events)


@pytest.mark.parametrize(("name", "size"), [("astronaut", 200), ("grace_hopper", 150)])
def test_small_faces_far_from_the_camera_are_found(backend: MediapipeBackend, name: str, size: int) -> None:
    """Full-range detection + meshing the crop: faces ~35-50 px wide in a 640x480 frame."""
    result = backend.analyze([PerceptionRequest(key=f"small-{name}", image=place(photo(name), size), want_pose=False)])[
        0
    ]
    assert result.face is not None and result.face.landmarks is not None
    width = result.face.box[2] - result.face.box[0]
    assert 25 < width < 60
    pose = head_pose(result.face.landmarks, 640, 480)
    assert pose is not None and abs(pose.yaw) < 15


def test_tracking_mesh_mode_finds_faces_and_follows_a_turn_within_a_second() -> None:
    tracked = MediapipeBackend(mesh_trackers=4)
    tracked.load()
    try:
        e = InferenceEngine(settings=InferenceSettings(), backend=tracked)
        e.load()
        frontal = place(photo("astronaut"))
        turned = turn(frontal, 55.0, (320.0, 190.0))
        events = e.process(frames([frontal] * 10 + [turned] * 10, session="t", participant="tracked"))
        assert all(ev.present and ev.attentive for ev in events[:10])
        assert all(ev.present for ev in events[10:])
        assert not any(ev.attentive for ev in events[15:]), [ev.features.yaw_deg for ev in events[10:]]
    finally:
        tracked.close()
