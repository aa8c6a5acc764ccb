"""The inference engine: media messages in, one ScoreEvent per participant per analysis step out.

Synchronous and transport-free, so the live worker and file replay share it::

    engine = InferenceEngine(settings=InferenceSettings())
    engine.load()
    events = engine.process(messages)      # in media-time order per participant
    events += engine.flush()               # at the end of a file: audio held for the camera grace

Analysis steps: each :class:`VideoFrame` is a step (fusing the latest audio features at or
before its media time). A participant without video (camera off or an audio-only file)
gets a step per :class:`AudioChunk` instead, with ``present=False, camera_on=False``.
Event ids are stable: video steps use ``seq = 2 * frame.seq``, audio-only steps
``seq = 2 * chunk.seq + 1``, so a redelivered message yields the same ``event_id``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from services.inference.features_audio import LogMel, SileroVad, rms_dbfs, to_16k
from services.inference.fusion import HEADS, IDX, SIGNALS, FusionModel
from services.inference.perception import PerceptionBackend, PerceptionRequest, PerceptionResult
from services.inference.settings import InferenceSettings
from services.inference.state import AudioFeatures, ParticipantState
from services.inference.steps import audio_only_step, pose_due, video_step
from shared.contracts.events import FeatureSnapshot, ScoreEvent
from shared.contracts.media import AudioChunk, MediaMessage, VideoFrame
from shared.contracts.timing import wall_clock
from shared.log import get_logger, pii
from shared.metrics import Metrics

log = get_logger(__name__)


@dataclass(slots=True)
class _Pending:
    """A step waiting for fusion."""

    state: ParticipantState
    msg: MediaMessage
    received: float
    window: tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]
    snapshot: FeatureSnapshot
    present: bool
    camera_on: bool
    mic_on: bool
    seq: int


def resolve_device(choice: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without CUDA is an error."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CLASSPULSE_INFERENCE_DEVICE=cuda but no CUDA device is available; use 'auto' or 'cpu'")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


class InferenceEngine:
    """Perception -> features -> fusion for batches of media across participants."""

    def __init__(
        self,
        *,
        settings: InferenceSettings,
        metrics: Metrics | None = None,
        backend: PerceptionBackend | None = None,
    ) -> None:
        self.settings = settings
        self._metrics = metrics
        self._backend = backend
        self._vad = SileroVad()
        self._mel = LogMel()
        self._model: FusionModel | None = None
        self.device = torch.device("cpu")
        self._states: dict[tuple[str, str], ParticipantState] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def load(self) -> None:
        """Load perception models, silero-vad, log-mel and the fusion model (explicit, not at init)."""
        started = time.perf_counter()
        if self._backend is None:
            from services.inference.perception_mediapipe import MediapipeBackend
            from services.inference.perception_pool import ThreadedPerception

            width, trackers = self.settings.detect_width, self.settings.mesh_trackers
            if self.settings.perception_threads > 1:
                self._backend = ThreadedPerception(
                    factory=lambda: MediapipeBackend(detect_width=width, mesh_trackers=trackers),
                    workers=self.settings.perception_threads,
                )
            else:
                self._backend = MediapipeBackend(detect_width=width, mesh_trackers=trackers)
        self._backend.load()
        self._vad.load()
        self._mel.load()
        self.device = resolve_device(self.settings.device)
        model = FusionModel(window=self.settings.window_steps)
        if self.settings.weights_path:
            from services.inference.training import load_weights

            load_weights(model, self.settings.weights_path)
        else:
            model.set_cones(yaw_deg=self.settings.yaw_cone_deg, pitch_deg=self.settings.pitch_cone_deg)
        self._model = model.to(self.device).eval()
        if self._metrics is not None:
            self._metrics.inference_device.labels(self.device.type).set(1)
        log.info("inference engine %s -> %s", "loading", "ready", extra={"seconds": time.perf_counter() - started})

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()

    @property
    def model(self) -> FusionModel:
        if self._model is None:
            raise RuntimeError("InferenceEngine used before load()")
        return self._model

    def participants(self) -> list[tuple[str, str]]:
        return list(self._states)

    def forget(self, session: str, participant: str) -> None:
        """Drop a participant's state (left the session)."""
        key = (session, participant)
        self._states.pop(key, None)
        if self._backend is not None:
            self._backend.forget(f"{session}/{participant}")
        self._vad.forget(f"{session}/{participant}")

    def evict_idle(self, *, max_idle_s: float, now: float | None = None) -> int:
        """Forget participants without media for ``max_idle_s`` of wall time; returns how many."""
        cutoff = (wall_clock() if now is None else now) - max_idle_s
        idle = [key for key, state in self._states.items() if state.last_wall < cutoff]
        for session, participant in idle:
            self.forget(session, participant)
        return len(idle)

    # -- processing ------------------------------------------------------------------------

    def process(self, batch: Sequence[MediaMessage], *, received: Sequence[float] | None = None) -> list[ScoreEvent]:
        """Score a batch (any mix of participants and kinds); ``received`` = wall time each arrived."""
        if self._model is None:
            raise RuntimeError("InferenceEngine used before load()")
        started = time.perf_counter()
        now = wall_clock()
        recv = list(received) if received is not None else [now] * len(batch)
        order = sorted(range(len(batch)), key=lambda i: (batch[i].media_time, batch[i].kind != "audio"))
        audio = [(batch[i], recv[i]) for i in order if isinstance(batch[i], AudioChunk)]
        video = [(batch[i], recv[i]) for i in order if isinstance(batch[i], VideoFrame)]
        pending: list[_Pending] = []
        t0 = time.perf_counter()
        audio_feats = self._audio_features(audio)  # type: ignore[arg-type]
        t1 = time.perf_counter()
        self._video_steps(video, pending)  # type: ignore[arg-type]
        t2 = time.perf_counter()
        # Audio-only steps are decided after this batch's frames are known (camera on or off).
        self._audio_steps(audio_feats, pending)
        events = self._fuse(pending)
        t3 = time.perf_counter()
        if self._metrics is not None and batch:
            m = self._metrics
            m.inference_seconds.labels("audio").observe(t1 - t0)
            m.inference_seconds.labels("perception").observe(t2 - t1)
            m.inference_seconds.labels("fusion").observe(t3 - t2)
            m.inference_seconds.labels("total").observe(t3 - started)
            m.inference_item_seconds.labels(self.device.type).observe((t3 - started) / len(batch))
            if self.device.type == "cuda":
                m.inference_gpu_memory_bytes.set(torch.cuda.memory_allocated(self.device))
        return events

    def flush(self) -> list[ScoreEvent]:
        """Score audio held back while waiting for a first frame (call at the end of a file)."""
        pending: list[_Pending] = []
        for state in self._states.values():
            if state.last_video_time is None:
                for chunk, feats, recv in state.pending_audio:
                    pending.append(self._audio_only_step(state, chunk, feats, recv))
            state.pending_audio.clear()
        return self._fuse(pending)

    def _state(self, msg: MediaMessage) -> ParticipantState:
        key = (msg.session, msg.participant)
        state = self._states.get(key)
        if state is None:
            s = self.settings
            state = ParticipantState(
                session=msg.session,
                participant=msg.participant,
                role=msg.role,
                window_steps=s.window_steps,
                calibration_s=s.calibration_s,
                baseline_limit_deg=s.baseline_limit_deg,
            )
            self._states[key] = state
            log.info("participant state %s -> %s", "none", "tracked", extra=pii(participant=msg.participant))
        return state

    def _audio_features(
        self, items: Sequence[tuple[AudioChunk, float]]
    ) -> list[tuple[AudioChunk, AudioFeatures, float]]:
        """VAD (batched across participants), level and log-mel per chunk; stored per participant."""
        if not items:
            return []
        waves = [to_16k(chunk.waveform(), chunk.sample_rate) for chunk, _ in items]
        probs = self._vad.process([(f"{c.session}/{c.participant}", w) for (c, _), w in zip(items, waves, strict=True)])
        out = []
        for (chunk, recv), wave, prob in zip(items, waves, probs, strict=True):
            state = self._state(chunk)
            state.seen(chunk.media_time, recv)
            feats = AudioFeatures(
                media_time=chunk.media_time,
                end_time=chunk.media_time + chunk.duration,
                voice_prob=prob,
                rms_dbfs=rms_dbfs(wave),
                mel_db=tuple(self._mel.bands(wave)),
            )
            state.audio.append(feats)
            out.append((chunk, feats, recv))
        return out

    def _audio_steps(self, items: Sequence[tuple[AudioChunk, AudioFeatures, float]], pending: list[_Pending]) -> None:
        """Steps for participants whose camera is off (or who have no video at all)."""
        s = self.settings
        for chunk, feats, recv in items:
            state = self._state(chunk)
            off = state.camera_off(chunk.media_time, off_after=s.camera_off_after_s, grace=s.audio_grace_s)
            if state.last_video_time is None and not off:
                state.pending_audio.append((chunk, feats, recv))  # a first frame may still come
                continue
            if off:
                for held, held_feats, held_recv in state.pending_audio:
                    pending.append(self._audio_only_step(state, held, held_feats, held_recv))
                state.pending_audio.clear()
                pending.append(self._audio_only_step(state, chunk, feats, recv))

    def _audio_only_step(
        self, state: ParticipantState, chunk: AudioChunk, feats: AudioFeatures, recv: float
    ) -> _Pending:
        step = audio_only_step(feats)
        window = state.push(step)
        return _Pending(state, chunk, recv, window, step.snapshot, False, False, True, 2 * chunk.seq + 1)

    def _video_steps(self, items: Sequence[tuple[VideoFrame, float]], pending: list[_Pending]) -> None:
        """Perception in rounds: round k holds the k-th frame of every participant in the batch.

        Each round is one backend call (batched across participants), and a participant's next
        frame is planned (pose or not) only after its previous frame's result is in its state.
        """
        if not items:
            return
        assert self._backend is not None
        queues: dict[tuple[str, str], list[tuple[VideoFrame, float]]] = {}
        for frame, recv in items:
            queues.setdefault((frame.session, frame.participant), []).append((frame, recv))
        rounds = max(len(q) for q in queues.values())
        for k in range(rounds):
            batch = [q[k] for q in queues.values() if len(q) > k]
            requests: list[PerceptionRequest] = []
            states: list[ParticipantState] = []
            for frame, recv in batch:
                state = self._state(frame)
                state.seen(frame.media_time, recv)
                prev_face = bool(state.window) and state.window[-1][0][IDX["face_present"]] > 0.5
                want_pose = prev_face and pose_due(state, self.settings)
                key = f"{frame.session}/{frame.participant}"
                requests.append(PerceptionRequest(key=key, image=frame.image(), want_pose=want_pose))
                states.append(state)
            results = self._backend.analyze(requests)
            for (frame, recv), req, state, result in zip(batch, requests, states, results, strict=True):
                pending.append(self._video_step(state, frame, recv, req.image, result))

    def _video_step(
        self, state: ParticipantState, frame: VideoFrame, recv: float, image: NDArray[np.uint8], res: PerceptionResult
    ) -> _Pending:
        step, mic_on = video_step(state, frame, image, res, self.settings)
        window = state.push(step)
        present = res.face is not None
        return _Pending(state, frame, recv, window, step.snapshot, present, True, mic_on, 2 * frame.seq)

    def _fuse(self, pending: list[_Pending]) -> list[ScoreEvent]:
        if not pending:
            return []
        model = self.model
        x = torch.from_numpy(np.stack([p.window[0] for p in pending])).to(self.device)
        m = torch.from_numpy(np.stack([p.window[1] for p in pending])).to(self.device)
        v = torch.from_numpy(np.stack([p.window[2] for p in pending])).to(self.device)
        with torch.inference_mode():
            out = model(x, m, v)
        probs = out.probs.float().cpu().numpy()
        conf = out.confidence.float().cpu().numpy()
        contrib = out.contributions.float().cpu().numpy()
        events = []
        for i, p in enumerate(pending):
            msg = p.msg
            heads = dict(zip(HEADS, probs[i].tolist(), strict=True))
            events.append(
                ScoreEvent(
                    event_id=ScoreEvent.make_id(msg.session, msg.participant, p.seq),
                    session=msg.session,
                    participant=msg.participant,
                    role=msg.role,
                    seq=p.seq,
                    media_time=msg.media_time,
                    present=p.present,
                    attentive=p.present and heads["attentive"] > 0.5,
                    speaking=p.mic_on and heads["speaking"] > 0.5,
                    hand_raised=heads["hand_raised"] > 0.5,
                    camera_on=p.camera_on,
                    mic_on=p.mic_on,
                    engagement=min(1.0, max(0.0, round(heads["engagement"], 4))),
                    confidence=min(1.0, max(0.0, round(float(conf[i]), 4))),
                    contributions=_contributions(contrib[i]),
                    features=p.snapshot,
                    timing=msg.timing.stamped("inference", received=p.received),
                )
            )
        return events


def _contributions(row: NDArray[np.float32]) -> dict[str, float]:
    """Named contributions; the log-mel bands are summed into one ``voice_spectrum`` entry."""
    out: dict[str, float] = {}
    spectrum = 0.0
    for name, value in zip(SIGNALS, row.tolist(), strict=True):
        if name.startswith("mel_"):
            spectrum += value
        elif abs(value) >= 1e-4:
            out[name] = round(value, 4)
    if abs(spectrum) >= 1e-4:
        out["voice_spectrum"] = round(spectrum, 4)
    return out
