"""Engine step rules: frames drive steps, audio drives them only with the camera off; stable ids."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pytest

from services.inference.engine import InferenceEngine
from services.inference.perception import PerceptionRequest, PerceptionResult
from services.inference.settings import InferenceSettings
from shared.contracts.media import MediaMessage
from shared.testkit.messages import chunks, frames
from shared.testkit.speech import speech_scene
from tests.perception_fakes import NoFaces

pytestmark = pytest.mark.unit




def engine() -> InferenceEngine:
    e = InferenceEngine(settings=InferenceSettings(), backend=NoFaces())
    e.load()
    return e


def media(video_s: float, audio_s: float, participant: str = "p") -> list[MediaMessage]:
    image = np.zeros((48, 64, 3), np.uint8)
    vids = frames([image] * int(video_s * 5), session="s", participant=participant)
    wave, _ = speech_scene([(0.5, "hello everyone")], seconds=audio_s, snr_db=None)
    auds = chunks(wave, session="s", participant=participant, chunk_s=0.5)
    return sorted([*vids, *auds], key=lambda m: (m.media_time, m.kind != "audio"))


def test_audio_and_video_in_one_batch_give_one_step_per_frame() -> None:
    msgs = media(3.0, 3.0)
    events = engine().process(msgs)
    assert len(events) == sum(1 for m in msgs if m.kind == "video")
    assert all(e.camera_on and e.mic_on for e in events)
    assert sorted(e.seq for e in events) == [2 * i for i in range(15)]


def test_camera_off_mid_stream_switches_to_audio_steps() -> None:
    msgs = media(2.0, 5.0)
    e = engine()
    events = [ev for i in range(0, len(msgs), 4) for ev in e.process(msgs[i : i + 4])]
    video = [ev for ev in events if ev.camera_on]
    audio = [ev for ev in events if not ev.camera_on]
    assert len(video) == 10
    assert audio and min(ev.media_time for ev in audio) >= 1.8 + 1.0  # camera off after 1 s without frames
    assert all(not ev.present and ev.seq % 2 == 1 for ev in audio)


def test_event_ids_are_stable_when_media_is_redelivered() -> None:
    msgs = media(2.0, 2.0, participant="again")
    first = {ev.event_id for ev in engine().process(msgs)}
    time.sleep(0.01)
    second = {ev.event_id for ev in engine().process(msgs)}
    assert first == second and len(first) == 10


def test_audio_only_participant_is_held_for_the_grace_then_scored() -> None:
    wave, _ = speech_scene([(0.2, "hi")], seconds=2.0, snr_db=None)
    e = engine()
    early = e.process(chunks(wave, session="s", participant="voice", chunk_s=0.25)[:1])
    assert early == []  # a first frame may still come
    rest = e.process(chunks(wave, session="s", participant="voice", chunk_s=0.25)[1:]) + e.flush()
    assert len(rest) == 8 and all(not ev.camera_on for ev in rest)


def test_device_choice() -> None:
    import torch

    from services.inference.fusion_runtime import resolve_device

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda")


def test_blinks_per_minute_from_eye_aspect_ratio() -> None:
    from services.inference.state import ParticipantState

    state = ParticipantState(
        session="s", participant="p", role="student", window_steps=8, calibration_s=3, baseline_limit_deg=20
    )
    state.calibrate(0.0, 0.0, 0.0)  # first face at t=0
    rates = []
    for i in range(150):  # 30 s at 5 fps, eyes closed for one frame every 3 s -> 20 blinks/min
        t = i / 5
        rates.append(state.observe_eyes(0.08 if i % 15 == 7 else 0.3, t))
    assert rates[10] is None  # under 10 s of face time: no rate yet
    assert state.blinks == 10
    assert rates[-1] == pytest.approx(20.0, abs=2.5)


def test_wrist_above_shoulder_rule() -> None:
    from services.inference.features_video import wrist_above_shoulder
    from services.inference.perception import PoseObservation

    lm = np.zeros((33, 4), np.float32)
    lm[:, 3] = 0.9
    lm[11, :2], lm[12, :2] = (300, 300), (200, 300)  # shoulders at y=300, 100 px apart
    lm[15, :2], lm[16, :2] = (310, 420), (190, 430)  # wrists down
    assert not wrist_above_shoulder(PoseObservation(landmarks=lm.copy()))
    lm[15, :2] = (320, 250)  # one wrist raised above the shoulder line
    assert wrist_above_shoulder(PoseObservation(landmarks=lm.copy()))
    lm[15, 3] = 0.1  # ... but not visible
    assert not wrist_above_shoulder(PoseObservation(landmarks=lm.copy()))
    lm[15, 3], lm[15, 1] = 0.9, 295  # visible but only at shoulder height (within the margin)
    assert not wrist_above_shoulder(PoseObservation(landmarks=lm.copy()))


class FaceBoxOnly:
    """A face is 'found' in every frame (no mesh); counts how often pose is requested."""

    name = "face-box"

    def __init__(self) -> None:
        self.pose_requests = 0

    def load(self) -> None:
        return None

    def analyze(self, requests: Sequence[PerceptionRequest]) -> list[PerceptionResult]:
        from services.inference.perception import FaceObservation

        self.pose_requests += sum(r.want_pose for r in requests)
        face = FaceObservation(box=(10.0, 10.0, 40.0, 40.0), score=0.9, landmarks=None)
        return [PerceptionResult(face=face, pose=None, pose_ran=r.want_pose) for r in requests]

    def forget(self, key: str) -> None:
        return None

    def close(self) -> None:
        return None


def test_pose_runs_every_nth_frame_only_when_something_moved() -> None:
    still = np.full((48, 64, 3), 100, np.uint8)
    moving = [np.full((48, 64, 3), 100 + 60 * (i % 2), np.uint8) for i in range(60)]
    counts = {}
    for name, images in (("still", [still] * 60), ("moving", moving)):
        backend = FaceBoxOnly()
        e = InferenceEngine(settings=InferenceSettings(pose_every=5, pose_max_interval=25), backend=backend)
        e.load()
        events = e.process(frames(images, session="s", participant=name))
        assert all(ev.present for ev in events)
        counts[name] = backend.pose_requests
    assert counts["moving"] == 11  # frames 5, 10 .. 55 (frame 0 comes before any face is known)
    assert 2 <= counts["still"] <= 3  # first look, then the 25-frame safety check


def test_idle_participants_are_forgotten() -> None:
    e = engine()
    e.process(media(1.0, 1.0, participant="gone"))
    assert ("s", "gone") in e.participants()
    assert e.evict_idle(max_idle_s=60.0) == 0
    assert e.evict_idle(max_idle_s=60.0, now=time.time() + 120.0) == 1
    assert e.participants() == []


def test_threaded_perception_keeps_order_and_participant_affinity() -> None:
    from services.inference.perception_pool import ThreadedPerception

    seen: list[tuple[int, str]] = []

    class Recorder(NoFaces):
        def __init__(self, ident: int) -> None:
            super().__init__()
            self.ident = ident

        def analyze(self, requests: Sequence[PerceptionRequest]) -> list[PerceptionResult]:
            seen.extend((self.ident, r.key) for r in requests)
            return [PerceptionResult(face=None, pose=None, pose_ran=r.key.endswith("7")) for r in requests]

    made = iter(range(3))
    pool = ThreadedPerception(factory=lambda: Recorder(next(made)), workers=3)
    pool.load()
    image = np.zeros((8, 8, 3), np.uint8)
    for _ in range(3):
        reqs = [PerceptionRequest(key=f"s/p{i}", image=image, want_pose=False) for i in range(10)]
        results = pool.analyze(reqs)
        assert [r.pose_ran for r in results] == [i == 7 for i in range(10)]  # results in request order
    pool.close()
    owners: dict[str, set[int]] = {}
    for ident, key in seen:
        owners.setdefault(key, set()).add(ident)
    assert all(len(v) == 1 for v in owners.values())  # a participant always on the same instance
    assert len({ident for ident, _ in seen}) > 1  # the work was spread


def test_a_batchs_vad_windows_are_kept_once_and_segment_like_a_second_vad_pass() -> None:
    """Live worker with a transcribe stage: the segmenter reuses the engine's silero-vad windows.

    Two participants' chunks interleaved, several of one participant per batch, chunk lengths off
    the 512-sample grid (samples carry over between chunks and between batches)."""
    from services.inference.features_audio import SileroVad
    from services.inference.transcribe.segments import SegmentRules, SegmentTracker

    wave, _ = speech_scene([(0.4, "Good morning everyone."), (3.2, "Can you hear me?")], seconds=5.5, snr_db=10.0)
    msgs = [c for p in ("a", "b") for c in chunks(wave, session="s", participant=p, chunk_s=0.37)]
    msgs.sort(key=lambda m: (m.media_time, m.participant))
    e = engine()
    e.keep_vad_windows = True
    for i in range(0, len(msgs), 5):
        e.process(msgs[i : i + 5])
    rules = SegmentRules(threshold=0.5, hangover_s=0.5, pad_s=0.2, min_speech_s=0.25, max_segment_s=15.0)
    silero = SileroVad()
    silero.load()

    class Refused:
        def process(self, items: Sequence[object]) -> list[float]:
            raise AssertionError("the segmenter ran silero-vad again: the engine's windows did not line up")

    for p in ("a", "b"):
        own, shared = SegmentTracker(rules=rules), SegmentTracker(rules=rules)
        a, b = [], []
        for c in (m for m in msgs if m.participant == p):
            kept = e.take_vad_windows(c)
            assert kept is not None and e.take_vad_windows(c) is None  # taken once
            a += own.feed(c.waveform(), c.media_time, silero)
            b += shared.feed(c.waveform(), c.media_time, Refused(), kept)  # type: ignore[arg-type]
        a += own.flush()
        b += shared.flush()
        assert len(a) == 2 and [(s.start, s.end) for s in a] == [(s.start, s.end) for s in b]


def test_kept_vad_windows_are_bounded_oldest_first() -> None:
    from services.inference.features_audio import KeptWindows, VadWindows

    kept = KeptWindows(limit=3)
    audio = chunks(np.zeros(8000 * 5, np.float32), session="s", participant="p", chunk_s=0.5)
    for c in audio:
        kept.put(c, VadWindows(carried=0, probs=(float(c.seq),)))
    assert len(kept) == 3 and kept.take(audio[0]) is None and kept.take(audio[1]) is None
    assert kept.take(audio[4]) == VadWindows(carried=0, probs=(4.0,))
