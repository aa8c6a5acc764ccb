"""Per-second agreement of the inference engine with the truth of generated clips (no codec in between).

Frames and audio come from the sample class generator (:mod:`shared.testkit`:
a photo frontal / turned 55 deg in perspective / absent, espeak-ng speech over low noise),
sampled as ingest would (5 fps frames, 0.5 s audio chunks) and fed to
``InferenceEngine.process`` in media-time order. Each second's row is the majority of its
analysis steps; agreement uses the sample script's rule (seconds next to a scripted change are
excluded). Prints one line per photo and signal.

    python -m bench.inference_accuracy [--seconds 30] [--photos grace_hopper astronaut]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

from services.inference.engine import InferenceEngine
from services.inference.settings import InferenceSettings
from shared.contracts.events import ScoreEvent
from shared.contracts.media import MediaMessage
from shared.contracts.report import TimelineRow
from shared.testkit.frames import SampleFrames
from shared.testkit.messages import chunks as audio_chunks
from shared.testkit.messages import frames as video_frames
from shared.testkit.photos import photo
from shared.testkit.script import SampleScript, agreement, default_script, truth_timeline
from shared.testkit.speech import soundtrack

FPS = 5.0
CHUNK_S = 0.5
RATE = 16000


def messages(script: SampleScript, image: np.ndarray, participant: str) -> list[MediaMessage]:
    frames = SampleFrames(script=script, photo=image)
    images = [frames.frame(script.visual_at(i / FPS), i / FPS) for i in range(int(script.duration_s * FPS))]
    wave = soundtrack(script)[::3].astype(np.float32)  # 48 kHz -> 16 kHz (the engine decimates the same way)
    out: list[MediaMessage] = [
        *video_frames(images, session="acc", participant=participant, fps=FPS),
        *audio_chunks(wave, session="acc", participant=participant, chunk_s=CHUNK_S, rate=RATE),
    ]
    out.sort(key=lambda m: (m.media_time, m.kind != "audio"))
    return out


def per_second(events: list[ScoreEvent], participant: str) -> list[TimelineRow]:
    by_second: dict[int, list[ScoreEvent]] = defaultdict(list)
    for e in events:
        by_second[int(e.media_time)].append(e)
    rows = []
    for t in sorted(by_second):
        es = by_second[t]

        def major(flags: list[bool]) -> bool:
            return sum(flags) * 2 > len(flags)

        rows.append(
            TimelineRow(
                t=float(t),
                participant=participant,
                present=major([e.present for e in es]),
                attentive=major([e.attentive for e in es]),
                speaking=major([e.speaking for e in es]),
                hand_raised=major([e.hand_raised for e in es]),
                engagement=float(np.mean([e.engagement for e in es])),
                confidence=float(np.mean([e.confidence for e in es])),
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--photos", nargs="+", default=["grace_hopper", "astronaut"])
    parser.add_argument("--batch", type=int, default=16, help="messages per engine.process call")
    args = parser.parse_args()
    script = default_script(args.seconds)
    truth = truth_timeline(script)
    engine = InferenceEngine(settings=InferenceSettings())
    engine.load()
    for name in args.photos:
        msgs = messages(script, photo(name), name)
        started = time.perf_counter()
        events: list[ScoreEvent] = []
        for i in range(0, len(msgs), args.batch):
            events += engine.process(msgs[i : i + args.batch])
        events += engine.flush()
        took = time.perf_counter() - started
        scores = agreement(truth, per_second(events, name))
        frames = sum(1 for m in msgs if m.kind == "video")
        print(
            f"{name}: "
            + " ".join(f"{k}={v:.3f}" for k, v in scores.items())
            + f"  ({frames} frames in {took:.1f} s = {frames / took:.1f} frames/s, "
            + f"{args.seconds / took:.1f}x real time)"
        )


if __name__ == "__main__":
    main()
