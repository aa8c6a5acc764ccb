"""Replay speed on a 10-minute 640x480 15 fps clip with audio, side by side with two baselines.

    python -m bench.replay_speed [--seconds 600] [--clip PATH] [--repeat N] [--json OUT]
                                 [--startup] [--folder N --folder-seconds S]

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
and CPU seconds are the less load-sensitive comparison. The load average is printed before and
after (``os.getloadavg``).

``--startup`` adds, on a 2 s clip of the same kind: the whole ``classpulse replay`` command
(``python -m services.cli replay``, a fresh interpreter: imports, model loading, report files)
beside the naive script and decode-only in their own fresh interpreters. ``--folder N`` adds a
class replay (``classpulse replay DIR``) of N participants' 640x360 webcam tracks
(``--folder-seconds`` long, VP8 + Opus) beside decode-only of the same N files, as a multiple of
real time (the session's length over the wall time).
The clips are generated once (shared.testkit.clips) into .cache/bench/ and reused.
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


def make_folder(count: int, seconds: float, folder: Path) -> Path:
    """``count`` webcam tracks (640x360, alternating photos) named p1..pN in ``folder``."""
    from shared.testkit.clips import write_webcam_clip

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = folder / f"p{i + 1}.webm"
        if not path.exists():
            tmp = path.with_name(f".{path.stem}.part.webm")
            write_webcam_clip(tmp, seconds=seconds, photo="grace_hopper" if i % 2 == 0 else "astronaut")
            tmp.rename(path)
    return folder


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
    """Every video and audio frame of ``clip`` (a folder: of each file in it, one after another)."""
    import av

    frames = samples = 0
    for path in sorted(p for p in clip.iterdir() if p.is_file()) if clip.is_dir() else [clip]:
        with av.open(str(path)) as container:
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


def run_folder(folder: Path) -> dict[str, Any]:
    from services.replay.class_inputs import load_class_input
    from services.replay.files import replay_class

    with tempfile.TemporaryDirectory(prefix="bench-replay-") as out:
        outcome = replay_class(load_class_input(str(folder)), out_dir=Path(out), quiet_native=True)
    s = outcome.stats
    return {"tracks": s.tracks, "analysed_frames": s.frames, "audio_chunks": s.audio_chunks,
            "session_s": round(s.media_s, 1), "analysis_wall_s": round(s.wall_s, 2)}


CONTENDERS = {"decode": run_decode, "naive": run_naive, "replay": run_replay, "folder": run_folder}


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


def measure_command(argv: list[str]) -> dict[str, Any]:
    """Wall time, CPU time and peak RSS of a whole command (its own process, from exec to exit)."""
    env = {**os.environ, "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "3"}
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(argv)} failed:\n{err.read().decode(errors='replace')[-3000:]}")
    return {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def startup_round(clip: Path) -> dict[str, dict[str, Any]]:
    """Fresh interpreters on the 2 s clip: decode-only and naive (bench children) and the whole CLI command."""
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as out:
        cli = [sys.executable, "-m", "services.cli", "replay", str(clip), "--out", out, "--no-progress"]
        child = [sys.executable, "-m", "bench.replay_speed", "--clip", str(clip), "--child"]
        return {"decode": measure_command([*child, "decode"]), "naive": measure_command([*child, "naive"]),
                "classpulse replay": measure_command(cli)}


def _loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def _fastest(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {name: min((r[name] for r in rounds), key=lambda x: x["wall_s"]) for name in rounds[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--clip", type=Path, default=None)
    parser.add_argument("--child", choices=sorted(CONTENDERS), help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of all three (interleaved); the fastest wall time of each is reported")
    parser.add_argument("--startup", action="store_true",
                        help="also time whole commands on a 2 s clip (start-up: imports, model loading, report)")
    parser.add_argument("--folder", type=int, default=0, metavar="N",
                        help="also replay a folder of N participants' 640x360 tracks (class replay)")
    parser.add_argument("--folder-seconds", type=float, default=60.0, help="length of each folder track (s)")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.clip)
        return
    clip = args.clip or make_clip(args.seconds, REPO / ".cache" / "bench" / f"replay-{args.seconds:.0f}s.mp4")
    short = make_clip(2.0, REPO / ".cache" / "bench" / "replay-2s.mp4") if args.startup else None
    folder = (make_folder(args.folder, args.folder_seconds,
                          REPO / ".cache" / "bench" / f"class-{args.folder}x{args.folder_seconds:.0f}s")
              if args.folder else None)
    import av

    with av.open(str(clip)) as c:
        duration = (c.duration or 0) / 1_000_000
    names = ("decode", "naive", "replay")
    print(f"load average before: {_loadavg()}")
    rounds, starts, folders = [], [], []
    for _ in range(max(1, args.repeat)):
        rounds.append({name: measure(name, clip) for name in names})
        if short is not None:
            starts.append(startup_round(short))
        if folder is not None:
            folders.append({"decode": measure("decode", folder), "folder": measure("folder", folder)})
    print(f"load average after:  {_loadavg()}")
    results = _fastest(rounds)
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
    out: dict[str, Any] = {"duration_s": duration, "results": results, "rounds": rounds}
    if starts:
        best = _fastest(starts)
        print(f"\nstart-up: whole commands on {short} (2 s), fresh interpreters, best of {len(starts)}")
        print(f"{'command':<20}{'wall s':>9}{'cpu s':>8}{'peak RSS MiB':>14}")
        for name, r in best.items():
            print(f"{name:<20}{r['wall_s']:>9.2f}{r['cpu_s']:>8.2f}{r['peak_rss_mib']:>14.0f}")
        out |= {"startup": best, "startup_rounds": starts}
    if folders:
        best = _fastest(folders)
        session = best["folder"]["session_s"]
        print(f"\nclass replay: {folder} ({args.folder} tracks x {args.folder_seconds:.0f} s, 640x360), "
              f"best of {len(folders)}")
        for name, r in best.items():
            detail = {k: v for k, v in r.items() if k not in ("name", "wall_s", "cpu_s", "peak_rss_mib")}
            print(f"{name:<10}{r['wall_s']:>9.1f}{r['cpu_s']:>8.1f}{session / r['wall_s']:>13.1f}"
                  f"{r['peak_rss_mib']:>14.0f}  {detail}")
        print(f"folder: {session / best['folder']['wall_s']:.1f}x real time ({args.folder} participants), "
              f"{best['folder']['wall_s'] / best['decode']['wall_s']:.2f}x decode-only")
        out |= {"folder": best, "folder_rounds": folders}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
