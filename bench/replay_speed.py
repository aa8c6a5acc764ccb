"""Replay speed on a 10-minute 640x480 15 fps clip with audio, side by side with two baselines.

    python -m bench.replay_speed [--seconds 600] [--clip PATH] [--repeat N] [--json OUT]

Each contender runs in its own child process (so peak RSS is its own) on the same file:

* ``decode``  — PyAV decodes every video and audio frame (threaded video decoding), nothing else;
* ``naive``   — the sequential script a researcher would write: OpenCV decode, mediapipe face
  mesh on every 3rd frame, silero-vad over the whole soundtrack (decoded with PyAV at 16 kHz);
* ``replay``  — ``classpulse replay`` with its defaults (decode thread that samples at 5 fps and
  also runs silero-vad + log-mel; a face thread ahead of the engine: full-range detection when
  the track is lost, face mesh with iris in tracking mode; the engine thread: pose on every 5th
  frame when something moved, head pose, blinks, gaze, mouth, motion, fusion model; per-second
  timeline, aggregation, report files). Wall time includes loading the models.

Prints one table (wall and CPU seconds of each child) and the ratios replay/decode and naive/replay,
by wall and by CPU time, and replay's multiple of real time. On a box shared with other jobs the
load changes between contenders: ``--repeat N`` interleaves N rounds and keeps each one's fastest,
and CPU seconds are the less load-sensitive comparison.
The clip is generated once (shared.testkit.clips) into .cache/bench/ and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def make_clip(seconds: float, path: Path) -> Path:
    from shared.testkit.clips import write_sample
    from shared.testkit.script import default_script

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part.mp4")
        started = time.perf_counter()
        write_sample(tmp, script=default_script(seconds))
        tmp.rename(path)
        print(f"generated {path} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return path


# ----------------------------------------------------------------------------- contenders (child side)


def run_decode(clip: Path) -> dict[str, Any]:
    import av

    frames = samples = 0
    with av.open(str(clip)) as container:
        streams = [*container.streams.video[:1], *container.streams.audio[:1]]
        if container.streams.video:
            container.streams.video[0].thread_type = "AUTO"
        for packet in container.demux(*streams):
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    frame.to_ndarray(format="bgr24")  # a decoder's output a consumer can use
                    frames += 1
                elif isinstance(frame, av.AudioFrame):
                    samples += frame.samples
    return {"video_frames": frames, "audio_samples": samples}


def run_naive(clip: Path) -> dict[str, Any]:
    import av
    import cv2
    import mediapipe as mp
    import numpy as np
    import torch
    from silero_vad import get_speech_timestamps, load_silero_vad

    cap = cv2.VideoCapture(str(clip))
    faces = frames = 0
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True) as mesh:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if frames % 3 == 0:
                result = mesh.process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                faces += bool(result.multi_face_landmarks)
            frames += 1
    cap.release()
    parts = []
    with av.open(str(clip)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        for aframe in container.decode(audio=0):
            parts += [r.to_ndarray().reshape(-1) for r in resampler.resample(aframe)]
    wave = torch.from_numpy(np.concatenate(parts).astype(np.float32))
    speech = get_speech_timestamps(wave, load_silero_vad(), sampling_rate=16000)
    return {"video_frames": frames, "mesh_frames_with_face": faces, "speech_segments": len(speech)}


def run_replay(clip: Path) -> dict[str, Any]:
    from services.replay.files import replay_file

    with tempfile.TemporaryDirectory(prefix="bench-replay-") as out:
        outcome = replay_file(clip, out_dir=Path(out), session="bench", quiet_native=True)
    s = outcome.stats
    return {"analysed_frames": s.frames, "audio_chunks": s.audio_chunks, "events": s.events,
            "analysis_wall_s": round(s.wall_s, 2), "timeline_rows": len(outcome.report.timeline)}


CONTENDERS = {"decode": run_decode, "naive": run_naive, "replay": run_replay}


def child(name: str, clip: Path) -> None:
    started = time.perf_counter()
    detail = CONTENDERS[name](clip)
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    print(json.dumps({"name": name, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                      "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), **detail}))


# ----------------------------------------------------------------------------- orchestration


def measure(name: str, clip: Path) -> dict[str, Any]:
    env = {**os.environ, "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.replay_speed", "--child", name, "--clip", str(clip)],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--clip", type=Path, default=None)
    parser.add_argument("--child", choices=sorted(CONTENDERS), help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of all three (interleaved); the fastest wall time of each is reported")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.clip)
        return
    clip = args.clip or make_clip(args.seconds, REPO / ".cache" / "bench" / f"replay-{args.seconds:.0f}s.mp4")
    import av

    with av.open(str(clip)) as c:
        duration = (c.duration or 0) / 1_000_000
    names = ("decode", "naive", "replay")
    rounds = [{name: measure(name, clip) for name in names} for _ in range(max(1, args.repeat))]
    results = {name: min((r[name] for r in rounds), key=lambda x: x["wall_s"]) for name in names}
    print(f"clip: {clip} ({duration:.0f} s, 640x480 15 fps H.264 + AAC), cores: {os.cpu_count()}, "
          f"best of {len(rounds)}")
    print(f"{'contender':<10}{'wall s':>9}{'cpu s':>8}{'x real time':>13}{'peak RSS MiB':>14}  detail")
    for name, r in results.items():
        detail = {k: v for k, v in r.items() if k not in ("name", "wall_s", "cpu_s", "peak_rss_mib")}
        print(f"{name:<10}{r['wall_s']:>9.1f}{r['cpu_s']:>8.1f}{duration / r['wall_s']:>13.1f}"
              f"{r['peak_rss_mib']:>14.0f}  {detail}")
    d, n, r = (results[k]["wall_s"] for k in names)
    dc, nc, rc = (results[k]["cpu_s"] for k in names)
    print(f"wall: replay / decode-only = {r / d:.2f}x   naive / replay = {n / r:.2f}x   "
          f"replay = {duration / r:.1f}x real time")
    print(f"cpu:  replay / decode-only = {rc / dc:.2f}x   naive / replay = {nc / rc:.2f}x")
    if len(rounds) > 1:
        print("all wall s: " + "   ".join(f"{k}: {[x[k]['wall_s'] for x in rounds]}" for k in names))
    if args.json:
        args.json.write_text(json.dumps({"duration_s": duration, "results": results, "rounds": rounds}, indent=2))


if __name__ == "__main__":
    main()
