"""CPU benchmark of the inference worker: throughput and per-frame latency for 1/10/30 streams,
and batched vs one-at-a-time engine throughput, measured side by side in one run.

1. **Live worker** (in-memory transports, the real mediapipe backend): N streams publish
   640x480 frames at 5 fps plus 0.5 s audio chunks in real time for ``--seconds``; the
   worker micro-batches them. Reported: frames/s scored, per-frame latency
   (capture -> inference emitted) p50/p95, frames dropped (bounded stream / queue).
2. **Batched vs one-at-a-time**: the same pre-built messages (10 streams) through
   ``engine.process`` in batches of ``--batch`` and one message per call.

    python -m bench.inference_cpu [--seconds 8] [--streams 1 10 30] [--batch 16]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np
from prometheus_client import CollectorRegistry

from services.inference.engine import InferenceEngine
from services.inference.settings import InferenceSettings
from services.inference.worker import InferenceWorker
from shared.contracts.codec import EventCodec, encode_media
from shared.contracts.events import ScoreEvent
from shared.contracts.media import AudioChunk, MediaMessage, VideoFrame
from shared.contracts.timing import TimingTrail, wall_clock
from shared.contracts.topics import SCORES
from shared.metrics import Metrics
from shared.testkit.frames import place
from shared.testkit.messages import frames
from shared.testkit.photos import photo
from shared.testkit.speech import speech_scene
from shared.torch_threads import set_torch_threads
from shared.transport.factory import Transports
from shared.transport.memory import MemoryEventBus, MemoryLiveBus, MemoryMediaBus

FPS = 5.0
CHUNK_S = 0.5


def _images(n: int) -> list[np.ndarray]:
    base = [place(photo("grace_hopper")), place(photo("astronaut"))]
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = base[i % 2].copy()
        img[rng.integers(0, 480, 200), rng.integers(0, 640, 200)] = 255  # a little sensor noise
        out.append(img)
    return out


async def live_run(streams: int, seconds: float, settings: InferenceSettings) -> dict[str, float]:
    metrics = Metrics(CollectorRegistry())
    media = MemoryMediaBus(maxlen=512, metrics=metrics)
    events = MemoryEventBus()
    transports = Transports(media=media, events=events, live=MemoryLiveBus())
    engine = InferenceEngine(settings=settings, metrics=metrics)
    await asyncio.to_thread(engine.load)
    worker = InferenceWorker(engine=engine, transports=transports, settings=settings, metrics=metrics, consumer="b")
    task = asyncio.create_task(worker.run())
    images = _images(streams)
    wave, _ = speech_scene([(0.5, "we are measuring the inference worker")], seconds=4.0, snr_db=20.0)
    n = int(CHUNK_S * 16000)
    sent_frames = 0
    sent_messages = 0
    start = time.monotonic()
    tick = 0
    while (tick / FPS) < seconds:
        due = start + tick / FPS
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        now = wall_clock()
        for s in range(streams):
            trail = TimingTrail(capture_ts=now)
            frame = VideoFrame.from_image(
                images[s], session="bench", participant=f"p{s}", seq=tick, media_time=tick / FPS, timing=trail
            )
            await media.append(encode_media(frame), key=f"bench/p{s}")
            sent_frames += 1
            sent_messages += 1
            if tick % int(CHUNK_S * FPS) == 0:
                k = tick // int(CHUNK_S * FPS)
                part = wave[(k * n) % (len(wave) - n) :][:n]
                chunk = AudioChunk.from_waveform(
                    np.ascontiguousarray(part),
                    sample_rate=16000,
                    session="bench",
                    participant=f"p{s}",
                    seq=k,
                    media_time=k * CHUNK_S,
                    timing=trail,
                )
                await media.append(encode_media(chunk), key=f"bench/p{s}")
                sent_messages += 1
        tick += 1
    for _ in range(200):  # drain for up to 10 s
        if await media.length() == 0:
            break
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - start
    worker.stop()
    await asyncio.wait_for(task, 30)
    engine.close()
    codec = EventCodec(ScoreEvent)
    scored = [codec.decode(v) for _, v in events.records(SCORES.name)]
    video = [e for e in scored if e.camera_on]
    lat = [e.timing.stages[-1].emitted - e.timing.capture_ts for e in video]
    dropped = sum(  # frames/chunks evicted from the bounded stream or queue, or dropped as too late
        metrics.registry.get_sample_value("classpulse_media_dropped_total", {"reason": r}) or 0.0
        for r in ("stream_full", "inference_queue_full", "inference_stale")
    )
    batches = metrics.registry.get_sample_value("classpulse_inference_batch_size_sum") or 0.0
    count = metrics.registry.get_sample_value("classpulse_inference_batch_size_count") or 1.0
    return {
        "streams": streams,
        "offered_fps": streams * FPS,
        "scored_fps": len(video) / elapsed,
        "p50_ms": 1000 * float(np.percentile(lat, 50)) if lat else float("nan"),
        "p95_ms": 1000 * float(np.percentile(lat, 95)) if lat else float("nan"),
        "dropped": dropped,
        "sent": sent_messages,
        "frames": sent_frames,
        "mean_batch": batches / count,
    }


def batched_vs_single(settings: InferenceSettings, batch: int, streams: int = 10, per_stream: int = 12) -> None:
    images = _images(streams)
    msgs: list[MediaMessage] = []
    for s in range(streams):
        msgs += frames([images[s]] * per_stream, session="ratio", participant=f"p{s}")
    msgs.sort(key=lambda m: (m.media_time, m.participant))
    results = {}
    for mode, size in (("one-at-a-time", 1), (f"batched({batch})", batch)):
        engine = InferenceEngine(settings=settings)
        engine.load()
        engine.process(msgs[:streams])  # warm-up (first frames of every stream)
        started = time.perf_counter()
        for i in range(streams, len(msgs), size):
            engine.process(msgs[i : i + size])
        took = time.perf_counter() - started
        results[mode] = (len(msgs) - streams) / took
        engine.close()
        print(f"  {mode:>16}: {results[mode]:6.1f} frames/s")
    values = list(results.values())
    print(f"  batched / one-at-a-time throughput ratio: {values[1] / values[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 10, 30])
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    settings = InferenceSettings(batch_max=args.batch)
    set_torch_threads(settings.torch_threads)
    print(
        f"live worker, {FPS:g} fps per stream, {args.seconds:g} s, batch_max={settings.batch_max}, "
        f"batch_wait_ms={settings.batch_wait_ms:g}"
    )
    for n in args.streams:
        r = asyncio.run(live_run(n, args.seconds, settings))
        print(
            f"  {n:3d} streams: offered {r['offered_fps']:6.1f} frames/s, scored {r['scored_fps']:6.1f} frames/s, "
            f"latency p50 {r['p50_ms']:7.1f} ms p95 {r['p95_ms']:7.1f} ms, "
            f"dropped {r['dropped']:.0f}/{r['sent']} messages, "
            f"mean batch {r['mean_batch']:.1f}"
        )
    print("engine throughput on the same messages (10 streams x 12 frames):")
    batched_vs_single(settings, args.batch)


if __name__ == "__main__":
    main()
