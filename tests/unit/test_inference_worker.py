"""The worker on in-memory transports: batches across streams, publishes scores + live state, acks media."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.inference.engine import InferenceEngine
from services.inference.settings import InferenceSettings
from services.inference.worker import InferenceWorker
from shared.contracts.codec import EventCodec, encode_media
from shared.contracts.events import ScoreEvent
from shared.contracts.media import AudioChunk
from shared.contracts.timing import TimingTrail
from shared.contracts.topics import INFERENCE_GROUP, SCORES
from shared.metrics import Metrics
from shared.testkit.messages import frames
from shared.testkit.speech import speech_scene
from shared.transport.factory import Transports
from shared.transport.live import read_state
from shared.transport.memory import MemoryEventBus, MemoryLiveBus, MemoryMediaBus
from tests.perception_fakes import NoFaces

pytestmark = pytest.mark.unit




async def test_worker_batches_across_streams_publishes_and_acks() -> None:
    metrics = Metrics(CollectorRegistry())
    media = MemoryMediaBus(maxlen=1000, metrics=metrics)
    events, live = MemoryEventBus(), MemoryLiveBus()
    transports = Transports(media=media, events=events, live=live)
    settings = InferenceSettings(batch_max=8, batch_wait_ms=20, read_block_ms=5)
    backend = NoFaces()
    engine = InferenceEngine(settings=settings, metrics=metrics, backend=backend)
    engine.load()
    worker = InferenceWorker(engine=engine, transports=transports, settings=settings, metrics=metrics, consumer="w1")
    await media.ensure_group(INFERENCE_GROUP)
    image = np.zeros((120, 160, 3), np.uint8)
    sent = 0
    for p in range(3):
        for msg in frames([image] * 6, session="s1", participant=f"p{p}"):
            await media.append(encode_media(msg), key=f"{msg.session}/{msg.participant}")
            sent += 1
    wave, _ = speech_scene([(0.2, "hello there")], seconds=2.0, snr_db=None)
    for k in range(4):  # an audio-only participant: 0.5 s chunks
        chunk = AudioChunk.from_waveform(
            wave[k * 8000 : (k + 1) * 8000],
            sample_rate=16000,
            session="s1",
            participant="mic-only",
            seq=k,
            media_time=k * 0.5,
            timing=TimingTrail(capture_ts=time.time()),
        )
        await media.append(encode_media(chunk), key=f"{chunk.session}/{chunk.participant}")
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(200):
            if worker.published >= sent + 4 and await media.length() == 0:
                break
            await asyncio.sleep(0.02)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 5)
    codec = EventCodec(ScoreEvent)
    out = [codec.decode(v) for _, v in events.records(SCORES.name)]
    assert len(out) == sent + 4 and len({e.event_id for e in out}) == len(out)
    assert await media.length() == 0  # every entry acked after its scores were published
    assert max(backend.batches) > 1  # frames of several streams shared a perception batch
    for e in out:
        stamp = e.timing.stage("inference")
        assert stamp is not None and stamp.received <= stamp.emitted
    for p in range(3):
        mine = sorted((e for e in out if e.participant == f"p{p}"), key=lambda e: e.seq)
        assert [e.seq for e in mine] == [2 * i for i in range(6)] and not any(e.present for e in mine)
    audio_only = [e for e in out if e.participant == "mic-only"]
    assert len(audio_only) == 4 and all(not e.camera_on and e.mic_on for e in audio_only)
    state = await read_state(live, "s1")
    assert {m.event.participant for m in state if m.kind == "score"} == {"p0", "p1", "p2", "mic-only"}
    assert metrics.registry.get_sample_value("classpulse_inference_batch_size_count") == worker.batches


async def test_frames_older_than_max_lag_are_dropped_unscored_and_counted() -> None:
    metrics = Metrics(CollectorRegistry())
    media = MemoryMediaBus(maxlen=100, metrics=metrics)
    events = MemoryEventBus()
    transports = Transports(media=media, events=events, live=MemoryLiveBus())
    settings = InferenceSettings(batch_max=4, batch_wait_ms=5, read_block_ms=5, max_lag_ms=500)
    engine = InferenceEngine(settings=settings, metrics=metrics, backend=NoFaces())
    engine.load()
    worker = InferenceWorker(engine=engine, transports=transports, settings=settings, metrics=metrics, consumer="w")
    await media.ensure_group(INFERENCE_GROUP)
    image = np.zeros((48, 64, 3), np.uint8)
    old = frames([image] * 3, session="lag", participant="late")
    for msg in old:
        msg.timing.capture_ts -= 5.0  # captured 5 s ago: too late to be worth scoring live
        await media.append(encode_media(msg), key=f"{msg.session}/{msg.participant}")
    for msg in frames([image] * 2, session="lag", participant="fresh"):
        await media.append(encode_media(msg), key=f"{msg.session}/{msg.participant}")
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(200):
            if await media.length() == 0 and worker.published >= 2:
                break
            await asyncio.sleep(0.02)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 5)
    codec = EventCodec(ScoreEvent)
    out = [codec.decode(v) for _, v in events.records(SCORES.name)]
    assert {e.participant for e in out} == {"fresh"} and len(out) == 2
    assert await media.length() == 0  # stale frames were acked, not left pending
    assert metrics.registry.get_sample_value("classpulse_media_dropped_total", {"reason": "inference_stale"}) == 3


async def test_dead_workers_media_is_claimed_and_scored_even_when_old() -> None:
    metrics = Metrics(CollectorRegistry())
    media = MemoryMediaBus(maxlen=100, metrics=metrics)
    events = MemoryEventBus()
    transports = Transports(media=media, events=events, live=MemoryLiveBus())
    settings = InferenceSettings(
        batch_max=4, batch_wait_ms=5, read_block_ms=5, claim_idle_ms=100, claim_interval_s=0.05, max_lag_ms=500
    )
    engine = InferenceEngine(settings=settings, metrics=metrics, backend=NoFaces())
    engine.load()
    await media.ensure_group(INFERENCE_GROUP)
    image = np.zeros((48, 64, 3), np.uint8)
    msgs = frames([image] * 5, session="claim", participant="p")
    for msg in msgs:
        msg.timing.capture_ts -= 5.0  # the dead worker sat on them: old by now
        await media.append(encode_media(msg), key=f"{msg.session}/{msg.participant}")
    taken = await media.read_group(INFERENCE_GROUP, "dead", shards=[0], count=10, block_ms=0)  # read, never acked
    assert len(taken) == 5
    worker = InferenceWorker(engine=engine, transports=transports, settings=settings, metrics=metrics, consumer="b")
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(200):
            if worker.published >= 5 and await media.length() == 0:
                break
            await asyncio.sleep(0.02)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 5)
    out = [EventCodec(ScoreEvent).decode(v) for _, v in events.records(SCORES.name)]
    assert sorted(e.seq for e in out) == [0, 2, 4, 6, 8]
    assert await media.length() == 0


async def test_the_transcribe_stage_segments_on_the_engines_vad_windows_without_a_second_pass() -> None:
    """silero-vad runs once per chunk in a worker with a transcribe stage (it was a second pass, batch 1)."""
    from services.inference.transcribe.live import LiveTranscriber
    from services.inference.transcribe.settings import TranscribeSettings
    from services.inference.transcribe.stage import Spoken, TranscribeStage

    class Forward:  # the speech stream (placement 'worker'), in memory
        def __init__(self) -> None:
            self.sent = 0
            self.spoken: list[Spoken] = []

        async def send(self, spoken: list[Spoken]) -> None:
            self.spoken += spoken
            self.sent += len(spoken)

    metrics = Metrics(CollectorRegistry())
    media = MemoryMediaBus(maxlen=1000, metrics=metrics)
    events = MemoryEventBus()
    transports = Transports(media=media, events=events, live=MemoryLiveBus())
    settings = InferenceSettings(batch_max=8, batch_wait_ms=20, read_block_ms=5)
    engine = InferenceEngine(settings=settings, metrics=metrics, backend=NoFaces())
    engine.load()
    forward = Forward()
    speech = LiveTranscriber(stage=TranscribeStage(settings=TranscribeSettings(idle_flush_s=0.5), keep_text=False),
                             bus=events, metrics=metrics, forward=forward)  # type: ignore[arg-type]
    speech.load()
    second_pass = 0
    plain = speech.stage._vad.process

    def counted(items: object) -> list[float]:
        nonlocal second_pass
        second_pass += 1
        return plain(items)  # type: ignore[arg-type]

    speech.stage._vad.process = counted  # type: ignore[method-assign]
    worker = InferenceWorker(engine=engine, transports=transports, settings=settings, metrics=metrics,
                             consumer="w", speech=speech)
    await media.ensure_group(INFERENCE_GROUP)
    wave, _ = speech_scene([(0.3, "Good morning everyone."), (2.8, "Can you hear me?")], seconds=5.0, snr_db=10.0)
    n = round(0.37 * 16000)  # off the 512-sample window grid: samples carry over between chunks
    for k in range(len(wave) // n):
        chunk = AudioChunk.from_waveform(
            wave[k * n : (k + 1) * n], sample_rate=16000, session="s1", participant="mic-only", seq=k,
            media_time=k * n / 16000, timing=TimingTrail(capture_ts=time.time()),
        )
        await media.append(encode_media(chunk), key=f"{chunk.session}/{chunk.participant}")
    tasks = [asyncio.create_task(worker.run()), asyncio.create_task(speech.run())]
    try:
        for _ in range(300):
            if len(forward.spoken) >= 2:
                break
            await asyncio.sleep(0.02)
    finally:
        worker.stop()
        await asyncio.wait_for(tasks[0], 5)
        tasks[1].cancel()
        await asyncio.gather(tasks[1], return_exceptions=True)
    assert len(forward.spoken) == 2  # both remarks, the second closed by the idle flush
    assert second_pass == 0
