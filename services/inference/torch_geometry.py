"""Batched image geometry for the torch perception backend: warps, SSD anchors, box decoding.

Coordinates are *continuous* pixels (pixel ``i`` covers ``[i, i + 1)``, its centre is
``i + 0.5``), which is what ``grid_sample(align_corners=False)`` speaks. A warp is given as
an affine map from output pixels to source pixels, one per item, and gathers every item's
source image from one padded frame tensor, so a whole micro-batch is warped in one call;
samples outside a frame read black (zeros), as ``cv2.warpAffine(borderValue=0)`` does.
Rotated regions follow mediapipe's convention (``ImageToTensorCalculator``): a rect is a
centre, a width and height, and a rotation in radians whose x axis is ``(cos r, sin r)``
in image coordinates (y down).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def warp(images: torch.Tensor, index: torch.Tensor, affine: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Sample ``size`` (h, w) outputs from ``images[index]`` (N, C, H, W) by ``affine`` (K, 2, 3).

    ``affine`` maps an output pixel's continuous coordinates (u, v, 1) to source continuous
    coordinates (x, y); bilinear, zeros outside.
    """
    h, w = size
    dev, dt = images.device, images.dtype
    ys = torch.arange(h, device=dev, dtype=dt) + 0.5
    xs = torch.arange(w, device=dev, dtype=dt) + 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    ones = torch.ones_like(gx)
    base = torch.stack((gx, gy, ones), dim=-1).reshape(1, h * w, 3)  # (1, hw, 3)
    src = base @ affine.to(dt).transpose(1, 2)  # (K, hw, 2)
    scale = torch.tensor([2.0 / images.shape[3], 2.0 / images.shape[2]], device=dev, dtype=dt)
    grid = (src * scale - 1.0).reshape(-1, h, w, 2)
    return F.grid_sample(images[index], grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rect_affine(
    cx: torch.Tensor,
    cy: torch.Tensor,
    side_w: torch.Tensor,
    side_h: torch.Tensor,
    rotation: torch.Tensor,
    size: tuple[int, int],
    *,
    flip: bool = False,
) -> torch.Tensor:
    """Affine (K, 2, 3) from a ``size`` output to a rotated rect (centre, sides, rotation) in the source."""
    h, w = size
    cos, sin = torch.cos(rotation), torch.sin(rotation)
    sx = side_w / w * (-1.0 if flip else 1.0)
    sy = side_h / h
    # src = centre + R @ ((u - w/2) * sx, (v - h/2) * sy)
    a = torch.stack((cos * sx, -sin * sy, cx - cos * sx * w / 2 + sin * sy * h / 2), dim=-1)
    b = torch.stack((sin * sx, cos * sy, cy - sin * sx * w / 2 - cos * sy * h / 2), dim=-1)
    return torch.stack((a, b), dim=1)


def project(
    points: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    side_w: torch.Tensor,
    side_h: torch.Tensor,
    rotation: torch.Tensor,
    *,
    flip: bool = False,
) -> torch.Tensor:
    """Points (K, P, 3) normalised to a rect (0..1) -> source pixels; z scaled by the rect's width."""
    x = points[..., 0] - 0.5
    if flip:
        x = -x
    y = points[..., 1] - 0.5
    cos, sin = torch.cos(rotation)[:, None], torch.sin(rotation)[:, None]
    dx, dy = x * side_w[:, None], y * side_h[:, None]
    out_x = cx[:, None] + dx * cos - dy * sin
    out_y = cy[:, None] + dx * sin + dy * cos
    return torch.stack((out_x, out_y, points[..., 2] * side_w[:, None]), dim=-1)


def ssd_anchors(size: int, strides: tuple[int, ...], *, interpolated: bool) -> torch.Tensor:
    """Anchor centres (A, 2), normalised, for mediapipe's fixed-size SSD anchors (aspect ratio 1)."""
    per_layer = 2 if interpolated else 1
    centres: list[torch.Tensor] = []
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        repeats = 0
        while layer < len(strides) and strides[layer] == stride:
            repeats += per_layer
            layer += 1
        cells = math.ceil(size / stride)
        ys, xs = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
        c = torch.stack(((xs + 0.5) / cells, (ys + 0.5) / cells), dim=-1).reshape(-1, 1, 2)
        centres.append(c.expand(-1, repeats, 2).reshape(-1, 2))
    return torch.cat(centres).float()


@dataclass(frozen=True, slots=True)
class Detections:
    """The best detection per item after weighted NMS of its cluster (normalised to the model input)."""

    score: torch.Tensor
    """(K,) sigmoid score of the best anchor (0 where nothing passed)."""
    box: torch.Tensor
    """(K, 4) x0, y0, x1, y1."""
    keypoints: torch.Tensor
    """(K, P, 2)."""


def best_detection(
    regressors: torch.Tensor,
    logits: torch.Tensor,
    anchors: torch.Tensor,
    size: int,
    *,
    min_score: float,
    iou: float = 0.3,
) -> Detections:
    """Decode mediapipe SSD outputs and keep each item's top cluster (weighted NMS of the top anchor).

    Mediapipe's ``TensorsToDetections`` (sigmoid scores clipped at 100, centre/size boxes over
    fixed anchors) then ``NonMaxSuppression`` (weighted, IoU 0.3): the first output detection is
    the score-weighted mean of the anchors overlapping the highest-scoring one.
    """
    raw = regressors / size
    centre = raw[..., 0:2] + anchors
    half = raw[..., 2:4] / 2
    boxes = torch.cat((centre - half, centre + half), dim=-1)  # (K, A, 4)
    kps = raw[..., 4:].reshape(*raw.shape[:2], -1, 2) + anchors[:, None, :]
    scores = torch.sigmoid(logits[..., 0].clamp(-100.0, 100.0))  # (K, A)
    top = scores.argmax(dim=1)
    k = torch.arange(scores.shape[0], device=scores.device)
    tb = boxes[k, top]  # (K, 4)
    lt = torch.maximum(boxes[..., :2], tb[:, None, :2])
    rb = torch.minimum(boxes[..., 2:], tb[:, None, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    area = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0).prod(dim=-1)
    union = area + area[k, top][:, None] - inter
    overlap = inter / union.clamp(min=1e-9)
    weight = scores * ((overlap > iou) & (scores >= min_score)).to(scores.dtype)
    total = weight.sum(dim=1).clamp(min=1e-9)
    box = (boxes * weight[..., None]).sum(dim=1) / total[:, None]
    kp = (kps * weight[..., None, None]).sum(dim=1) / total[:, None, None]
    best = scores[k, top]
    return Detections(score=torch.where(best >= min_score, best, torch.zeros_like(best)), box=box, keypoints=kp)
