"""MediaPipe 0.10.14's face and pose graphs re-stated as batched torch stages.

Each stage takes a batch of regions on the device and runs its model once for all of them:

* :meth:`PerceptionModels.detect_faces` — BlazeFace *full range* (sparse weights, densified)
  on letterboxed 192x192 inputs, decoded and reduced to each image's best face.
* :meth:`PerceptionModels.mesh` — what mediapipe's static ``FaceMesh`` does on a 256x256
  crop: BlazeFace short range on the crop, a rotated ROI from its eye keypoints (x1.5,
  square), face landmarks (468) on a 192x192 warp, then the iris model on both eyes
  (64x64 warps, x2.3 around the eye corners, right eye mirrored): 478 points.
* :meth:`PerceptionModels.pose` — BlazePose detection (224x224 letterbox) -> rotated ROI
  from the hip centre and the body-scale keypoint (x1.25, square) -> full pose landmarks
  (256x256), visibility through a sigmoid.

Differences from mediapipe, by design and covered by the parity tests' tolerance: the mesh
and iris come from ``face_landmark.tflite`` + ``iris_landmark.tflite`` (mediapipe's
``refine_landmarks`` graph uses the attention mesh, whose custom ops are not re-implemented),
each detector keeps only the top-scoring cluster, and pose skips the heatmap refinement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from services.inference.tflite_torch import TFLiteModule
from services.inference.torch_geometry import best_detection, project, rect_affine, ssd_anchors, warp

MESH_CROP = 256
LEFT_EYE = (33, 133)
RIGHT_EYE = (362, 263)


def refine_from_heatmap(
    xy: torch.Tensor, heatmap: torch.Tensor, kernel: int = 7, min_conf: float = 0.5
) -> torch.Tensor:
    """Mediapipe's ``RefineLandmarksFromHeatmap``: each point moves to the confidence-weighted mean of its window.

    ``xy`` (K, P, 2) normalised to the model input; ``heatmap`` (K, h, w, P) logits. A point moves
    only when the window's best confidence (sigmoid) reaches ``min_conf``.
    """
    k, p = xy.shape[:2]
    hh, hw = heatmap.shape[1:3]
    heat = torch.sigmoid(heatmap.permute(0, 3, 1, 2))  # (K, P, h, w)
    cx = (xy[..., 0] * hw).long()
    cy = (xy[..., 1] * hh).long()
    d = torch.arange(kernel, device=xy.device) - (kernel - 1) // 2
    rows = cy[..., None, None] + d[None, None, :, None]  # (K, P, kernel, 1)
    cols = cx[..., None, None] + d[None, None, None, :]  # (K, P, 1, kernel)
    valid = (rows >= 0) & (rows < hh) & (cols >= 0) & (cols < hw)
    ki = torch.arange(k, device=xy.device)[:, None, None, None]
    pi = torch.arange(p, device=xy.device)[None, :, None, None]
    conf = heat[ki, pi, rows.clamp(0, hh - 1), cols.clamp(0, hw - 1)] * valid.to(heat.dtype)
    total = conf.sum(dim=(2, 3))
    mx = conf.amax(dim=(2, 3))
    wx = (conf * cols.to(conf.dtype)).sum(dim=(2, 3)) / total.clamp(min=1e-9) / hw
    wy = (conf * rows.to(conf.dtype)).sum(dim=(2, 3)) / total.clamp(min=1e-9) / hh
    refine = ((mx >= min_conf) & (total > 0))[..., None]
    return torch.where(refine, torch.stack((wx, wy), dim=-1), xy)


def model_dir() -> Path:
    import mediapipe

    return Path(mediapipe.__file__).parent / "modules"


@dataclass(frozen=True, slots=True)
class MeshOut:
    """Per crop: 478 landmarks in crop pixels (x, y, z) and whether a face was meshed."""

    landmarks: torch.Tensor
    ok: torch.Tensor


@dataclass(frozen=True, slots=True)
class PoseOut:
    """Per image: (33, 4) landmarks normalised to the image (x, y, z scaled by width, visibility)."""

    landmarks: torch.Tensor
    ok: torch.Tensor


class PerceptionModels(torch.nn.Module):
    """The six mediapipe models as torch modules, plus the anchors their detectors decode with."""

    a_full: torch.Tensor
    a_short: torch.Tensor
    a_pose: torch.Tensor

    def __init__(self, *, min_detection: float = 0.5, min_mesh: float = 0.5, pose: bool = True) -> None:
        super().__init__()
        root = model_dir()
        self.min_detection = min_detection
        self.min_mesh = min_mesh
        self.full_range = TFLiteModule(root / "face_detection" / "face_detection_full_range_sparse.tflite")
        self.short_range = TFLiteModule(root / "face_detection" / "face_detection_short_range.tflite")
        self.landmarks = TFLiteModule(root / "face_landmark" / "face_landmark.tflite")
        self.iris = TFLiteModule(root / "iris_landmark" / "iris_landmark.tflite")
        self.pose_detector = TFLiteModule(root / "pose_detection" / "pose_detection.tflite") if pose else None
        self.pose_landmarks = TFLiteModule(root / "pose_landmark" / "pose_landmark_full.tflite") if pose else None
        self.register_buffer("a_full", ssd_anchors(192, (4,), interpolated=False), persistent=False)
        self.register_buffer("a_short", ssd_anchors(128, (8, 16, 16, 16), interpolated=True), persistent=False)
        self.register_buffer("a_pose", ssd_anchors(224, (8, 16, 32, 32, 32), interpolated=True), persistent=False)

    @staticmethod
    def _nhwc(x: torch.Tensor, lo: float) -> torch.Tensor:
        """(K, 3, h, w) 0..255 RGB -> NHWC in [lo, 1]."""
        return (x * ((1.0 - lo) / 255.0) + lo).permute(0, 2, 3, 1).contiguous()

    @staticmethod
    def letterbox(
        images: torch.Tensor, index: torch.Tensor, widths: torch.Tensor, heights: torch.Tensor, size: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Letterbox each image (its own w x h in a padded batch) into ``size``; (inputs, scale, pad_x, pad_y)."""
        scale = torch.minimum(size / widths, size / heights)
        pad_x = (size - widths * scale) / 2
        pad_y = (size - heights * scale) / 2
        zero = torch.zeros_like(scale)
        inv = 1.0 / scale
        affine = torch.stack(
            (torch.stack((inv, zero, -pad_x * inv), -1), torch.stack((zero, inv, -pad_y * inv), -1)), dim=1
        )
        return warp(images, index, affine, (size, size)), pad_x / size, pad_y / size

    def detect_faces(
        self, small: torch.Tensor, index: torch.Tensor, widths: torch.Tensor, heights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Best full-range face per image: (K,) score (0 = none) and (K, 4) box normalised to the image."""
        inputs, px, py = self.letterbox(small, index, widths, heights, 192)
        reg, cls = self.full_range(self._nhwc(inputs, -1.0))
        det = best_detection(reg, cls, self.a_full, 192, min_score=self.min_detection)
        sx = (1 - 2 * px)[:, None]
        sy = (1 - 2 * py)[:, None]
        box = torch.stack(
            (
                (det.box[:, 0] - px) / sx[:, 0],
                (det.box[:, 1] - py) / sy[:, 0],
                (det.box[:, 2] - px) / sx[:, 0],
                (det.box[:, 3] - py) / sy[:, 0],
            ),
            dim=-1,
        )
        return det.score, box

    def mesh(self, crops: torch.Tensor) -> MeshOut:
        """Static face mesh with iris on (K, 3, 256, 256) RGB crops (0..255)."""
        k = crops.shape[0]
        idx = torch.arange(k, device=crops.device)
        s = float(MESH_CROP)
        one = torch.ones(k, device=crops.device)
        zero = torch.zeros(k, device=crops.device)
        det_in = warp(crops, idx, rect_affine(one * s / 2, one * s / 2, one * s, one * s, zero, (128, 128)), (128, 128))
        reg, cls = self.short_range(self._nhwc(det_in, -1.0))
        det = best_detection(reg, cls, self.a_short, 128, min_score=self.min_detection)
        box = det.box * s
        kp = det.keypoints * s
        cx, cy = (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2
        side = torch.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]) * 1.5
        rot = -torch.atan2(-(kp[:, 1, 1] - kp[:, 0, 1]), kp[:, 1, 0] - kp[:, 0, 0])
        mesh_in = warp(crops, idx, rect_affine(cx, cy, side, side, rot, (192, 192)), (192, 192))
        raw, flag = self.landmarks(self._nhwc(mesh_in, 0.0))
        pts = project(raw.reshape(k, 468, 3) / 192.0, cx, cy, side, side, rot)
        ok = (det.score > 0) & (torch.sigmoid(flag.reshape(k)) >= self.min_mesh)
        eyes = [self._eye_roi(pts, LEFT_EYE), self._eye_roi(pts, RIGHT_EYE)]
        eye_idx = torch.cat((idx, idx))
        ecx, ecy, eside, erot = (torch.cat((eyes[0][i], eyes[1][i])) for i in range(4))
        flips = torch.cat((torch.ones(k), -torch.ones(k))).to(crops.device)
        affine = rect_affine(ecx, ecy, eside * flips, eside, erot, (64, 64))
        _, iris = self.iris(self._nhwc(warp(crops, eye_idx, affine, (64, 64)), 0.0))
        iris_n = iris.reshape(2 * k, 5, 3) / 64.0
        x = torch.where(flips[:, None] > 0, iris_n[..., 0], 1.0 - iris_n[..., 0])
        iris_n = torch.stack((x, iris_n[..., 1], iris_n[..., 2]), dim=-1)
        iris_pts = project(iris_n, ecx, ecy, eside, eside, erot)
        right = iris_pts[k:][:, [0, 3, 2, 1, 4]]  # mirrored eye: its contour runs the other way
        landmarks = torch.cat((pts, iris_pts[:k], right), dim=1)
        return MeshOut(landmarks=landmarks, ok=ok)

    @staticmethod
    def _eye_roi(pts: torch.Tensor, corners: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        a, b = pts[:, corners[0], :2], pts[:, corners[1], :2]
        lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        centre = (lo + hi) / 2
        side = (hi - lo).max(dim=1).values * 2.3
        rot = -torch.atan2(-(b[:, 1] - a[:, 1]), b[:, 0] - a[:, 0])
        return centre[:, 0], centre[:, 1], side, rot

    def pose(self, small: torch.Tensor, index: torch.Tensor, widths: torch.Tensor, heights: torch.Tensor) -> PoseOut:
        """BlazePose (full) on each image of a padded batch (its own w x h), normalised to that image."""
        if self.pose_detector is None or self.pose_landmarks is None:
            raise RuntimeError("pose models not loaded")
        k = index.shape[0]
        inputs, px, py = self.letterbox(small, index, widths, heights, 224)
        reg, cls = self.pose_detector(self._nhwc(inputs, -1.0))
        det = best_detection(reg, cls, self.a_pose, 224, min_score=0.5)
        # Keypoints back to image pixels (undo the letterbox).
        kx = (det.keypoints[..., 0] - px[:, None]) / (1 - 2 * px)[:, None] * widths[:, None]
        ky = (det.keypoints[..., 1] - py[:, None]) / (1 - 2 * py)[:, None] * heights[:, None]
        cx, cy = kx[:, 0], ky[:, 0]
        side = 2 * torch.hypot(kx[:, 1] - cx, ky[:, 1] - cy) * 1.25
        rot = math.pi / 2 - torch.atan2(-(ky[:, 1] - cy), kx[:, 1] - cx)
        rot = rot - 2 * math.pi * torch.floor((rot + math.pi) / (2 * math.pi))
        crop = warp(small, index, rect_affine(cx, cy, side, side, rot, (256, 256)), (256, 256))
        outs = self.pose_landmarks(self._nhwc(crop, 0.0))
        raw, flag = outs[0].reshape(k, 39, 5)[:, :33], outs[1].reshape(k)
        xy = refine_from_heatmap(raw[..., :2] / 256.0, outs[3][..., :33])
        pts = project(torch.cat((xy, raw[..., 2:3] / 256.0), dim=-1), cx, cy, side, side, rot)
        norm = torch.stack(
            (
                pts[..., 0] / widths[:, None],
                pts[..., 1] / heights[:, None],
                pts[..., 2] / widths[:, None],
                torch.sigmoid(raw[..., 3]),
            ),
            dim=-1,
        )
        ok = (det.score > 0) & (flag >= 0.5)  # the model ends in a sigmoid
        return PoseOut(landmarks=norm, ok=ok)
