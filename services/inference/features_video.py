"""Per-frame video features from landmarks: head pose, eyes, iris gaze, mouth, hands, motion.

Landmark indices are mediapipe face mesh (468 + 10 iris points with ``refine_landmarks``)
and BlazePose (33 points). Head pose is a perspective fit (``cv2.solvePnP``) of a generic
3-D face model to six mesh points with a pinhole camera whose focal length is the frame
width; the angles are in degrees, yaw positive when the face turns to the image right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from services.inference.perception import FloatArray, PoseObservation

# Generic face model (mm), image axes: x right, y down, z away from the camera; nose tip at 0.
# Classic six-point model (nose, chin, eye outer corners, mouth corners) used for PnP head pose.
_MODEL_POINTS = np.array(
    [
        (0.0, 0.0, 0.0),  # nose tip            mesh 1
        (0.0, 330.0, 65.0),  # chin              mesh 152
        (-225.0, -170.0, 135.0),  # image-left eye outer corner   mesh 33
        (225.0, -170.0, 135.0),  # image-right eye outer corner  mesh 263
        (-150.0, 150.0, 125.0),  # image-left mouth corner       mesh 61
        (150.0, 150.0, 125.0),  # image-right mouth corner       mesh 291
    ],
    dtype=np.float64,
)
_MESH_IDS = (1, 152, 33, 263, 61, 291)

# Eye contours for the eye aspect ratio (Soukupova & Cech 2016): p1..p6.
_EYE_A = (33, 160, 158, 133, 153, 144)
_EYE_B = (362, 385, 387, 263, 373, 380)
_IRIS_CENTRES = (468, 473)
_MOUTH = (13, 14, 61, 291)  # upper lip, lower lip, corners

# BlazePose indices.
_SHOULDERS = (11, 12)
_WRISTS = (15, 16)
_MIN_VISIBILITY = 0.5

MOTION_SIZE = (64, 48)


@dataclass(frozen=True, slots=True)
class HeadPose:
    yaw: float
    pitch: float
    roll: float


def head_pose(landmarks: FloatArray, width: int, height: int) -> HeadPose | None:
    """Yaw/pitch/roll in degrees from a PnP fit; None when the fit fails."""
    image_points = landmarks[list(_MESH_IDS), :2].astype(np.float64)
    focal = float(width)
    camera = np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]], dtype=np.float64)
    # Start from a frontal face at the distance its eye span implies: keeps the iterative fit
    # out of the mirrored (upside-down) solution that flat or far faces otherwise allow.
    span = float(np.hypot(*(image_points[3] - image_points[2]))) or 1.0
    rvec0 = np.zeros((3, 1), dtype=np.float64)
    tvec0 = np.array([[0.0], [0.0], [focal * 450.0 / span]], dtype=np.float64)
    ok, rvec, _tvec = cv2.solvePnP(
        _MODEL_POINTS, image_points, camera, None, rvec0, tvec0, True, flags=cv2.SOLVEPNP_ITERATIVE
    )
    if not ok:
        return None
    rot, _ = cv2.Rodrigues(rvec)
    # R = Rz(roll) @ Ry(yaw) @ Rx(pitch) decomposition.
    sy = math.hypot(rot[0, 0], rot[1, 0])
    if sy < 1e-6:
        return None
    pitch = math.degrees(math.atan2(rot[2, 1], rot[2, 2]))
    yaw = math.degrees(math.atan2(-rot[2, 0], sy))
    roll = math.degrees(math.atan2(rot[1, 0], rot[0, 0]))
    return HeadPose(yaw=yaw, pitch=pitch, roll=roll)


def _dist(a: FloatArray, b: FloatArray) -> float:
    return float(np.hypot(*(a[:2] - b[:2])))


def eye_openness(landmarks: FloatArray) -> float:
    """Mean eye aspect ratio of both eyes (~0.3 open, < 0.15 closed)."""
    ratios = []
    for p1, p2, p3, p4, p5, p6 in (_EYE_A, _EYE_B):
        width = _dist(landmarks[p1], landmarks[p4])
        if width <= 1e-6:
            continue
        ratios.append((_dist(landmarks[p2], landmarks[p6]) + _dist(landmarks[p3], landmarks[p5])) / (2 * width))
    return float(np.mean(ratios)) if ratios else 0.0


def gaze_offset(landmarks: FloatArray) -> float | None:
    """Horizontal iris offset from the eye centre: 0 centred, 1 at a corner (mean of both eyes)."""
    if landmarks.shape[0] < 478:
        return None
    offsets = []
    for eye in (_EYE_A, _EYE_B):
        a, b = landmarks[eye[0], :2], landmarks[eye[3], :2]
        centre = (a + b) / 2
        iris = min((landmarks[i, :2] for i in _IRIS_CENTRES), key=lambda p: float(np.hypot(*(p - centre))))
        axis = b - a
        denom = float(axis @ axis)
        if denom <= 1e-6:
            continue
        t = float((iris - a) @ axis) / denom
        offsets.append(min(1.0, abs(2 * t - 1)))
    return float(np.mean(offsets)) if offsets else None


def mouth_opening(landmarks: FloatArray) -> float:
    """Lip gap over mouth width (0 closed, ~0.5 wide open)."""
    up, low, left, right = _MOUTH
    width = _dist(landmarks[left], landmarks[right])
    return _dist(landmarks[up], landmarks[low]) / width if width > 1e-6 else 0.0


def wrist_above_shoulder(pose: PoseObservation) -> bool:
    """True when a visible wrist is above the shoulder line by a tenth of the shoulder width."""
    lm = pose.landmarks
    ls, rs = lm[_SHOULDERS[0]], lm[_SHOULDERS[1]]
    if min(ls[3], rs[3]) < _MIN_VISIBILITY:
        return False
    shoulder_y = float(min(ls[1], rs[1]))
    margin = 0.1 * abs(float(ls[0] - rs[0]))
    return any(lm[i][3] >= _MIN_VISIBILITY and float(lm[i][1]) < shoulder_y - margin for i in _WRISTS)


def motion_thumbnail(image: NDArray[np.uint8]) -> NDArray[np.float32]:
    """A small grey thumbnail for frame differencing."""
    grey = cv2.cvtColor(cv2.resize(image, MOTION_SIZE, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
    return np.asarray(grey, dtype=np.float32) / np.float32(255.0)


def motion(previous: NDArray[np.float32] | None, current: NDArray[np.float32]) -> float | None:
    """Mean absolute difference of two thumbnails (0..1); None for the first frame."""
    if previous is None or previous.shape != current.shape:
        return None
    return float(np.mean(np.abs(current - previous)))
