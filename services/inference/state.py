"""Per-participant state kept by the engine between analysis steps."""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from services.inference.fusion import N_SIGNALS
from shared.contracts.events import FeatureSnapshot, Role
from shared.contracts.media import AudioChunk

BLINK_EAR = 0.15
"""Eye aspect ratio below which the eyes count as closed (a blink when it reopens)."""
BLINK_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class AudioFeatures:
    media_time: float
    end_time: float
    voice_prob: float
    rms_dbfs: float
    mel_db: tuple[float, ...]


@dataclass(slots=True)
class Step:
    """One analysis step's feature vector, mask and snapshot (before fusion)."""

    vector: NDArray[np.float32]
    measured: NDArray[np.float32]
    snapshot: FeatureSnapshot


@dataclass
class ParticipantState:
    """Everything the engine remembers about one participant."""

    session: str
    participant: str
    role: Role
    window_steps: int
    calibration_s: float
    baseline_limit_deg: float
    window: deque[tuple[NDArray[np.float32], NDArray[np.float32]]] = field(init=False)
    audio: deque[AudioFeatures] = field(default_factory=lambda: deque(maxlen=64))
    first_time: float | None = None
    last_video_time: float | None = None
    frames: int = 0
    first_face_time: float | None = None
    calib_yaw: list[float] = field(default_factory=list)
    calib_pitch: list[float] = field(default_factory=list)
    baseline: tuple[float, float] = (0.0, 0.0)
    calibrated: bool = False
    recent_pose: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=3))
    last_wrist: bool | None = None
    wrist_frame: int = -1
    motion_since_pose: float = 0.0
    thumbnail: NDArray[np.float32] | None = None
    mouth: deque[float] = field(default_factory=lambda: deque(maxlen=6))
    eyes_closed: bool = False
    blinks: int = 0
    blink_times: deque[float] = field(default_factory=lambda: deque(maxlen=128))
    pending_audio: list[tuple[AudioChunk, AudioFeatures, float]] = field(default_factory=list)
    last_wall: float = 0.0

    def __post_init__(self) -> None:
        self.window = deque(maxlen=self.window_steps)

    def seen(self, media_time: float, wall: float) -> None:
        if self.first_time is None or media_time < self.first_time:
            self.first_time = media_time
        self.last_wall = wall

    def calibrate(self, media_time: float, yaw: float, pitch: float) -> tuple[float, float]:
        """Yaw/pitch (median of the last 3 frames) relative to the baseline (median of the first seconds)."""
        self.recent_pose.append((yaw, pitch))
        yaw = statistics.median(p[0] for p in self.recent_pose)
        pitch = statistics.median(p[1] for p in self.recent_pose)
        if not self.calibrated:
            if self.first_face_time is None:
                self.first_face_time = media_time
            self.calib_yaw.append(yaw)
            self.calib_pitch.append(pitch)
            lim = self.baseline_limit_deg
            by = min(lim, max(-lim, statistics.median(self.calib_yaw)))
            bp = min(lim, max(-lim, statistics.median(self.calib_pitch)))
            self.baseline = (by, bp)
            if media_time - self.first_face_time >= self.calibration_s:
                self.calibrated = True
        return yaw - self.baseline[0], pitch - self.baseline[1]

    def observe_eyes(self, ear: float, media_time: float) -> float | None:
        """Count a blink when closed eyes reopen; blinks per minute over the last minute (after 10 s)."""
        closed = ear < BLINK_EAR
        if self.eyes_closed and not closed:
            self.blinks += 1
            self.blink_times.append(media_time)
        self.eyes_closed = closed
        if self.first_face_time is None:
            return None
        span = min(BLINK_WINDOW_S, media_time - self.first_face_time)
        if span < 10.0:
            return None
        recent = sum(1 for t in self.blink_times if media_time - t <= BLINK_WINDOW_S)
        return 60.0 * recent / span

    def mouth_activity(self, opening: float) -> float | None:
        self.mouth.append(opening)
        return float(np.std(self.mouth)) if len(self.mouth) >= 2 else None

    def audio_at(self, media_time: float, max_age: float) -> AudioFeatures | None:
        """The latest audio features starting at or before ``media_time`` (and not older than ``max_age``)."""
        for feats in reversed(self.audio):
            if feats.media_time <= media_time + 1e-6:
                return feats if media_time - feats.end_time <= max_age else None
        return None

    def camera_off(self, media_time: float, *, off_after: float, grace: float) -> bool:
        """No video for ``off_after`` seconds of media time (or none since the start, after ``grace``)."""
        if self.last_video_time is None:
            start = self.first_time if self.first_time is not None else media_time
            return media_time - start >= grace
        return media_time - self.last_video_time >= off_after

    def push(self, step: Step) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
        """Append a step; returns the padded window (T, F), its mask (T, F) and validity (T,)."""
        self.window.append((step.vector, step.measured))
        t = self.window_steps
        x = np.zeros((t, N_SIGNALS), dtype=np.float32)
        m = np.zeros((t, N_SIGNALS), dtype=np.float32)
        valid = np.zeros(t, dtype=np.float32)
        n = len(self.window)
        for i, (vec, mask) in enumerate(self.window):
            x[t - n + i] = vec
            m[t - n + i] = mask
            valid[t - n + i] = 1.0
        return x, m, valid
