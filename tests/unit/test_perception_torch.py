"""The torch backend against mediapipe's own graphs, on CPU (``CLASSPULSE_INFERENCE_BACKEND=torch``).

* The TFLite interpreter: sparse (CSR) weights densify exactly; every model runs batched and
  gives each item what it gives that item alone (to 1e-4 of the output's scale).
* Real photos (scikit-image astronaut, matplotlib Grace Hopper) in 640x480 frames: the same
  face found; mesh landmarks within 2 % of the face width (median; 6 % worst point), iris
  centres within 3 %; visible pose points within 8 % of the shoulder width (median).
* A mixed batch (two frame sizes, a frame with no face, tracked and untracked participants)
  gives every frame what it gets alone: batching changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from services.inference.perception import FaceTrack, PerceptionRequest, PerceptionResult
from services.inference.perception_mediapipe import MediapipeBackend
from services.inference.perception_torch import TorchBackend
from services.inference.tflite_torch import TFLiteModule, densify
from services.inference.torch_models import model_dir
from shared.testkit.frames import grey_frame, paste, place, scale
from shared.testkit.photos import PhotoName, photo

pytestmark = pytest.mark.unit

PHOTOS: tuple[PhotoName, ...] = ("astronaut", "grace_hopper")
MODELS = (
    "face_detection/face_detection_short_range.tflite",
    "face_detection/face_detection_full_range_sparse.tflite",
    "face_landmark/face_landmark.tflite",
    "iris_landmark/iris_landmark.tflite",
    "pose_detection/pose_detection.tflite",
    "pose_landmark/pose_landmark_full.tflite",
)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """As the worker runs torch on CPU: extra threads only spin against each other on a loaded box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference() -> Iterator[MediapipeBackend]:
    b = MediapipeBackend()
    b.load()
    yield b
    b.close()


@pytest.fixture(scope="module")
def torch_backend() -> TorchBackend:
    b = TorchBackend(device="cpu")
    b.load()
    return b


def test_csr_weights_densify_to_the_dense_tensor() -> None:
    rng = np.random.default_rng(3)
    dense = rng.normal(size=(6, 1, 1, 10)).astype(np.float16)
    dense[rng.random(dense.shape) < 0.7] = 0
    rows = dense.reshape(6, 10)
    nz = [np.flatnonzero(r) for r in rows]
    segments = np.concatenate(([0], np.cumsum([len(n) for n in nz]))).astype(np.int64)
    indices = np.concatenate(nz).astype(np.int64)
    values = np.concatenate([r[n] for r, n in zip(rows, nz, strict=True)])
    dims = [(False, 6, None, None), (False, 1, None, None), (False, 1, None, None), (True, 0, segments, indices)]
    np.testing.assert_array_equal(densify(values, dense.shape, [0, 1, 2, 3], dims), dense)
    with pytest.raises(ValueError, match="values for"):
        densify(values[:-1], dense.shape, [0, 1, 2, 3], dims)


@pytest.mark.parametrize("name", MODELS)
def test_models_run_batched_as_they_run_alone(name: str) -> None:
    module = TFLiteModule(model_dir() / name).eval()
    x = torch.rand(2, *module.input_shapes[0][1:], generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        batched = module(x)
        alone = [module(x[i : i + 1]) for i in range(2)]
    for k, out in enumerate(batched):
        scale = float(out.abs().max()) + 1e-6
        for i in range(2):
            assert float((out[i] - alone[i][k][0]).abs().max()) <= 1e-4 * scale, (name, k, i)


def _faces(
    reference: MediapipeBackend, torch_backend: TorchBackend, frame: np.ndarray
) -> tuple[PerceptionResult, PerceptionResult]:
    req = [PerceptionRequest(key="p", image=frame, want_pose=True)]
    return reference.analyze(req)[0], torch_backend.analyze(req)[0]


@pytest.mark.parametrize("name", PHOTOS)
def test_photo_landmarks_match_mediapipe(
    reference: MediapipeBackend, torch_backend: TorchBackend, name: PhotoName
) -> None:
    ref, got = _faces(reference, torch_backend, place(photo(name)))
    assert ref.face is not None and ref.face.landmarks is not None
    assert got.face is not None and got.face.landmarks is not None
    a, b = ref.face.landmarks, got.face.landmarks
    assert b.shape == (478, 3) and b.dtype == np.float32
    width = float(a[:, 0].max() - a[:, 0].min())
    err = np.hypot(*(a[:468, :2] - b[:468, :2]).T) / width
    print(name, "mesh median/max", np.median(err), err.max())
    assert np.median(err) < 0.02 and err.max() < 0.06
    for i in (468, 473):  # iris centres
        assert np.hypot(*(a[i, :2] - b[i, :2])) / width < 0.03
    assert np.corrcoef(a[:468, 2], b[:468, 2])[0, 1] > 0.99  # depth agrees in shape and scale
    assert abs(float(np.std(b[:468, 2]) / np.std(a[:468, 2])) - 1) < 0.1
    assert ref.pose is not None and got.pose is not None
    vis = ref.pose.landmarks[:, 3] > 0.5
    shoulders = abs(float(ref.pose.landmarks[11, 0] - ref.pose.landmarks[12, 0]))
    perr = np.hypot(*(ref.pose.landmarks[vis, :2] - got.pose.landmarks[vis, :2]).T) / shoulders
    print(name, "pose median", np.median(perr))
    assert np.median(perr) < 0.08


def test_a_mixed_batch_gives_each_frame_what_it_gets_alone(torch_backend: TorchBackend) -> None:
    big = place(photo("grace_hopper"))
    small = paste(grey_frame(320, 240), scale(photo("astronaut"), 0.4), (60, 15))
    frames = [big, small, grey_frame()]
    alone = []
    for i, f in enumerate(frames):
        alone.append(torch_backend.analyze([PerceptionRequest(key=str(i), image=f, want_pose=i == 0)])[0])
    tracked = FaceTrack(key="t")
    torch_backend.analyze([PerceptionRequest(key="t", image=big, want_pose=False, track=tracked)])
    assert tracked.box is not None
    reqs = [PerceptionRequest(key=str(i), image=f, want_pose=i == 0) for i, f in enumerate(frames)]
    reqs.append(PerceptionRequest(key="t", image=big, want_pose=False, track=tracked))
    together = torch_backend.analyze(reqs)
    for a, b in zip(alone, together[:3], strict=False):
        assert (a.face is None) == (b.face is None) and (a.pose is None) == (b.pose is None)
        if a.face is not None and b.face is not None and a.face.landmarks is not None:
            assert b.face.landmarks is not None
            np.testing.assert_allclose(a.face.landmarks, b.face.landmarks, atol=0.05)
    assert together[2].face is None and together[3].face is not None and together[3].face.score == 1.0
