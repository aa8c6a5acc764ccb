"""Everything the engine keeps about one participant, in one object that can be snapshotted.

A :class:`ParticipantState` owns the participant's calibration (yaw/pitch baseline), fusion
window, blink/mouth/wrist/motion history, the recent audio features, the audio chunks held
for the camera-grace decision, audio features computed ahead (replay), its silero-vad
stream, its face-tracking hint and its recent interactions (derived text features). The
models the engine runs on it are shared and stateless. :meth:`ParticipantState.snapshot` /
:meth:`ParticipantState.restore` move it between workers: a restored state continues exactly
as the original would (with
``mesh_trackers > 0`` mediapipe's tracking-mode graph, a native cache, restarts on the new
worker; see :mod:`services.inference.perception_mediapipe`).
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, ValidationError

from services.inference.features_audio import CONTEXT, STATE_SHAPE, VadStream
from services.inference.fusion_layout import N_SIGNALS, SIGNALS
from services.inference.media_marks import TakenMarks
from services.inference.perception import Box, FaceTrack
from services.inference.state_snapshot import SnapshotError, pack, unpack
from services.inference.text_state import TextActivity, TextRow
from shared.contracts.codec import DecodeError, decode_media, encode_media
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


AheadFeatures = tuple[float, float, tuple[float, ...]]
"""A chunk's voice probability, level (dBFS) and log-mel bands, computed before the engine sees it."""


@dataclass(frozen=True, slots=True)
class HeldAudio:
    """An audio chunk waiting for the camera-grace decision, with its features and arrival time."""

    chunk: AudioChunk
    features: AudioFeatures
    received: float


@dataclass(slots=True)
class Step:
    """One analysis step's feature vector, mask and snapshot (before fusion)."""

    vector: NDArray[np.float32]
    measured: NDArray[np.float32]
    snapshot: FeatureSnapshot


SNAPSHOT_KIND = "inference.participant"
SNAPSHOT_VERSION = 1
AUDIO_HISTORY = 64
POSE_HISTORY = 3
MOUTH_HISTORY = 6
BLINK_HISTORY = 128


@dataclass(eq=False)
class ParticipantState:
    """Everything the engine remembers about one participant."""

    session: str
    participant: str
    role: Role
    window_steps: int
    calibration_s: float
    baseline_limit_deg: float
    window: deque[tuple[NDArray[np.float32], NDArray[np.float32]]] = field(init=False)
    audio: deque[AudioFeatures] = field(default_factory=lambda: deque(maxlen=AUDIO_HISTORY))
    first_time: float | None = None
    last_video_time: float | None = None
    frames: int = 0
    first_face_time: float | None = None
    calib_yaw: list[float] = field(default_factory=list)
    calib_pitch: list[float] = field(default_factory=list)
    baseline: tuple[float, float] = (0.0, 0.0)
    calibrated: bool = False
    recent_pose: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=POSE_HISTORY))
    last_wrist: bool | None = None
    wrist_frame: int = -1
    motion_since_pose: float = 0.0
    thumbnail: NDArray[np.float32] | None = None
    mouth: deque[float] = field(default_factory=lambda: deque(maxlen=MOUTH_HISTORY))
    eyes_closed: bool = False
    blinks: int = 0
    blink_times: deque[float] = field(default_factory=lambda: deque(maxlen=BLINK_HISTORY))
    last_wall: float = 0.0
    held: list[HeldAudio] = field(default_factory=list)
    """Audio chunks not yet decided (camera on: no step; off: an audio-only step), in media order."""
    ahead: dict[int, AheadFeatures] = field(default_factory=dict)
    """Audio features computed ahead (replay's decode thread), by chunk seq, until the chunk arrives."""
    vad: VadStream = field(default_factory=VadStream)
    track: FaceTrack = field(init=False)
    text: TextActivity = field(default_factory=TextActivity)
    """Recent interactions (chat, questions ...) as derived features: the text signals' source."""
    taken: TakenMarks = field(default_factory=TakenMarks)
    """Per media kind, the ``(epoch, seq)`` marks taken in: a repeat (a redelivery of what this state
    already holds) never enters the state again; media arriving late (a claim) still does."""
    held_since: int = 0
    """Engine bookkeeping (the order participants started holding audio); not part of a snapshot."""

    def __post_init__(self) -> None:
        self.window = deque(maxlen=self.window_steps)
        self.track = FaceTrack(key=f"{self.session}/{self.participant}")

    @property
    def key(self) -> tuple[str, str]:
        return self.session, self.participant

    def take(self, kind: str, epoch: int, seq: int) -> bool:
        """Whether media ``(epoch, seq)`` of ``kind`` was not taken in yet (then it is taken)."""
        return self.taken.take(kind, epoch, seq)

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

    # -- snapshot --------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole state as bytes (see :mod:`services.inference.state_snapshot`); no pickle."""
        fields = _Fields(
            session=self.session,
            participant=self.participant,
            role=self.role,
            window_steps=self.window_steps,
            calibration_s=self.calibration_s,
            baseline_limit_deg=self.baseline_limit_deg,
            signals=list(SIGNALS),
            audio=[_audio_row(f) for f in self.audio],
            first_time=self.first_time,
            last_video_time=self.last_video_time,
            frames=self.frames,
            first_face_time=self.first_face_time,
            calib_yaw=self.calib_yaw,
            calib_pitch=self.calib_pitch,
            baseline=self.baseline,
            calibrated=self.calibrated,
            recent_pose=list(self.recent_pose),
            last_wrist=self.last_wrist,
            wrist_frame=self.wrist_frame,
            motion_since_pose=self.motion_since_pose,
            mouth=list(self.mouth),
            eyes_closed=self.eyes_closed,
            blinks=self.blinks,
            blink_times=list(self.blink_times),
            last_wall=self.last_wall,
            held=[(_audio_row(h.features), h.received) for h in self.held],
            ahead=[(seq, *feats) for seq, feats in self.ahead.items()],
            vad_last_prob=self.vad.last_prob,
            track_box=self.track.box,
            has_thumbnail=self.thumbnail is not None,
            text_rows=self.text.dump()[0],
            text_ids=self.text.dump()[1],
            taken=self.taken.dump(),
        )
        arrays: dict[str, NDArray[Any]] = {
            "window_x": _rows([v for v, _ in self.window]),
            "window_m": _rows([m for _, m in self.window]),
            "vad_state": self.vad.state,
            "vad_context": self.vad.context,
            "vad_remainder": self.vad.remainder,
        }
        if self.thumbnail is not None:
            arrays["thumbnail"] = self.thumbnail
        for i, h in enumerate(self.held):
            arrays[f"held_{i}"] = np.frombuffer(encode_media(h.chunk), dtype=np.uint8)
        return pack(kind=SNAPSHOT_KIND, version=SNAPSHOT_VERSION, fields=fields.model_dump(mode="json"), arrays=arrays)

    @classmethod
    def restore(cls, data: bytes) -> ParticipantState:
        """A state from :meth:`snapshot`; raises :class:`SnapshotError` for anything else."""
        raw, arrays = unpack(data, kind=SNAPSHOT_KIND, version=SNAPSHOT_VERSION)
        try:
            f = _Fields.model_validate(raw)
        except ValidationError as exc:
            raise SnapshotError(f"participant snapshot fields do not match version {SNAPSHOT_VERSION}: {exc}") from exc
        if tuple(f.signals) != SIGNALS:
            raise SnapshotError(
                f"participant snapshot was taken with signals {f.signals}; this build's fusion input is {list(SIGNALS)}"
            )
        want = {"window_x", "window_m", "vad_state", "vad_context", "vad_remainder"}
        want |= {f"held_{i}" for i in range(len(f.held))} | ({"thumbnail"} if f.has_thumbnail else set())
        if set(arrays) != want:
            raise SnapshotError(f"participant snapshot arrays {sorted(arrays)} do not match its fields")
        wx, wm = arrays["window_x"], arrays["window_m"]
        if wx.dtype != np.float32 or wx.shape != wm.shape or wx.ndim != 2 or wx.shape[1] != N_SIGNALS:
            raise SnapshotError(f"participant snapshot window has the wrong layout {wx.dtype} {wx.shape}")
        if len(wx) > f.window_steps:
            raise SnapshotError(f"participant snapshot window holds {len(wx)} steps, more than {f.window_steps}")
        state = cls(
            session=f.session,
            participant=f.participant,
            role=f.role,
            window_steps=f.window_steps,
            calibration_s=f.calibration_s,
            baseline_limit_deg=f.baseline_limit_deg,
        )
        state.window.extend(zip(list(wx), list(wm), strict=True))
        state.audio.extend(_audio_features(row) for row in f.audio)
        state.first_time, state.last_video_time = f.first_time, f.last_video_time
        state.frames, state.first_face_time = f.frames, f.first_face_time
        state.calib_yaw, state.calib_pitch = list(f.calib_yaw), list(f.calib_pitch)
        state.baseline, state.calibrated = f.baseline, f.calibrated
        state.recent_pose.extend(f.recent_pose)
        state.last_wrist, state.wrist_frame, state.motion_since_pose = f.last_wrist, f.wrist_frame, f.motion_since_pose
        state.thumbnail = _float32(arrays, "thumbnail", ndim=2) if f.has_thumbnail else None
        state.mouth.extend(f.mouth)
        state.eyes_closed, state.blinks = f.eyes_closed, f.blinks
        state.blink_times.extend(f.blink_times)
        state.last_wall = f.last_wall
        for i, (row, received) in enumerate(f.held):
            try:
                chunk = decode_media(arrays[f"held_{i}"].tobytes())
            except DecodeError as exc:
                raise SnapshotError(f"participant snapshot held chunk {i} is corrupt: {exc}") from exc
            if not isinstance(chunk, AudioChunk) or chunk.session != f.session or chunk.participant != f.participant:
                raise SnapshotError(f"participant snapshot held chunk {i} is not this participant's audio")
            state.held.append(HeldAudio(chunk=chunk, features=_audio_features(row), received=received))
        state.ahead = {seq: (prob, level, tuple(mel)) for seq, prob, level, mel in f.ahead}
        state.vad = VadStream(
            state=_float32(arrays, "vad_state", shape=STATE_SHAPE),
            context=_float32(arrays, "vad_context", shape=(CONTEXT,)),
            remainder=_float32(arrays, "vad_remainder", ndim=1),
            last_prob=f.vad_last_prob,
        )
        state.track.box = f.track_box
        state.text = TextActivity.load(f.text_rows, f.text_ids)
        state.taken = TakenMarks({kind: [(e, a, b) for e, a, b in spans] for kind, spans in f.taken.items()})
        return state


AudioRow = tuple[float, float, float, float, list[float]]


class _Fields(BaseModel):
    """The JSON part of a participant snapshot (version 1); arrays travel beside it."""

    model_config = ConfigDict(extra="forbid")

    session: str
    participant: str
    role: Role
    window_steps: int
    calibration_s: float
    baseline_limit_deg: float
    signals: list[str]
    audio: list[AudioRow]
    first_time: float | None
    last_video_time: float | None
    frames: int
    first_face_time: float | None
    calib_yaw: list[float]
    calib_pitch: list[float]
    baseline: tuple[float, float]
    calibrated: bool
    recent_pose: list[tuple[float, float]]
    last_wrist: bool | None
    wrist_frame: int
    motion_since_pose: float
    mouth: list[float]
    eyes_closed: bool
    blinks: int
    blink_times: list[float]
    last_wall: float
    held: list[tuple[AudioRow, float]]
    ahead: list[tuple[int, float, float, list[float]]]
    vad_last_prob: float
    track_box: Box | None
    has_thumbnail: bool
    text_rows: list[TextRow] = []
    text_ids: list[str] = []
    taken: dict[str, list[tuple[int, int, int]]] = {}


def _audio_row(f: AudioFeatures) -> AudioRow:
    return (f.media_time, f.end_time, f.voice_prob, f.rms_dbfs, list(f.mel_db))


def _audio_features(row: AudioRow) -> AudioFeatures:
    media_time, end_time, voice_prob, level, mel = row
    return AudioFeatures(
        media_time=media_time, end_time=end_time, voice_prob=voice_prob, rms_dbfs=level, mel_db=tuple(mel)
    )


def _rows(vectors: list[NDArray[np.float32]]) -> NDArray[np.float32]:
    return np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, N_SIGNALS), dtype=np.float32)


def _float32(
    arrays: dict[str, NDArray[Any]], name: str, *, shape: tuple[int, ...] | None = None, ndim: int | None = None
) -> NDArray[np.float32]:
    array = arrays[name]
    wrong_shape = (shape is not None and array.shape != shape) or (ndim is not None and array.ndim != ndim)
    if array.dtype != np.float32 or wrong_shape:
        raise SnapshotError(f"participant snapshot array {name!r} has the wrong layout {array.dtype} {array.shape}")
    return array
