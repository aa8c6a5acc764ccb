"""GPU-batched perception on MediaPipe's own weights (``CLASSPULSE_INFERENCE_BACKEND=torch``).

Produces what :class:`~services.inference.perception_mediapipe.MediapipeBackend` produces
(same crop geometry, same tracking rule, same thresholds), but each stage runs once per
micro-batch over every student's frame, on the device (CUDA when there is one):

1. the batch's frames are uploaded once into one zero-padded tensor (black outside a frame,
   as mediapipe's crops are);
2. frames whose participant was meshed on its previous frame are cropped (256x256 warps of
   the tracking box x1.7, one ``grid_sample``) and meshed together
   (:meth:`~services.inference.torch_models.PerceptionModels.mesh`: short-range detector,
   rotated ROI, face landmarks, iris);
3. the rest (no track, or the tracked mesh failed) are downscaled to ``detect_width``
   (area filter, one call per frame size) and run through the full-range detector together;
   those with a face are cropped and meshed together;
4. frames that asked for pose run BlazePose together on the downscaled frames.

Python loops only over the batch to build crop boxes and read results back (one transfer
per stage). On CPU it works and is tested against mediapipe, but is several times slower
than mediapipe's XNNPACK graphs; it is meant for CUDA.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from services.inference.perception import (
    Box,
    FaceObservation,
    FaceTrack,
    PerceptionRequest,
    PerceptionResult,
    PoseObservation,
)
from services.inference.perception_mediapipe import CROP_SCALE, MESH_CROP, TRACK_SCALE, _mesh_box, _track_box
from services.inference.torch_geometry import warp
from services.inference.torch_models import PerceptionModels


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; anything else as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class TorchBackend:
    """Face detection + mesh with iris + pose, batched across frames on one torch device."""

    name = "torch"

    def __init__(
        self,
        *,
        detect_width: int = 320,
        min_detection: float = 0.5,
        min_mesh: float = 0.5,
        device: str = "auto",
    ) -> None:
        self.detect_width = detect_width
        self.min_detection = min_detection
        self.min_mesh = min_mesh
        self.device = resolve_device(device)
        self._models: PerceptionModels | None = None

    def load(self) -> None:
        models = PerceptionModels(min_detection=self.min_detection, min_mesh=self.min_mesh)
        self._models = models.to(self.device).eval()

    def close(self) -> None:
        self._models = None

    def forget(self, key: str) -> None:
        """Nothing is cached per participant (the tracking box lives in the request's track)."""

    @property
    def models(self) -> PerceptionModels:
        if self._models is None:
            raise RuntimeError("TorchBackend used before load()")
        return self._models

    # -- the batch ----------------------------------------------------------------------

    def analyze(self, requests: Sequence[PerceptionRequest]) -> list[PerceptionResult]:
        models = self.models
        if not requests:
            return []
        with torch.inference_mode():
            return self._analyze(models, requests)

    def _analyze(self, models: PerceptionModels, requests: Sequence[PerceptionRequest]) -> list[PerceptionResult]:
        n = len(requests)
        tracks = [r.track if r.track is not None else FaceTrack(key=r.key) for r in requests]
        frames = self._upload([r.image for r in requests])
        sizes = [(r.image.shape[1], r.image.shape[0]) for r in requests]
        faces: list[FaceObservation | None] = [None] * n

        tracked = [i for i in range(n) if tracks[i].box is not None]
        if tracked:
            boxes: list[Box] = [tracks[i].box for i in tracked]  # type: ignore[misc]
            for i, face in zip(tracked, self._mesh(models, frames, tracked, boxes, TRACK_SCALE), strict=True):
                if face is not None:
                    faces[i] = FaceObservation(box=face.box, score=1.0, landmarks=face.landmarks)

        detect = [i for i in range(n) if faces[i] is None]
        posed = [i for i in range(n) if requests[i].want_pose]
        small, small_sizes = self._downscale(frames, sizes, sorted(set(detect) | set(posed)))
        if detect:
            found: list[int] = []
            found_boxes: list[Box] = []
            scores: dict[int, float] = {}
            for i, (score, box) in zip(detect, self._detect(models, small, small_sizes, detect), strict=True):
                if score > 0:
                    w, h = sizes[i]
                    b = (box[0] * w, box[1] * h, box[2] * w, box[3] * h)
                    found.append(i)
                    found_boxes.append(b)
                    scores[i] = score
                    faces[i] = FaceObservation(box=b, score=score, landmarks=None)
            if found:
                for i, face in zip(found, self._mesh(models, frames, found, found_boxes, CROP_SCALE), strict=True):
                    if face is not None:
                        faces[i] = FaceObservation(box=face.box, score=scores[i], landmarks=face.landmarks)

        poses: dict[int, PoseObservation | None] = {}
        if posed:
            poses = dict(zip(posed, self._pose(models, small, small_sizes, sizes, posed), strict=True))

        results: list[PerceptionResult] = []
        for i, req in enumerate(requests):
            face = faces[i]
            tracks[i].box = _track_box(face.landmarks) if face is not None and face.landmarks is not None else None
            results.append(PerceptionResult(face=face, pose=poses.get(i), pose_ran=req.want_pose))
        return results

    # -- stages -------------------------------------------------------------------------

    def _upload(self, images: list[np.ndarray]) -> torch.Tensor:
        """BGR uint8 frames -> one (N, 3, Hmax, Wmax) float RGB tensor on the device, zero-padded."""
        hmax = max(im.shape[0] for im in images)
        wmax = max(im.shape[1] for im in images)
        if all(im.shape[:2] == (hmax, wmax) for im in images):
            host = np.stack(images)
        else:
            host = np.zeros((len(images), hmax, wmax, 3), dtype=np.uint8)
            for k, im in enumerate(images):
                host[k, : im.shape[0], : im.shape[1]] = im
        t = torch.from_numpy(host).to(self.device, non_blocking=True)
        return t.flip(-1).permute(0, 3, 1, 2).float()

    def _downscale(
        self, frames: torch.Tensor, sizes: list[tuple[int, int]], wanted: list[int]
    ) -> tuple[torch.Tensor, dict[int, tuple[int, int]]]:
        """``detect_width``-wide frames (area filter, one call per distinct size) in one padded tensor."""
        out_sizes: dict[int, tuple[int, int]] = {}
        for i in wanted:
            w, h = sizes[i]
            out_sizes[i] = (
                (w, h) if w <= self.detect_width else (self.detect_width, max(1, round(h * self.detect_width / w)))
            )
        if not wanted:
            return frames[:0], out_sizes
        hmax = max(s[1] for s in out_sizes.values())
        wmax = max(s[0] for s in out_sizes.values())
        small = torch.zeros((frames.shape[0], 3, hmax, wmax), device=frames.device, dtype=frames.dtype)
        groups: dict[tuple[tuple[int, int], tuple[int, int]], list[int]] = {}
        for i in wanted:
            groups.setdefault((sizes[i], out_sizes[i]), []).append(i)
        for ((w, h), (sw, sh)), members in groups.items():
            idx = torch.tensor(members, device=frames.device)
            src = frames[idx, :, :h, :w]
            small[idx, :, :sh, :sw] = src if (sw, sh) == (w, h) else F.interpolate(src, size=(sh, sw), mode="area")
        return small, out_sizes

    def _dims(
        self, sizes: dict[int, tuple[int, int]], idx: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dev = self.device
        return (
            torch.tensor(idx, device=dev),
            torch.tensor([float(sizes[i][0]) for i in idx], device=dev),
            torch.tensor([float(sizes[i][1]) for i in idx], device=dev),
        )

    def _detect(
        self, models: PerceptionModels, small: torch.Tensor, sizes: dict[int, tuple[int, int]], idx: list[int]
    ) -> list[tuple[float, list[float]]]:
        index, w, h = self._dims(sizes, idx)
        score, box = models.detect_faces(small, index, w, h)
        return list(zip(score.cpu().tolist(), box.cpu().tolist(), strict=True))

    def _mesh(
        self, models: PerceptionModels, frames: torch.Tensor, idx: list[int], boxes: list[Box], scale: float
    ) -> list[FaceObservation | None]:
        """Crop each box like ``_square_crop`` (x ``scale``, square, >= 16 px) and mesh all crops at once."""
        b = np.asarray(boxes, dtype=np.float64)
        side = np.maximum(np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) * scale, 16.0)
        ox = (b[:, 0] + b[:, 2]) / 2 - side / 2
        oy = (b[:, 1] + b[:, 3]) / 2 - side / 2
        inv_k = side / MESH_CROP
        # cv2.warpAffine's integer pixel centres, in grid_sample's continuous coordinates.
        affine = np.zeros((len(idx), 2, 3), dtype=np.float32)
        affine[:, 0, 0] = inv_k
        affine[:, 1, 1] = inv_k
        affine[:, 0, 2] = ox + 0.5 - 0.5 * inv_k
        affine[:, 1, 2] = oy + 0.5 - 0.5 * inv_k
        crops = warp(
            frames,
            torch.tensor(idx, device=self.device),
            torch.from_numpy(affine).to(self.device),
            (MESH_CROP, MESH_CROP),
        )
        out = models.mesh(crops)
        pts_all = out.landmarks.cpu().numpy() / MESH_CROP
        ok = out.ok.cpu().numpy()
        faces: list[FaceObservation | None] = []
        for k in range(len(idx)):
            if not ok[k]:
                faces.append(None)
                continue
            pts = (pts_all[k] * side[k]).astype(np.float32)
            pts[:, 0] += np.float32(ox[k])
            pts[:, 1] += np.float32(oy[k])
            faces.append(FaceObservation(box=_mesh_box(pts), score=1.0, landmarks=pts))
        return faces

    def _pose(
        self,
        models: PerceptionModels,
        small: torch.Tensor,
        small_sizes: dict[int, tuple[int, int]],
        sizes: list[tuple[int, int]],
        idx: list[int],
    ) -> list[PoseObservation | None]:
        index, w, h = self._dims(small_sizes, idx)
        out = models.pose(small, index, w, h)
        lms = out.landmarks.cpu().numpy()
        ok = out.ok.cpu().numpy()
        poses: list[PoseObservation | None] = []
        for k, i in enumerate(idx):
            if not ok[k]:
                poses.append(None)
                continue
            fw, fh = sizes[i]
            arr = (lms[k] * np.array([fw, fh, fw, 1.0], dtype=np.float32)).astype(np.float32)
            poses.append(PoseObservation(landmarks=arr))
        return poses
