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
``seq = 2 * chunk.seq + 1``, so a redelivered message yields the same ``event_id``; the media's
publish ``epoch`` is carried along (and into the id), so a reconnect's steps never repeat an id.

Interaction events (chat, questions ...) enter by :meth:`InferenceEngine.add_interaction`
(``services.inference.interactions.InteractionIntake`` feeds it from ``classpulse.interactions``)
and become the text signals of the steps after them (``asked_question``, ``chat_activity``).

Everything kept about a participant is its :class:`~services.inference.state.ParticipantState`
(the models are shared and stateless); :meth:`InferenceEngine.snapshot` and
:meth:`InferenceEngine.restore` move one between engines::

    data = engine.snapshot("s1", "p7")     # bytes
    other.restore(data)                    # continues exactly as ``engine`` would
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from services.inference.features_audio import KeptWindows, LogMel, SileroVad, VadWindows, rms_dbfs, to_16k
from services.inference.fusion_layout import HEADS, IDX, SIGNALS
from services.inference.fusion_numpy import NumpyFusion
from services.inference.fusion_runtime import TorchFusion, load_fusion, resolve_device
from services.inference.perception import PerceptionBackend, PerceptionRequest, PerceptionResult, backend_device
from services.inference.perception_registry import build_backend
from services.inference.settings import InferenceSettings
from services.inference.state import AudioFeatures, HeldAudio, ParticipantState, Step
from services.inference.state_snapshot import SnapshotError
from services.inference.steps import audio_only_step, pose_due, video_step
from services.inference.text_state import TextActivity
from shared.contracts.events import FeatureSnapshot, ScoreEvent
from shared.contracts.interactions import InteractionEvent
from shared.contracts.media import AudioChunk, MediaMessage, VideoFrame
from shared.contracts.report import AnalysisInfo
from shared.contracts.timing import wall_clock
from shared.log import get_logger, pii
from shared.metrics import Metrics

log = get_logger(__name__)
EARLY_TEXT_MAX = 10_000
"""Participants whose interactions are kept until their first media arrives (oldest forgotten)."""


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
        self._fusion: NumpyFusion | TorchFusion | None = None
        self.device = "cpu"
        """Where fusion runs ('cpu': numpy; 'cuda': the torch model), known after :meth:`load`."""
        self.analysis = AnalysisInfo(backend=settings.backend, device="cpu")
        """Which perception backend and device analyse (known after :meth:`load`; the report's ``analysis``)."""
        self._states: dict[tuple[str, str], ParticipantState] = {}
        self._states_lock = threading.Lock()  # prepare_audio may add a state from another thread
        self._audio_lock = threading.Lock()
        self._audio_loaded = False
        self.keep_vad_windows = False
        """Keep each chunk's VAD window probabilities for :meth:`take_vad_windows` (replay and a live worker
        with a transcribe stage: it segments speech on them instead of running silero-vad a second time)."""
        self._vad_windows = KeptWindows()
        self._hold_order = itertools.count(1)
        self._text_lock = threading.Lock()  # interactions arrive on the event loop, steps run in a thread
        self._early_text: OrderedDict[tuple[str, str], TextActivity] = OrderedDict()

    # -- lifecycle -------------------------------------------------------------------------

    def load(self) -> None:
        """Load perception models, silero-vad, log-mel and the fusion model (explicit, not at init)."""
        started = time.perf_counter()
        if self._backend is None:
            self._backend = build_backend(self.settings)
        self._backend.load()
        self._load_audio()
        self.device = resolve_device(self.settings.device)
        self._fusion = load_fusion(self.settings, self.device)
        self.analysis = AnalysisInfo(backend=self.settings.backend, device=backend_device(self._backend))
        if self._metrics is not None:
            self._metrics.inference_device.labels(self.device).set(1)
            self._metrics.analysis_info.labels(self.analysis.backend, self.analysis.device).set(1)
        log.info("inference engine %s -> %s", "loading", "ready", extra={"seconds": time.perf_counter() - started})

    def _load_audio(self) -> None:
        with self._audio_lock:
            if not self._audio_loaded:
                self._vad.load()
                self._mel.load()
                self._audio_loaded = True

    def prepare_audio(self, chunk: AudioChunk) -> None:
        """Compute a chunk's VAD/level/log-mel ahead of :meth:`process` (file replay: in the decode thread).

        Any thread may call it (onnxruntime releases the GIL, so it overlaps with perception),
        but a participant's chunks must come in media order, all of them through here, before
        ``process`` sees them; the results are exactly those ``process`` would compute.
        """
        self._load_audio()
        state = self._state(chunk)
        with self._audio_lock:
            wave = to_16k(chunk.waveform(), chunk.sample_rate)
            ((prob, windows),) = self._vad.process_kept([(state.vad, wave)])
            state.ahead[chunk.seq] = (prob, rms_dbfs(wave), tuple(self._mel.bands(wave)))
            if self.keep_vad_windows:
                self._vad_windows.put(chunk, windows)

    def take_vad_windows(self, chunk: AudioChunk) -> VadWindows | None:
        """The VAD windows computed for ``chunk`` (once; None when none were kept). Never waits for a batch."""
        return self._vad_windows.take(chunk)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()

    @property
    def fusion(self) -> NumpyFusion | TorchFusion:
        if self._fusion is None:
            raise RuntimeError("InferenceEngine used before load()")
        return self._fusion

    def participants(self) -> list[tuple[str, str]]:
        with self._states_lock:
            return list(self._states)

    def forget(self, session: str, participant: str) -> None:
        """Drop a participant's state (left the session)."""
        with self._states_lock:
            self._states.pop((session, participant), None)
        if self._backend is not None:
            self._backend.forget(f"{session}/{participant}")

    def evict_idle(self, *, max_idle_s: float, now: float | None = None) -> int:
        """Forget participants without media for ``max_idle_s`` of wall time; returns how many."""
        cutoff = (wall_clock() if now is None else now) - max_idle_s
        idle = [state.key for state in self._all_states() if state.last_wall < cutoff]
        for session, participant in idle:
            self.forget(session, participant)
        return len(idle)

    def snapshot(self, session: str, participant: str) -> bytes:
        """A participant's whole state as bytes (:meth:`ParticipantState.snapshot`), between process calls."""
        with self._states_lock:
            state = self._states.get((session, participant))
        if state is None:
            raise KeyError(f"no state for participant {session}/{participant}")
        with self._audio_lock:  # a consistent VAD stream and features computed ahead
            return state.snapshot()

    def restore(self, data: bytes) -> tuple[str, str]:
        """Adopt a participant's state from :meth:`snapshot` (replacing any held here); returns its key.

        Raises :class:`~services.inference.state_snapshot.SnapshotError` for a corrupt snapshot, one of
        another version, or one taken with a different fusion window.
        """
        state = ParticipantState.restore(data)
        if state.window_steps != self.settings.window_steps:
            raise SnapshotError(
                f"participant snapshot has a {state.window_steps}-step fusion window; "
                f"this engine uses {self.settings.window_steps} (CLASSPULSE_INFERENCE_WINDOW_STEPS)"
            )
        if state.held:
            state.held_since = next(self._hold_order)
        if self._backend is not None:
            self._backend.forget(state.track.key)  # no cached tracking graph from an earlier stay
        with self._states_lock:
            self._states[state.key] = state
        log.info("participant state %s -> %s", "snapshot", "tracked", extra=pii(participant=state.participant))
        return state.key

    def add_interaction(self, event: InteractionEvent) -> bool:
        """Take one interaction event (chat, question ...) into its participant's text features.

        Any thread may call it. Only derived fields are kept (never the text); a participant
        without media yet keeps them until its first media. False for a repeated event.
        """
        key = (event.session, event.participant)
        with self._states_lock:
            state = self._states.get(key)
        with self._text_lock:
            if state is not None:
                return state.text.add(event)
            activity = self._early_text.pop(key, None) or TextActivity()
            self._early_text[key] = activity
            while len(self._early_text) > EARLY_TEXT_MAX:
                self._early_text.popitem(last=False)
            return activity.add(event)

    def _put_text(self, state: ParticipantState, step: Step, msg: MediaMessage) -> None:
        with self._text_lock:
            state.text.put(step.vector, step.measured, at=msg.timing.capture_ts)

    def _all_states(self) -> list[ParticipantState]:
        with self._states_lock:
            return list(self._states.values())

    # -- processing ------------------------------------------------------------------------

    def process(
        self,
        batch: Sequence[MediaMessage],
        *,
        received: Sequence[float] | None = None,
        skipped: Sequence[VideoFrame] = (),
    ) -> list[ScoreEvent]:
        """Score a batch (any mix of participants and kinds); ``received`` = wall time each arrived.

        ``skipped`` are frames that arrived but are not analysed (the live worker thins frames
        under overload): they make no step, but show that the camera is on at their media time.
        """
        if self._fusion is None:
            raise RuntimeError("InferenceEngine used before load()")
        started = time.perf_counter()
        now = wall_clock()
        recv = list(received) if received is not None else [now] * len(batch)
        batch, recv, skipped = self._admit(batch, recv, skipped)
        order = sorted(range(len(batch)), key=lambda i: (batch[i].media_time, batch[i].kind != "audio"))
        audio = [(batch[i], recv[i]) for i in order if isinstance(batch[i], AudioChunk)]
        video = [(batch[i], recv[i]) for i in order if isinstance(batch[i], VideoFrame)]
        if skipped:
            video = sorted([*video, *((f, now) for f in skipped)], key=lambda v: v[0].media_time)
        pending: list[_Pending] = []
        t0 = time.perf_counter()
        audio_feats = self._audio_features(audio)  # type: ignore[arg-type]
        t1 = time.perf_counter()
        for state, held in audio_feats:
            if not state.held:
                state.held_since = next(self._hold_order)
            state.held.append(held)
        self._video_steps(video, pending, skip={id(f) for f in skipped})  # type: ignore[arg-type]
        t2 = time.perf_counter()
        self._release_by_audio_clock(pending)
        events = self._fuse(pending)
        t3 = time.perf_counter()
        if self._metrics is not None and batch:
            m = self._metrics
            m.inference_seconds.labels("audio").observe(t1 - t0)
            m.inference_seconds.labels("perception").observe(t2 - t1)
            m.inference_seconds.labels("fusion").observe(t3 - t2)
            m.inference_seconds.labels("total").observe(t3 - started)
            m.inference_item_seconds.labels(self.device).observe((t3 - started) / len(batch))
            if self.device == "cuda":
                import torch

                m.inference_gpu_memory_bytes.set(torch.cuda.memory_allocated(self.device))
        return events

    def _admit(
        self, batch: Sequence[MediaMessage], recv: list[float], skipped: Sequence[VideoFrame]
    ) -> tuple[list[MediaMessage], list[float], list[VideoFrame]]:
        """Only media its participant's state has not taken in yet (per kind, by epoch and seq).

        A repeat (media redelivered after the state took it in: a retried batch, a claim of entries this
        state already processed) would hold an audio chunk twice or step a frame twice: it is dropped and
        counted (``classpulse_media_dropped_total{reason="repeated"}``). Media arriving after newer media
        (a dead worker's pending entries, claimed after its successor read on) is not a repeat: it is scored.
        """
        items = [(m, r, False) for m, r in zip(batch, recv, strict=True)] + [(f, 0.0, True) for f in skipped]
        items.sort(key=lambda t: (t[0].epoch, t[0].seq))
        keep: list[MediaMessage] = []
        keep_recv: list[float] = []
        keep_skipped: list[VideoFrame] = []
        repeated = 0
        for msg, r, skip in items:
            if not self._state(msg).take(msg.kind, msg.epoch, msg.seq):
                repeated += 1
            elif skip:
                assert isinstance(msg, VideoFrame)
                keep_skipped.append(msg)
            else:
                keep.append(msg)
                keep_recv.append(r)
        if repeated:
            log.info("media %s -> %s", "repeated", "dropped", extra={"count": repeated})
            if self._metrics is not None:
                self._metrics.media_dropped_total.labels("repeated").inc(repeated)
        return keep, keep_recv, keep_skipped

    def flush(self) -> list[ScoreEvent]:
        """Score audio still held back (call at the end of a file): decided with the frames known now."""
        pending: list[_Pending] = []
        for state in self._holding():
            self._resolve(state, pending, upto=None)
        return self._fuse(pending)

    def _holding(self) -> list[ParticipantState]:
        """Participants with held audio, in the order they started holding it."""
        return sorted((st for st in self._all_states() if st.held), key=lambda st: st.held_since)

    def _state(self, msg: MediaMessage) -> ParticipantState:
        key = (msg.session, msg.participant)
        with self._states_lock:
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
                    last_wall=wall_clock(),
                )
                with self._text_lock:
                    if key in self._early_text:
                        state.text = self._early_text.pop(key)
                self._states[key] = state
                log.info("participant state %s -> %s", "none", "tracked", extra=pii(participant=msg.participant))
        return state

    def _audio_features(self, items: Sequence[tuple[AudioChunk, float]]) -> list[tuple[ParticipantState, HeldAudio]]:
        """VAD (batched across participants), level and log-mel per chunk; stored per participant."""
        if not items:
            return []
        states = [self._state(chunk) for chunk, _ in items]
        with self._audio_lock:
            ahead = [st.ahead.pop(c.seq, None) for st, (c, _) in zip(states, items, strict=True)]
            todo = [i for i, a in enumerate(ahead) if a is None]
            if todo:
                waves = [to_16k(items[i][0].waveform(), items[i][0].sample_rate) for i in todo]
                kept = self._vad.process_kept([(states[i].vad, wave) for i, wave in zip(todo, waves, strict=True)])
                for i, wave, (prob, windows) in zip(todo, waves, kept, strict=True):
                    ahead[i] = (prob, rms_dbfs(wave), tuple(self._mel.bands(wave)))
                    if self.keep_vad_windows:
                        self._vad_windows.put(items[i][0], windows)
        out = []
        for state, (chunk, recv), computed in zip(states, items, ahead, strict=True):
            assert computed is not None
            prob, level, mel = computed
            state.seen(chunk.media_time, recv)
            feats = AudioFeatures(
                media_time=chunk.media_time,
                end_time=chunk.media_time + chunk.duration,
                voice_prob=prob,
                rms_dbfs=level,
                mel_db=mel,
            )
            state.audio.append(feats)
            out.append((state, HeldAudio(chunk=chunk, features=feats, received=recv)))
        return out

    def _resolve(self, state: ParticipantState, pending: list[_Pending], *, upto: float | None) -> None:
        """Decide held audio chunks starting at or before ``upto`` (all when None): camera off or not.

        Called before a frame at ``upto`` is analysed (so every frame before the chunk is known
        and its step lands in media order), when the audio clock has moved on, and by flush().
        Before any frame: off when the first frame comes ``audio_grace_s`` or more after the
        participant's first media (or never comes); later: off when the last frame is
        ``camera_off_after_s`` or more before the chunk. Chunks with the camera on make no step
        (the frames carry their audio). The outcome never depends on how media is batched.
        """
        held = state.held
        if not held:
            return
        s = self.settings
        n = len(held) if upto is None else sum(1 for h in held if h.chunk.media_time <= upto + 1e-6)
        first = state.first_time if state.first_time is not None else held[0].chunk.media_time
        for h in held[:n]:
            if state.last_video_time is None:
                off = upto is None or upto - first >= s.audio_grace_s
            else:
                off = h.chunk.media_time - state.last_video_time >= s.camera_off_after_s
            if off:
                pending.append(self._audio_only_step(state, h))
        del held[:n]

    def _release_by_audio_clock(self, pending: list[_Pending]) -> None:
        """Decide held chunks no frame came for while the audio moved ``audio_grace_s`` past them."""
        grace = self.settings.audio_grace_s
        for state in self._holding():
            newest = state.audio[-1].media_time if state.audio else None
            if newest is None:
                continue
            if state.last_video_time is None:
                first = state.first_time if state.first_time is not None else newest
                if newest - first >= grace:
                    self._resolve(state, pending, upto=None)
            else:
                self._resolve(state, pending, upto=newest - grace)

    def _audio_only_step(self, state: ParticipantState, held: HeldAudio) -> _Pending:
        step = audio_only_step(held.features)
        self._put_text(state, step, held.chunk)
        window = state.push(step)
        chunk = held.chunk
        return _Pending(state, chunk, held.received, window, step.snapshot, False, False, True, 2 * chunk.seq + 1)

    def _video_steps(
        self, items: Sequence[tuple[VideoFrame, float]], pending: list[_Pending], *, skip: set[int]
    ) -> None:
        """Perception in rounds: round k holds the k-th frame of every participant in the batch.

        Each round is one backend call (batched across participants), and a participant's next
        frame is planned (pose or not) only after its previous frame's result is in its state.
        Frames in ``skip`` (by ``id``) are not analysed; they only mark the camera on.
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
                self._resolve(state, pending, upto=frame.media_time)  # earlier audio first: media order
                if id(frame) in skip:
                    state.last_video_time = frame.media_time
                    continue
                prev_face = bool(state.window) and state.window[-1][0][IDX["face_present"]] > 0.5
                want_pose = prev_face and pose_due(state, self.settings)
                requests.append(
                    PerceptionRequest(key=state.track.key, image=frame.image(), want_pose=want_pose, track=state.track)
                )
                states.append(state)
            if not requests:
                continue
            t0 = time.perf_counter()
            results = self._backend.analyze(requests)
            if self._metrics is not None:
                backend, device = self.analysis.backend, self.analysis.device
                self._metrics.perception_batch_size.labels(backend).observe(len(requests))
                self._metrics.perception_device_seconds.labels(backend, device).observe(time.perf_counter() - t0)
            analysed = [(frame, recv) for frame, recv in batch if id(frame) not in skip]
            for (frame, recv), req, state, result in zip(analysed, requests, states, results, strict=True):
                pending.append(self._video_step(state, frame, recv, req.image, result))

    def _video_step(
        self, state: ParticipantState, frame: VideoFrame, recv: float, image: NDArray[np.uint8], res: PerceptionResult
    ) -> _Pending:
        step, mic_on = video_step(state, frame, image, res, self.settings)
        self._put_text(state, step, frame)
        window = state.push(step)
        present = res.face is not None
        return _Pending(state, frame, recv, window, step.snapshot, present, True, mic_on, 2 * frame.seq)

    def _fuse(self, pending: list[_Pending]) -> list[ScoreEvent]:
        if not pending:
            return []
        out = self.fusion(
            np.stack([p.window[0] for p in pending]), np.stack([p.window[1] for p in pending]),
            np.stack([p.window[2] for p in pending]),
        )
        probs, conf, contrib = out.probs, out.confidence, out.contributions
        events = []
        for i, p in enumerate(pending):
            msg = p.msg
            heads = dict(zip(HEADS, probs[i].tolist(), strict=True))
            events.append(
                ScoreEvent(
                    event_id=ScoreEvent.make_id(msg.session, msg.participant, p.seq, msg.epoch),
                    session=msg.session,
                    participant=msg.participant,
                    role=msg.role,
                    epoch=msg.epoch,
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
