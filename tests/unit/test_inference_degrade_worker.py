"""Degradation in the worker and the engine: thinned frames are counted, fair, and keep the camera on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.inference.engine import InferenceEngine
from services.inference.perception import PerceptionRequest, PerceptionResult
from services.inference.settings import InferenceSettings
from services.inference.worker import InferenceWorker
from shared.contracts.codec import EventCodec, encode_media
from shared.contracts.events import ScoreEvent
from shared.contracts.media import VideoFrame
from shared.contracts.timing import TimingTrail
from shared.contracts.topics import INFERENCE_GROUP, SCORES
from shared.metrics import Metrics
from shared.testkit.messages import chunks, frames
from shared.testkit.speech import speech_scene
from shared.transport.factory import Transports
from shared.transport.memory import MemoryEventBus, MemoryLiveBus, MemoryMediaBus
from shared.transport.shards import participant_key

pytestmark = pytest.mark.unit


class SlowNoFaces:
    """Perception fake costing ``per_frame_s`` of wall time per frame (sleeps: the GIL is free)."""

    name = "slow-no-faces"

    def __init__(self, per_frame_s: float) -> None:
        self.per_frame_s = per_frame_s
        self.frames = 0

    def load(self) -> None:
        return None

    def analyze(self, requests: Sequence[PerceptionRequest]) -> list[PerceptionResult]:
        time.sleep(self.per_frame_s * len(requests))
        self.frames += len(requests)
        return [PerceptionResult(face=None, pose=None, pose_ran=r.want_pose) for r in requests]

    def forget(self, key: str) -> None:
        return None

    def close(self) -> None:
        return None


def _frame(session: str, participant: str, seq: int) -> VideoFrame:
    return VideoFrame.from_image(
        np.zeros((36, 64, 3), np.uint8),
        session=session,
        participant=participant,
        seq=seq,
        media_time=seq / 5.0,
        timing=TimingTrail(capture_ts=time.time()),
    )


async def test_an_overloaded_worker_thins_every_student_alike_and_counts_it() -> None:
    students, seconds = 10, 7.0
    metrics = Metrics(CollectorRegistry())
    media = MemoryMediaBus(maxlen=5000, metrics=metrics)
    events = MemoryEventBus()
    transports = Transports(media=media, events=events, live=MemoryLiveBus())
    # 10 students x 5 fps x 30 ms = 1.5 s of work per second: must degrade to about 2.5 fps.
    settings = InferenceSettings(batch_max=16, batch_wait_ms=20, read_block_ms=5, max_lag_ms=3000, min_fps=1.0)
    backend = SlowNoFaces(0.03)
    engine = InferenceEngine(settings=settings, metrics=metrics, backend=backend)
    engine.load()
    rates: list[float | None] = []  # what `classpulse up` relays to its ingest processes (thinning at the source)
    worker = InferenceWorker(
        engine=engine, transports=transports, settings=settings, metrics=metrics, consumer="w", on_rate=rates.append
    )
    await media.ensure_group(INFERENCE_GROUP)
    task = asyncio.create_task(worker.run())
    sent = 0
    try:
        start = time.monotonic()
        for seq in range(int(seconds * 5)):
            for s in range(students):
                await media.append(encode_media(_frame("deg", f"s{s}", seq)), key=participant_key("deg", f"s{s}"))
                sent += 1
            await asyncio.sleep(max(0.0, start + (seq + 1) / 5 - time.monotonic()))
        for _ in range(300):
            if await media.length() == 0 and len(worker._batcher) == 0:
                break
            await asyncio.sleep(0.02)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
    sample = metrics.registry.get_sample_value
    degraded = sample("classpulse_media_dropped_total", {"reason": "degraded"}) or 0.0
    stale = sample("classpulse_media_dropped_total", {"reason": "inference_stale"}) or 0.0
    target = sample("classpulse_inference_target_fps")
    analysed = sample("classpulse_inference_analysed_frames_total", {"session": "deg"})
    out = [EventCodec(ScoreEvent).decode(v) for _, v in events.records(SCORES.name)]
    assert degraded > 0.2 * sent, (degraded, stale, sent)
    assert target is not None and 1.0 <= target < 4.0
    assert rates and rates[-1] == target  # every change of the target was told
    assert analysed == len(out) == backend.frames
    assert degraded + stale + len(out) == sent  # every frame scored or counted as dropped
    assert await media.length() == 0
    per_student = [sum(1 for e in out if e.participant == f"s{s}") for s in range(students)]
    assert min(per_student) >= 0.8 * max(per_student), per_student  # fair
    assert min(per_student) >= seconds  # never below the 1 fps floor
    assert len({e.event_id for e in out}) == len(out)
    assert all(e.seq % 2 == 0 and e.camera_on for e in out)  # frame steps with their own ids
    assert sample("classpulse_inference_participants", {"session": "deg"}) == students


def test_thinned_frames_keep_the_camera_on_for_audio() -> None:
    """Frames seen but not analysed make no step, yet no audio reads as 'camera off' between them."""
    wave, _ = speech_scene([(0.3, "hello there, how are you")], seconds=4.0, snr_db=None)
    settings = InferenceSettings(camera_off_after_s=1.0)

    def run(pass_skipped: bool) -> list[ScoreEvent]:
        engine = InferenceEngine(settings=settings, backend=SlowNoFaces(0.0))
        engine.load()
        video = frames([np.zeros((36, 64, 3), np.uint8)] * 20, session="k", participant="p")
        audio = chunks(wave, session="k", participant="p")
        kept = [f for f in video if f.seq % 10 == 0]  # 0.5 fps analysed: gaps of 2 s
        skipped = [f for f in video if f.seq % 10 != 0]
        out: list[ScoreEvent] = []
        for t in range(4):  # one batch per second of media
            part = [m for m in (*kept, *audio) if t <= m.media_time < t + 1]
            thin = [f for f in skipped if t <= f.media_time < t + 1]
            out += engine.process(part, skipped=thin if pass_skipped else ())
        return out + engine.flush()

    with_skipped = run(True)
    assert sorted(e.seq for e in with_skipped) == [0, 20]  # the two analysed frames only
    assert all(e.camera_on for e in with_skipped)
    without = run(False)  # the same frames simply missing: the engine decides "camera off"
    assert any(not e.camera_on for e in without)
