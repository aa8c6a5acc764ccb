"""Feature vectors of one analysis step (the fusion model's input), from perception and audio features.

The vector layout is :data:`services.inference.fusion_layout.SIGNALS`; each entry has a "measured"
flag, and the step keeps a :class:`FeatureSnapshot` of the raw values for the score event.
These functions update the participant's state (baseline, blinks, mouth, wrist, motion).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from services.inference import features_video as fv
from services.inference.fusion_layout import IDX, N_SIGNALS
from services.inference.perception import PerceptionResult
from services.inference.settings import InferenceSettings
from services.inference.state import AudioFeatures, ParticipantState, Step
from shared.contracts.events import FeatureSnapshot
from shared.contracts.media import VideoFrame

AUDIO_MAX_AGE_S = 1.0
"""A frame fuses audio features ending at most this long before it; older audio = mic off."""


def put_audio(vec: NDArray[np.float32], mask: NDArray[np.float32], feats: AudioFeatures | None) -> None:
    """Audio entries of a step: mic on/off, voice probability, level, log-mel bands."""
    on = feats is not None
    vec[IDX["mic_on"]], mask[IDX["mic_on"]] = float(on), 1.0
    if feats is None:
        return
    vec[IDX["voice"]], mask[IDX["voice"]] = feats.voice_prob, 1.0
    vec[IDX["audio_level"]], mask[IDX["audio_level"]] = feats.rms_dbfs, 1.0
    for i, db in enumerate(feats.mel_db):
        vec[IDX[f"mel_{i}"]], mask[IDX[f"mel_{i}"]] = db, 1.0


def audio_only_step(feats: AudioFeatures) -> Step:
    """A step driven by an audio chunk (camera off or no video): face signals unmeasured."""
    vec = np.zeros(N_SIGNALS, dtype=np.float32)
    mask = np.zeros(N_SIGNALS, dtype=np.float32)
    put_audio(vec, mask, feats)
    vec[IDX["camera_on"]], mask[IDX["camera_on"]] = 0.0, 1.0
    snap = FeatureSnapshot(voice_prob=round(feats.voice_prob, 4), rms_dbfs=round(feats.rms_dbfs, 2))
    return Step(vector=vec, measured=mask, snapshot=snap)


def pose_due(state: ParticipantState, s: InferenceSettings) -> bool:
    """Pose (the costliest model) on every Nth frame, and only when it can change the answer."""
    if state.frames % s.pose_every:
        return False
    if s.pose_motion <= 0 or state.last_wrist is None or state.last_wrist:
        return True
    return state.motion_since_pose >= s.pose_motion or state.frames - state.wrist_frame >= s.pose_max_interval


def video_step(
    state: ParticipantState,
    frame: VideoFrame,
    image: NDArray[np.uint8],
    res: PerceptionResult,
    settings: InferenceSettings,
) -> tuple[Step, bool]:
    """The step of one analysed frame and whether audio was fused into it (mic on)."""
    vec = np.zeros(N_SIGNALS, dtype=np.float32)
    mask = np.zeros(N_SIGNALS, dtype=np.float32)
    snap: dict[str, object] = {}
    present = res.face is not None
    vec[IDX["face_present"]], mask[IDX["face_present"]] = float(present), 1.0
    vec[IDX["camera_on"]], mask[IDX["camera_on"]] = 1.0, 1.0
    snap["face_present"] = present
    if res.face is None or res.face.landmarks is None:
        state.recent_pose.clear()  # head-pose smoothing never spans an absence
    if res.face is not None and res.face.landmarks is not None:
        lm = res.face.landmarks
        pose = fv.head_pose(lm, frame.width, frame.height)
        if pose is not None:
            dyaw, dpitch = state.calibrate(frame.media_time, pose.yaw, pose.pitch)
            vec[IDX["head_yaw"]], mask[IDX["head_yaw"]] = abs(dyaw), 1.0
            vec[IDX["head_pitch"]], mask[IDX["head_pitch"]] = abs(dpitch), 1.0
            snap.update(yaw_deg=round(dyaw, 2), pitch_deg=round(dpitch, 2), roll_deg=round(pose.roll, 2))
        ear = fv.eye_openness(lm)
        blink_rate = state.observe_eyes(ear, frame.media_time)
        if blink_rate is not None:
            snap["blinks_per_min"] = round(blink_rate, 1)
        vec[IDX["eyes_open"]], mask[IDX["eyes_open"]] = ear, 1.0
        snap["eye_openness"] = round(ear, 4)
        gaze = fv.gaze_offset(lm)
        if gaze is not None:
            vec[IDX["gaze"]], mask[IDX["gaze"]] = gaze, 1.0
            snap["gaze_offset"] = round(gaze, 4)
        opening = fv.mouth_opening(lm)
        snap["mouth_opening"] = round(opening, 4)
        activity = state.mouth_activity(opening)
        if activity is not None:
            vec[IDX["mouth_activity"]], mask[IDX["mouth_activity"]] = activity, 1.0
            snap["mouth_activity"] = round(activity, 4)
    if res.pose_ran:
        state.last_wrist = res.pose is not None and fv.wrist_above_shoulder(res.pose)
        state.wrist_frame = state.frames
        state.motion_since_pose = 0.0
    held = max(2 * settings.pose_every, settings.pose_max_interval)
    if state.last_wrist is not None and state.frames - state.wrist_frame <= held:
        vec[IDX["hand_raised"]], mask[IDX["hand_raised"]] = float(state.last_wrist), 1.0
        snap["wrist_above_shoulder"] = state.last_wrist
    thumb = fv.motion_thumbnail(image)
    moved = fv.motion(state.thumbnail, thumb)
    state.thumbnail = thumb
    if moved is not None:
        state.motion_since_pose = max(state.motion_since_pose, moved)
        vec[IDX["motion"]], mask[IDX["motion"]] = moved, 1.0
        snap["motion"] = round(moved, 4)
    feats = state.audio_at(frame.media_time, AUDIO_MAX_AGE_S)
    put_audio(vec, mask, feats)
    if feats is not None:
        snap.update(voice_prob=round(feats.voice_prob, 4), rms_dbfs=round(feats.rms_dbfs, 2))
    state.frames += 1
    state.last_video_time = frame.media_time
    snapshot = FeatureSnapshot.model_validate(snap)
    return Step(vector=vec, measured=mask, snapshot=snapshot), feats is not None
