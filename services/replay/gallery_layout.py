"""Where the tiles of a gallery-view recording are: faces found across the recording -> one tile each.

:func:`scan_layout` samples frames spread over the whole recording (keyframes only, which
costs little to decode; every frame of a short clip that has few keyframes), runs BlazeFace
**full range** on each sampled frame at several scales (the whole frame and a 3x3 grid of
overlapping half-size windows, so faces down to about a twelfth of the frame width are found),
and hands the boxes to :func:`layout_from_faces`:

1. **Positions.** Face centres closer than 0.6 face sizes are one position (greedy, by score);
   a position seen in fewer than ``min_share`` of the sampled frames (at least 2) is noise.
   A participant who is away or turned for a while is still found in the other samples.
   **Each position is confirmed by a second model**: the face mesh (with its own short-range
   detector) must find a face on a crop around it in one of its best-scoring samples. BlazeFace
   full range at a low threshold also fires on face-like texture (a badge on a turned-away
   participant's shirt, straddling two tiles, in 2 of 16 samples, at 0.63): without the check
   such a blob became a tile of its own and cut its neighbours' tiles in two.
2. **Rows and tiles.** Positions are grouped into rows by their centres' height, each row
   sorted left to right; ids ``p1..pN`` go row by row (top to bottom, left to right), so they
   are stable, anonymous and say where the tile is. A tile's edge between two neighbours lies
   midway between their faces, moved to the strongest straight edge of the recording's mean
   frame within a third of the spacing (the border between tiles); the outer edges are those of
   the frame's content (uniform letterbox bars left out).

The layout is fixed for the recording: a gallery whose tiles move (participants joining and
reordering) is analysed with the positions found, and a face that changes tile is read by the
tile it is in.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from services.inference.perception import Box

BBox = tuple[int, int, int, int]
"""x, y, w, h in pixels of the recording's frame."""
SAMPLES = 16
"""Frames sampled over the recording to find the faces."""
MIN_SHARE = 0.1
"""A position must hold a face in at least this share of the sampled frames (and in 2)."""
FULL_DECODE_S = 600.0
"""Recordings up to this long are decoded frame by frame when keyframes are too few to sample."""
SAME_FACE = 0.6
"""Two face centres closer than this many face sizes are one position."""
CONFIRM_TRIES = 3
"""A position's best-scoring samples offered to the confirming face mesh."""
CONFIRM_CROP = 3.0
"""The confirming crop's side, in face sizes, centred on the face."""

Confirm = Callable[[int, Box], bool]
"""(sample index, face box x0, y0, x1, y1) -> whether a second model finds a face there."""


class LayoutError(Exception):
    """No face anywhere in the recording; the message is one user-facing line."""


@dataclass(frozen=True)
class Tile:
    participant: str
    bbox: BBox
    face: BBox
    """The face's typical box (mean over the samples it was found in)."""
    seen: float
    """Share of the sampled frames with a face here."""


@dataclass(frozen=True)
class GalleryLayout:
    width: int
    height: int
    tiles: list[Tile]
    samples: int


@dataclass
class _Position:
    cx: float
    cy: float
    w: float
    h: float
    hits: list[tuple[float, int, Box]] = field(default_factory=list)
    """(score, sample, box) of every detection taken in; the box above is their running mean."""

    @property
    def frames(self) -> set[int]:
        return {frame for _score, frame, _box in self.hits}

    def best(self, k: int) -> list[tuple[int, Box]]:
        """The ``k`` best-scoring detections' (sample, box), one per sample."""
        out: list[tuple[int, Box]] = []
        for _score, frame, box in sorted(self.hits, key=lambda h: -h[0]):
            if all(frame != f for f, _ in out):
                out.append((frame, box))
            if len(out) >= k:
                break
        return out

    def add(self, box: Box, score: float, frame: int) -> None:
        x0, y0, x1, y1 = box
        self.hits.append((score, frame, box))
        k = 1.0 / len(self.hits)
        self.cx += ((x0 + x1) / 2 - self.cx) * k
        self.cy += ((y0 + y1) / 2 - self.cy) * k
        self.w += ((x1 - x0) - self.w) * k
        self.h += ((y1 - y0) - self.h) * k


def positions(faces: Sequence[Sequence[tuple[Box, float]]], *, min_share: float = MIN_SHARE) -> list[_Position]:
    """Face positions found in enough of the frames (``faces[i]`` = (box, score) of frame i)."""
    found: list[_Position] = []
    for i, boxes in enumerate(faces):
        for box, score in sorted(boxes, key=lambda b: -b[1]):
            x0, y0, x1, y1 = box
            cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
            near = [p for p in found if abs(p.cx - cx) < SAME_FACE * max(w, p.w)
                    and abs(p.cy - cy) < SAME_FACE * max(h, p.h)]
            if near:
                min(near, key=lambda p: (p.cx - cx) ** 2 + (p.cy - cy) ** 2).add(box, score, i)
            else:
                found.append(_Position(cx=cx, cy=cy, w=w, h=h, hits=[(score, i, box)]))
    need = max(2, int(np.ceil(min_share * len(faces)))) if len(faces) > 1 else 1
    return [p for p in found if len(p.frames) >= need]


def _rows(found: list[_Position]) -> list[list[_Position]]:
    rows: list[list[_Position]] = []
    for p in sorted(found, key=lambda p: p.cy):
        if rows and p.cy - statistics.fmean(q.cy for q in rows[-1]) < 0.6 * max(p.h, rows[-1][0].h):
            rows[-1].append(p)
        else:
            rows.append([p])
    return [sorted(r, key=lambda p: p.cx) for r in rows]


def content_box(mean: NDArray[np.float32] | None, width: int, height: int) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 of the frame without uniform bars at its borders (the whole frame when unknown)."""
    if mean is None:
        return 0, 0, width, height
    cols = mean.std(axis=0) > 3.0
    rows = mean.std(axis=1) > 3.0
    xs, ys = np.flatnonzero(cols), np.flatnonzero(rows)
    if not xs.size or not ys.size:
        return 0, 0, width, height
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def _snap(profile: NDArray[np.float32] | None, guess: float, radius: float) -> int:
    """The strongest edge of ``profile`` within ``radius`` of ``guess`` (``guess`` when none stands out)."""
    g = round(guess)
    if profile is None or radius < 2:
        return g
    lo, hi = max(1, int(guess - radius)), min(len(profile) - 1, int(guess + radius))
    if hi <= lo:
        return g
    window = profile[lo:hi]
    best = int(np.argmax(window))
    if window[best] < 3.0 * float(np.median(profile)) + 1e-6:
        return g
    return lo + best


def _splits(centres: list[float], lo: int, hi: int, profile: NDArray[np.float32] | None) -> list[int]:
    """Edges of tiles along one axis: outer edges ``lo``/``hi``, inner ones between neighbours, snapped."""
    edges = [lo]
    for a, b in itertools.pairwise(centres):
        edges.append(_snap(profile, (a + b) / 2, (b - a) / 3))
    edges.append(hi)
    return edges


def layout_from_faces(
    faces: Sequence[Sequence[tuple[Box, float]]],
    *,
    width: int,
    height: int,
    mean: NDArray[np.float32] | None = None,
    min_share: float = MIN_SHARE,
    confirm: Confirm | None = None,
) -> GalleryLayout:
    """The tiles of a gallery from the faces of its sampled frames (``mean``: their mean grey frame).

    ``confirm`` (when given) must accept one of a position's :data:`CONFIRM_TRIES` best
    detections, or the position is left out.
    """
    found = positions(faces, min_share=min_share)
    if confirm is not None:
        found = [p for p in found if any(confirm(i, box) for i, box in p.best(CONFIRM_TRIES))]
    if not found:
        raise LayoutError("no face found in the sampled frames")
    x0, y0, x1, y1 = content_box(mean, width, height)
    dy = dx = None
    if mean is not None:
        dy = np.abs(np.diff(mean, axis=0)).mean(axis=1).astype(np.float32)
    rows = _rows(found)
    row_edges = _splits([statistics.fmean(p.cy for p in r) for r in rows], y0, y1, dy)
    widest = max(len(r) for r in rows)
    spacings = [b.cx - a.cx for r in rows for a, b in itertools.pairwise(r)]
    tiles: list[Tile] = []
    for r, row in enumerate(rows):
        top, bottom = row_edges[r], row_edges[r + 1]
        if mean is not None:
            dx = np.abs(np.diff(mean[top:bottom], axis=1)).mean(axis=0).astype(np.float32)
        lo, hi = x0, x1
        if len(row) < widest and spacings:  # a shorter (centred) row: outer tiles as wide as the others
            half = statistics.median(spacings) / 2
            lo, hi = max(x0, int(row[0].cx - half)), min(x1, int(row[-1].cx + half))
        col_edges = _splits([p.cx for p in row], lo, hi, dx)
        for c, p in enumerate(row):
            left, right = col_edges[c], col_edges[c + 1]
            tiles.append(Tile(
                participant=f"p{len(tiles) + 1}",
                bbox=(left, top, right - left, bottom - top),
                face=(int(p.cx - p.w / 2), int(p.cy - p.h / 2), int(p.w), int(p.h)),
                seen=round(len(p.frames) / max(1, len(faces)), 3),
            ))
    return GalleryLayout(width=width, height=height, tiles=tiles, samples=len(faces))


# -- scanning a recording ------------------------------------------------------------------


def _windows(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """The whole frame and a 3x3 grid of overlapping half-size windows (x, y, w, h)."""
    out = [(0, 0, width, height)]
    w, h = width // 2, height // 2
    for i in range(3):
        for j in range(3):
            out.append((j * (width - w) // 2, i * (height - h) // 2, w, h))
    return out


def detect_faces(detector: Any, image: NDArray[np.uint8]) -> list[tuple[Box, float]]:
    """Full-range face boxes (frame pixels) of one BGR frame over :func:`_windows`; overlaps merged later."""
    import cv2

    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    h, w = image.shape[:2]
    out: list[tuple[Box, float]] = []
    for x, y, ww, hh in _windows(w, h):
        result = detector.process(np.ascontiguousarray(rgb[y : y + hh, x : x + ww]))
        for det in result.detections or ():
            rb = det.location_data.relative_bounding_box
            score = float(det.score[0]) if det.score else 0.0
            box = (x + rb.xmin * ww, y + rb.ymin * hh, x + (rb.xmin + rb.width) * ww, y + (rb.ymin + rb.height) * hh)
            out.append((box, score))
    return _dedupe(out)


def _dedupe(boxes: list[tuple[Box, float]]) -> list[tuple[Box, float]]:
    """One box per face of a frame: the best-scoring of those whose centres fall inside each other."""
    kept: list[tuple[Box, float]] = []
    for box, score in sorted(boxes, key=lambda b: -b[1]):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        if not any(k[0] <= cx <= k[2] and k[1] <= cy <= k[3] for k, _ in kept):
            kept.append((box, score))
    return kept


def sample_frames(location: str, *, samples: int = SAMPLES) -> list[NDArray[np.uint8]]:
    """Up to ``samples`` BGR frames spread evenly over the recording.

    The first keyframe at or after each of ``samples`` evenly spaced times (only keyframes are
    decoded); when that gives fewer than half of them (a short clip with few keyframes) and
    the recording is at most ``FULL_DECODE_S`` long, the first frame at or after each time.
    """
    import av

    with av.open(location, mode="r", timeout=10.0) as container:
        duration = container.duration / 1_000_000 if container.duration else None
        origin = container.start_time / 1_000_000 if container.start_time else 0.0
    span = duration if duration and duration > 0 else FULL_DECODE_S
    targets = [(i + 0.5) * span / samples for i in range(samples)]
    picked = _first_at(location, targets, origin, keyframes_only=True)
    if len(picked) < samples / 2 and span <= FULL_DECODE_S:
        picked = _first_at(location, targets, origin, keyframes_only=False)
    return picked


def _first_at(location: str, targets: list[float], origin: float, *, keyframes_only: bool) -> list[NDArray[np.uint8]]:
    import av

    out: list[NDArray[np.uint8]] = []
    with av.open(location, mode="r", timeout=10.0) as container:
        stream = container.streams.video[0]
        if keyframes_only:
            stream.codec_context.skip_frame = "NONKEY"
        i = 0
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            t = float(frame.time) - origin
            if t + 1e-6 < targets[i]:
                continue
            out.append(np.asarray(frame.to_ndarray(format="bgr24"), np.uint8))
            while i < len(targets) and targets[i] <= t + 1e-6:
                i += 1
            if i >= len(targets):
                break
    return out


def scan_layout(location: str, *, samples: int = SAMPLES, min_detection: float = 0.4) -> GalleryLayout:
    """The layout of a gallery recording (opens it with PyAV; raises LayoutError when no face is found)."""
    import cv2
    import mediapipe as mp

    solutions: Any = mp.solutions  # type: ignore[attr-defined]
    faces: list[list[tuple[Box, float]]] = []
    total: NDArray[np.float64] | None = None
    width = height = 0
    images = sample_frames(location, samples=samples)
    with solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=min_detection) as det:
        for image in images:
            height, width = image.shape[:2]
            faces.append(detect_faces(det, image))
            grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float64)
            total = grey if total is None else total + grey
    if total is None:
        raise LayoutError("no video frame could be decoded")
    mean = (total / len(faces)).astype(np.float32)
    with solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1) as mesh:
        def confirm(i: int, box: Box) -> bool:
            crop = face_crop(images[i], box)
            return crop is not None and bool(mesh.process(crop).multi_face_landmarks)

        return layout_from_faces(faces, width=width, height=height, mean=mean, confirm=confirm)


def face_crop(image: NDArray[np.uint8], box: Box, *, side: float = CONFIRM_CROP) -> NDArray[np.uint8] | None:
    """An RGB crop ``side`` face sizes wide centred on ``box`` (clipped to the frame; None when empty)."""
    import cv2

    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, side / 2 * max(x1 - x0, y1 - y0)
    h, w = image.shape[:2]
    left, top, right, bottom = max(0, int(cx - r)), max(0, int(cy - r)), min(w, int(cx + r)), min(h, int(cy + r))
    if right - left < 2 or bottom - top < 2:
        return None
    return np.ascontiguousarray(cv2.cvtColor(image[top:bottom, left:right], cv2.COLOR_BGR2RGB))
