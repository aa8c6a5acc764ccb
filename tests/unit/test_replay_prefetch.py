"""Face analysis ahead of the engine (replay): same results in the same order, pose only when asked,
face and pose on different threads, errors surfaced to the engine's thread."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from numpy.typing import NDArray

from services.inference.perception import Face, FaceObservation, PerceptionRequest, PoseObservation
from services.inference.perception_prefetch import PrefetchPerception
from shared.contracts.media import VideoFrame
from shared.testkit.messages import frames

pytestmark = pytest.mark.unit


class Chain:
    """A face whose box depends on the key's previous frame (like tracking); records threads."""

    name = "chain"

    def __init__(self, fail_on: int | None = None) -> None:
        self.previous: dict[str, float] = {}
        self.face_threads: set[int] = set()
        self.pose_threads: set[int] = set()
        self.poses: list[int] = []
        self.fail_on = fail_on
        self.closed = False

    def load(self) -> None:
        return None

    def face(self, key: str, image: NDArray[np.uint8]) -> Face:
        self.face_threads.add(threading.get_ident())
        value = float(image[0, 0, 0])
        if value == self.fail_on:
            raise ValueError("bad frame")
        x = self.previous.get(key, 0.0) + value
        self.previous[key] = x
        return FaceObservation(box=(x, 0.0, x + 1, 1.0), score=1.0, landmarks=None), None

    def pose(self, image: NDArray[np.uint8], small: NDArray[np.uint8] | None = None) -> PoseObservation | None:
        self.pose_threads.add(threading.get_ident())
        self.poses.append(int(image[0, 0, 0]))
        return PoseObservation(landmarks=np.zeros((33, 4), np.float32))

    def forget(self, key: str) -> None:
        self.previous.pop(key, None)

    def close(self) -> None:
        self.closed = True


def _frames(participant: str, n: int) -> list[VideoFrame]:
    images = [np.full((8, 8, 3), i + 1, np.uint8) for i in range(n)]
    return frames(images, session="s", participant=participant)


def test_results_match_the_backend_alone_in_order_with_pose_on_the_engine_thread() -> None:
    a, b = _frames("a", 12), _frames("b", 12)
    alone = Chain()
    expected = [alone.face(f"s/{f.participant}", f.image())[0] for pair in zip(a, b, strict=True) for f in pair]
    inner = Chain()
    prefetch = PrefetchPerception(inner=inner)
    for pair in zip(a, b, strict=True):
        for f in pair:
            prefetch.submit(f)  # before load, like the decode thread
    prefetch.load()
    got = []
    for pair in zip(a, b, strict=True):
        reqs = [PerceptionRequest(key=f"s/{f.participant}", image=f.image(), want_pose=f.seq % 4 == 0) for f in pair]
        results = prefetch.analyze(reqs)
        assert [r.pose_ran for r in results] == [r.want_pose for r in reqs]
        assert all((r.pose is not None) == r.pose_ran for r in results)
        got += [r.face for r in results]
    assert got == expected
    assert inner.poses == [1, 1, 5, 5, 9, 9]
    assert threading.get_ident() in inner.pose_threads
    assert threading.get_ident() not in inner.face_threads
    extra = _frames("a", 1)[0]  # a frame nobody submitted is still analysed, after the others
    (late,) = prefetch.analyze([PerceptionRequest(key="s/a", image=extra.image(), want_pose=False)])
    assert late.face is not None and late.face.box[0] == sum(range(1, 13)) + 1
    prefetch.close()
    assert inner.closed


def test_face_errors_surface_in_analyze() -> None:
    prefetch = PrefetchPerception(inner=Chain(fail_on=3))
    fs = _frames("a", 4)
    for f in fs:
        prefetch.submit(f)
    prefetch.load()
    reqs = [PerceptionRequest(key="s/a", image=f.image(), want_pose=False) for f in fs]
    assert prefetch.analyze(reqs[:2])[1].face is not None
    with pytest.raises(ValueError, match="bad frame"):
        prefetch.analyze(reqs[2:])
    prefetch.close()
