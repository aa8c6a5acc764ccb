"""Where the live path spends its time per analysed frame, stage by stage, on a webcam-like clip.

    python -m bench.live_profile [--clip FILE.webm] [--participants 4] [--seconds 20] [--mesh-trackers 0 64]

The clip (default: :func:`shared.testkit.clips.write_webcam_clip`, 640x360 VP8 + Opus at 15 fps,
a real photo that sways, turns away and speaks) is decoded with PyAV and sampled like WHIP
ingest (:class:`~services.ingest.sampling.FrameSampler` at 5 fps, 640 px wide;
:class:`~services.ingest.sampling.AudioChunker` 0.5 s at 16 kHz); every message goes through the
media codec (ingest encode, inference decode). ``--participants`` copies of it are interleaved in
media order and run through :class:`~services.inference.engine.InferenceEngine` in batches of
``--batch`` items, as the live worker batches across students, on **one** perception thread
(so the numbers are CPU per frame, not wall time on several cores); every ScoreEvent is then
published to in-memory score and live buses with the worker's publishers.

Each stage is timed with ``time.perf_counter`` around the real call (the backend's detector,
mesh and pose graphs, the engine's audio, feature and fusion steps are wrapped on the instance).
The table gives calls per analysed frame, ms per call, ms per analysed frame and the share of
the total. One table per ``--mesh-trackers`` value (0 = static face mesh on every frame).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import av

from services.inference import engine as engine_module
from services.inference.engine import InferenceEngine
from services.inference.perception_mediapipe import MediapipeBackend
from services.inference.settings import InferenceSettings
from services.ingest.sampling import AudioChunker, FrameSampler
from shared.contracts.codec import decode_media, encode_media
from shared.contracts.events import ScoreEvent
from shared.contracts.media import MediaMessage, VideoFrame
from shared.contracts.timing import wall_clock
from shared.contracts.topics import SCORES
from shared.testkit.clips import write_webcam_clip
from shared.torch_threads import set_torch_threads
from shared.transport.live import LivePublisher
from shared.transport.memory import MemoryEventBus, MemoryLiveBus
from shared.transport.typed import EventPublisher

F = TypeVar("F", bound=Callable[..., Any])

STAGES = (
    ("decode", "ingest: VP8/Opus decode (PyAV), every decoded frame"),
    ("sample_video", "ingest: sampled frame -> BGR 640 px (FrameSampler)"),
    ("sample_audio", "ingest: audio -> 16 kHz chunks (AudioChunker)"),
    ("media_codec", "media message encode (ingest) + decode (inference)"),
    ("downscale", "perception: RGB + downscale to detect width"),
    ("detect", "perception: BlazeFace full range"),
    ("mesh", "perception: crop + face mesh with irises"),
    ("pose", "perception: BlazePose"),
    ("features", "features: head pose, eyes, mouth, motion, audio join"),
    ("audio", "audio features: silero VAD + level + log-mel"),
    ("fusion", "fusion model (batched)"),
    ("engine_other", "engine: the rest (state, ordering, requests)"),
    ("publish", "publish: score codec + live wrapper (memory buses)"),
)


class Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, name: str, fn: F) -> F:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t0
                self.calls[name] += 1

        return timed  # type: ignore[return-value]

    def add(self, name: str, seconds: float, calls: int = 1) -> None:
        self.seconds[name] += seconds
        self.calls[name] += calls


def sample_clip(path: Path, seconds: float, timer: Timer) -> list[MediaMessage]:
    """Decode and sample like WHIP ingest; timing decode, video and audio sampling separately."""
    sampler = FrameSampler(session="prof", participant="p0", fps=5.0, width=640)
    chunker = AudioChunker(session="prof", participant="p0", chunk_s=0.5)
    out: list[MediaMessage] = []
    with av.open(str(path)) as container:
        streams = [*container.streams.video[:1], *container.streams.audio[:1]]
        for packet in container.demux(*streams):
            t0 = time.perf_counter()
            decoded = packet.decode()
            timer.add("decode", time.perf_counter() - t0, calls=max(1, len(decoded)))
            for frame in decoded:
                if frame.time is None or frame.time > seconds:
                    continue
                now = wall_clock()
                t0 = time.perf_counter()
                if isinstance(frame, av.VideoFrame):
                    msg = sampler.push(frame, media_time=frame.time, capture_ts=now, received=now)
                    timer.add("sample_video", time.perf_counter() - t0, calls=int(msg is not None))
                    if msg is not None:
                        out.append(msg)
                else:
                    chunks = chunker.push(frame, media_time=frame.time, capture_ts=now, received=now)  # type: ignore[arg-type]
                    timer.add("sample_audio", time.perf_counter() - t0, calls=len(chunks))
                    out.extend(chunks)
    return out


def copies(messages: list[MediaMessage], participants: int, timer: Timer) -> list[MediaMessage]:
    """``participants`` copies through the media codec, interleaved in media order (audio first)."""
    out: list[MediaMessage] = []
    for p in range(participants):
        for msg in messages:
            t0 = time.perf_counter()
            data = encode_media(msg.model_copy(update={"participant": f"p{p}"}))
            copy = decode_media(data)
            timer.add("media_codec", time.perf_counter() - t0)
            out.append(copy)
    out.sort(key=lambda m: (m.media_time, m.kind != "audio", m.participant))
    return out


def instrument(engine: InferenceEngine, backend: MediapipeBackend, timer: Timer) -> Callable[[], None]:
    """Wrap the stages on the instances (and the engine module's ``video_step``); returns an undo."""
    backend._downscaled = timer.wrap("downscale", backend._downscaled)  # type: ignore[method-assign]
    backend._detect = timer.wrap("detect", backend._detect)  # type: ignore[method-assign]
    backend._mesh_crop = timer.wrap("mesh", backend._mesh_crop)  # type: ignore[method-assign]
    backend._run_pose = timer.wrap("pose", backend._run_pose)  # type: ignore[method-assign]
    engine._audio_features = timer.wrap("audio", engine._audio_features)  # type: ignore[method-assign]
    engine._fuse = timer.wrap("fusion", engine._fuse)  # type: ignore[method-assign]
    original = engine_module.video_step
    engine_module.video_step = timer.wrap("features", original)

    def undo() -> None:
        engine_module.video_step = original

    return undo


async def publish_all(events: list[ScoreEvent], timer: Timer) -> None:
    scores = EventPublisher(bus=MemoryEventBus(), topic=SCORES)
    live = LivePublisher(bus=MemoryLiveBus())
    for ev in events:
        t0 = time.perf_counter()
        await scores.publish(ev)
        await live.publish(ev)
        timer.add("publish", time.perf_counter() - t0)


def profile(clip: Path, *, seconds: float, participants: int, batch: int, mesh_trackers: int) -> None:
    timer = Timer()
    ingest = Timer()  # one participant's decode and sampling; every student's stream pays it
    messages = copies(sample_clip(clip, seconds, ingest), participants, timer)
    for name in ingest.seconds:
        timer.add(name, ingest.seconds[name] * participants, ingest.calls[name] * participants)
    settings = InferenceSettings(perception_threads=1, mesh_trackers=mesh_trackers)
    backend = MediapipeBackend(detect_width=settings.detect_width, mesh_trackers=mesh_trackers)
    engine = InferenceEngine(settings=settings, backend=backend)
    engine.load()
    undo = instrument(engine, backend, timer)
    events: list[ScoreEvent] = []
    engine_s = 0.0
    try:
        for i in range(0, len(messages), batch):
            part = messages[i : i + batch]
            t0 = time.perf_counter()
            events += engine.process(part)
            engine_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        events += engine.flush()
        engine_s += time.perf_counter() - t0
    finally:
        undo()
        engine.close()
    asyncio.run(publish_all(events, timer))
    inner = sum(timer.seconds[k] for k in ("downscale", "detect", "mesh", "pose", "features", "audio", "fusion"))
    timer.add("engine_other", max(0.0, engine_s - inner))
    frames = sum(1 for m in messages if isinstance(m, VideoFrame))
    total = sum(timer.seconds[name] for name, _ in STAGES)
    print(
        f"\n== mesh_trackers={mesh_trackers}: {participants} participant(s) x {seconds:.0f} s, "
        f"{frames} analysed frames, {len(events)} score events, batches of {batch}"
    )
    print(f"{'stage':<13} {'calls/frame':>11} {'ms/call':>8} {'ms/frame':>9} {'share':>6}  what")
    for name, what in STAGES:
        s, calls = timer.seconds[name], timer.calls[name]
        per_call = 1000 * s / calls if calls else 0.0
        print(
            f"{name:<13} {calls / frames:>11.2f} {per_call:>8.2f} {1000 * s / frames:>9.2f} "
            f"{100 * s / total:>5.1f}%  {what}"
        )
    print(f"{'total':<13} {'':>11} {'':>8} {1000 * total / frames:>9.2f} 100.0%")
    share = 1000 * total / frames
    print(f"-> one core analyses about {1000 / share:.0f} frames/s = {1000 / share / 5:.1f} students at 5 fps")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--clip", type=Path, default=None, help="VP8/H.264 + Opus clip (default: a generated webcam clip)"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of the clip to use (default 20)")
    parser.add_argument("--participants", type=int, default=4, help="copies of the clip batched together (default 4)")
    parser.add_argument("--batch", type=int, default=16, help="items per engine batch (default 16, the worker's)")
    parser.add_argument("--mesh-trackers", type=int, nargs="+", default=[0, 64], help="values to compare")
    args = parser.parse_args()
    set_torch_threads(1)
    with tempfile.TemporaryDirectory(prefix="classpulse-profile-") as tmp:
        clip = args.clip
        if clip is None:
            clip = Path(tmp) / "webcam.webm"
            write_webcam_clip(clip, seconds=args.seconds)
        for trackers in args.mesh_trackers:
            profile(
                clip, seconds=args.seconds, participants=args.participants, batch=args.batch, mesh_trackers=trackers
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
