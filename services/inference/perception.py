"""Perception backend interface: frames in, face/pose landmarks out.

A backend turns a batch of frames (one per participant and step) into landmark
observations in pixel coordinates of the original frame. Backends hold models, not
participants: what tracking carries from one frame to the next is the participant's
:class:`FaceTrack`, owned by its :class:`~services.inference.state.ParticipantState` and
handed over in each :class:`PerceptionRequest`. ``forget`` releases native resources a
backend may cache per key (mediapipe's tracking-mode graphs). Backends are built by name
(:mod:`services.inference.perception_registry`); the CPU reference is
:class:`services.inference.perception_mediapipe.MediapipeBackend`, and a GPU-batched backend
must match it within a stated tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float32]
Box = tuple[float, float, float, float]
"""x0, y0, x1, y1 in pixels of the original frame."""


@dataclass(eq=False, slots=True)
class FaceTrack:
    """One participant's tracking hint: where to look for the face in the next frame.

    ``box`` is a square around the previous frame's face mesh (None: run full detection).
    The backend reads and updates it while analysing that participant's frames in order.
    """

    key: str
    """Tracking key (session/participant)."""
    box: Box | None = None


@dataclass(frozen=True, slots=True)
class FaceObservation:
    """One face: detector box and (when the mesh succeeded) 478 mesh + iris landmarks."""

    box: Box
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
    track: FaceTrack | None = None
    """The participant's tracking hint (updated by the backend); None = no tracking (one-off frame)."""


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

    def forget(self, key: str) -> None:
        """Release what the backend caches for ``key`` (the participant left); no state is lost."""
        ...

    def close(self) -> None: ...


Face = tuple[FaceObservation | None, NDArray[np.uint8] | None]
"""A frame's face and, when the backend made it, the downscaled RGB frame pose can reuse."""


@runtime_checkable
class SplitBackend(Protocol):
    """A backend whose face and pose parts can run on different threads (``MediapipeBackend``).

    :class:`~services.inference.perception_prefetch.PrefetchPerception` runs ``face`` ahead in
    its own thread and ``pose`` on the engine's.
    """

    name: str

    def load(self) -> None: ...

    def face(self, track: FaceTrack, image: NDArray[np.uint8]) -> Face: ...

    def pose(self, image: NDArray[np.uint8], small: NDArray[np.uint8] | None = None) -> PoseObservation | None: ...

    def forget(self, key: str) -> None: ...

    def close(self) -> None: ...


def backend_device(backend: PerceptionBackend) -> str:
    """Where a backend runs: its ``device`` attribute when it has one (the torch backend), else 'cpu'."""
    device = getattr(backend, "device", "cpu")
    return str(device)
