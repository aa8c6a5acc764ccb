"""CPU reference perception on mediapipe 0.10.14 (models ship in the wheel, no downloads).

Per frame:

1. **Face.** When the participant's face was meshed on its previous frame, a square around
   that mesh is cropped and meshed directly (no full-frame detection). Otherwise BlazeFace
   *full range* (small faces, far from the camera) runs on the frame downscaled to
   ``detect_width``, and the best box is cropped and meshed. Face mesh runs with
   ``refine_landmarks=True`` (478 points including both irises) on a fixed-size crop, so
   its cost does not grow with the frame size. By default one face-mesh graph in static mode
   serves everyone. With ``mesh_trackers > 0`` each participant (up to that many, least
   recently used closed first) gets its own graph in tracking mode: the crop follows the face,
   so the graph reuses its previous landmarks and skips its own detector, which halves the
   mesh cost (12.4 -> 6.3 ms per crop, 23 -> 13 ms per frame measured here) but follows a
   sudden head turn 3-4 frames late (tested). Those graphs are a cache of native resources
   (their landmarks cannot be serialised): a participant whose state was restored elsewhere
   starts a fresh one. The crop box itself is the participant's :class:`FaceTrack`.
2. **Pose** (BlazePose, ``model_complexity=1``, the one that works offline) on the
   downscaled frame, only when the caller asks (every Nth frame with a face).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from services.inference.perception import (
    Box,
    Face,
    FaceObservation,
    FaceTrack,
    FloatArray,
    PerceptionRequest,
    PerceptionResult,
    PoseObservation,
)

MESH_CROP = 256
"""Side of the square crop the face mesh sees (pixels)."""
CROP_SCALE = 1.7
"""A detector box is expanded by this factor around its centre before meshing."""
TRACK_SCALE = CROP_SCALE
"""The square tracking box from a previous mesh is expanded like a detector box (same crop geometry)."""


def _square_crop(image: NDArray[np.uint8], box: Box, scale: float) -> tuple[NDArray[np.uint8], float, float, float]:
    """A ``MESH_CROP`` square around ``box`` (padded with black), plus its origin and side in pixels."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = max(x1 - x0, y1 - y0) * scale
    side = max(side, 16.0)
    ox, oy = cx - side / 2, cy - side / 2
    # Affine map from the square to MESH_CROP pixels; borders are black.
    k = MESH_CROP / side
    matrix = np.array([[k, 0.0, -ox * k], [0.0, k, -oy * k]], dtype=np.float64)
    crop = cv2.warpAffine(image, matrix, (MESH_CROP, MESH_CROP), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    return np.asarray(crop, dtype=np.uint8), ox, oy, side


def _mesh_box(points: FloatArray) -> Box:
    return (float(points[:, 0].min()), float(points[:, 1].min()), float(points[:, 0].max()), float(points[:, 1].max()))


def _track_box(points: FloatArray) -> Box:
    """A detector-like square box from a mesh: as wide as the face oval, centred on it.

    Keeps tracked crops at the same scale as detector crops, so the mesh (and the head pose
    read from it) does not shift between tracked and detected frames.
    """
    x0, y0, x1, y1 = _mesh_box(points)
    half = (x1 - x0) / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (cx - half, cy - half, cx + half, cy + half)


class MediapipeBackend:
    """Face detection (full range) + face mesh with iris + pose, on CPU."""

    name = "mediapipe"

    def __init__(
        self, *, detect_width: int = 320, min_detection: float = 0.5, min_mesh: float = 0.5, mesh_trackers: int = 0
    ) -> None:
        self.detect_width = detect_width
        self.min_detection = min_detection
        self.min_mesh = min_mesh
        self.mesh_trackers = mesh_trackers
        self._detector: Any = None
        self._mesh: Any = None
        self._pose: Any = None
        self._trackers: OrderedDict[str, Any] = OrderedDict()  # tracking-mode graphs by key (LRU)

    def load(self) -> None:
        import mediapipe as mp

        solutions: Any = mp.solutions  # type: ignore[attr-defined]
        self._detector = solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=self.min_detection
        )
        self._mesh = self._new_mesh(static=True)
        self._pose = solutions.pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=False)

    def _new_mesh(self, *, static: bool) -> Any:
        import mediapipe as mp

        solutions: Any = mp.solutions  # type: ignore[attr-defined]
        return solutions.face_mesh.FaceMesh(
            static_image_mode=static,
            max_num_faces=1,
            refine_landmarks=True,
            min_detection_confidence=self.min_mesh,
            min_tracking_confidence=self.min_mesh,
        )

    def _mesh_for(self, key: str) -> Any:
        """The participant's tracking graph (created on demand, LRU-capped); the shared static one past the cap."""
        if self.mesh_trackers <= 0:
            return self._mesh
        graph = self._trackers.get(key)
        if graph is None:
            if len(self._trackers) >= self.mesh_trackers:
                _, oldest = self._trackers.popitem(last=False)
                oldest.close()
            graph = self._new_mesh(static=False)
            self._trackers[key] = graph
        self._trackers.move_to_end(key)
        return graph

    def close(self) -> None:
        for part in (self._detector, self._mesh, self._pose, *self._trackers.values()):
            if part is not None:
                part.close()
        self._trackers.clear()
        self._detector = self._mesh = self._pose = None

    def forget(self, key: str) -> None:
        graph = self._trackers.pop(key, None)
        if graph is not None:
            graph.close()

    def analyze(self, requests: Sequence[PerceptionRequest]) -> list[PerceptionResult]:
        if self._mesh is None:
            raise RuntimeError("MediapipeBackend used before load()")
        return [self._one(req) for req in requests]

    def _one(self, req: PerceptionRequest) -> PerceptionResult:
        face, small = self.face(req.track if req.track is not None else FaceTrack(key=req.key), req.image)
        pose = self.pose(req.image, small) if req.want_pose else None
        return PerceptionResult(face=face, pose=pose, pose_ran=req.want_pose)

    def face(self, track: FaceTrack, image: NDArray[np.uint8]) -> Face:
        """The face in a participant's next frame (its frames in order), and the downscaled RGB frame if made.

        Crops around ``track.box`` when set, and updates it for the next frame. Uses only the
        detector and mesh graphs, so one thread may run it while another runs :meth:`pose`.
        """
        if self._mesh is None:
            raise RuntimeError("MediapipeBackend used before load()")
        h, w = image.shape[:2]
        small: NDArray[np.uint8] | None = None
        face: FaceObservation | None = None
        mesh = self._mesh_for(track.key)
        if track.box is not None:
            face = self._mesh_crop(mesh, image, track.box, TRACK_SCALE, score=1.0)
        if face is None:
            small = self._downscaled(image)
            box = self._detect(small, w, h)
            if box is not None:
                face = self._mesh_crop(mesh, image, box[0], CROP_SCALE, score=box[1]) or FaceObservation(
                    box=box[0], score=box[1], landmarks=None
                )
        track.box = _track_box(face.landmarks) if face is not None and face.landmarks is not None else None
        return face, small

    def pose(self, image: NDArray[np.uint8], small: NDArray[np.uint8] | None = None) -> PoseObservation | None:
        """Pose on the downscaled frame (``small`` when :meth:`face` already made it)."""
        h, w = image.shape[:2]
        return self._run_pose(self._downscaled(image) if small is None else small, w, h)

    def _downscaled(self, image: NDArray[np.uint8]) -> NDArray[np.uint8]:
        h, w = image.shape[:2]
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if w <= self.detect_width:
            return np.asarray(rgb, dtype=np.uint8)
        nh = max(1, round(h * self.detect_width / w))
        return np.asarray(cv2.resize(rgb, (self.detect_width, nh), interpolation=cv2.INTER_AREA), dtype=np.uint8)

    def _detect(self, small_rgb: NDArray[np.uint8], w: int, h: int) -> tuple[Box, float] | None:
        result = self._detector.process(small_rgb)
        best: tuple[Box, float] | None = None
        for det in result.detections or ():
            rb = det.location_data.relative_bounding_box
            score = float(det.score[0]) if det.score else 0.0
            box = (rb.xmin * w, rb.ymin * h, (rb.xmin + rb.width) * w, (rb.ymin + rb.height) * h)
            area = (box[2] - box[0]) * (box[3] - box[1])
            if best is None or area * score > (best[0][2] - best[0][0]) * (best[0][3] - best[0][1]) * best[1]:
                best = (box, score)
        return best

    def _mesh_crop(
        self,
        mesh: Any,
        image: NDArray[np.uint8],
        box: Box,
        scale: float,
        *,
        score: float,
    ) -> FaceObservation | None:
        crop, ox, oy, side = _square_crop(image, box, scale)
        result = mesh.process(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB))
        if not result.multi_face_landmarks:
            return None
        lms = result.multi_face_landmarks[0].landmark
        pts = np.array([(p.x, p.y, p.z) for p in lms], dtype=np.float32) * np.float32(side)
        pts[:, 0] += ox
        pts[:, 1] += oy
        return FaceObservation(box=_mesh_box(pts), score=score, landmarks=pts)

    def _run_pose(self, small_rgb: NDArray[np.uint8], w: int, h: int) -> PoseObservation | None:
        result = self._pose.process(small_rgb)
        if result.pose_landmarks is None:
            return None
        arr = np.array(
            [(p.x * w, p.y * h, p.z * w, p.visibility) for p in result.pose_landmarks.landmark], dtype=np.float32
        )
        return PoseObservation(landmarks=arr)
