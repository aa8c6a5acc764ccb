"""Perception backend interface: frames in, face/pose landmarks out.

A backend turns a batch of frames (one per participant and step) into landmark
observations in pixel coordinates of the original frame. Backends keep per-key tracking
hints (the key is the participant), so ``forget`` must be called when a participant leaves.
The CPU reference backend is :class:`services.inference.perception_mediapipe.MediapipeBackend`;
a GPU-batched backend must match it within a stated tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class FaceObservation:
    """One face: detector box and (when the mesh succeeded) 478 mesh + iris landmarks."""

    box: tuple[float, float, float, float]
    """x0, y0, x1, y1 in pixels of the original frame."""
    score: float
    landmarks: FloatArray | None
    """(478, 3): x, y in pixels, z in pixels (relative depth, mediapipe's scale); None if the mesh failed."""


@dataclass(frozen=True, slots=True)
class PoseObservation:
    """Upper-body pose: (33, 4) landmarks x, y in pixels, z, visibility (mediapipe BlazePose order)."""

    landmarks: FloatArray


@dataclass(frozen=True, slots=True)
class PerceptionRequest:
    """One frame to analyse."""

    key: str
    """Tracking key (session/participant)."""
    image: NDArray[np.uint8]
    """(h, w, 3) BGR."""
    want_pose: bool


@dataclass(frozen=True, slots=True)
class PerceptionResult:
    face: FaceObservation | None
    pose: PoseObservation | None
    pose_ran: bool
    """False when pose was not requested for this frame (then ``pose`` says nothing)."""


class PerceptionBackend(Protocol):
    """Frames -> landmarks. ``load`` before use; ``analyze`` is synchronous and may batch."""

    name: str

    def load(self) -> None: ...

    def analyze(self, requests: Sequence[PerceptionRequest]) -> list[PerceptionResult]: ...

    def forget(self, key: str) -> None: ...

    def close(self) -> None: ...
