"""What slows the live perception down when it shares the box: other processes, the GIL, graph threads.

The live engine's perception (two threads of :class:`MediapipeBackend` with tracking meshes, as
``classpulse up`` runs it) on a webcam-like 640x360 clip (:func:`shared.testkit.clips.write_webcam_clip`)
for ``--students`` participants, in one fresh process per condition, side by side:

* ``idle``; ``hogs=N``: N busy processes on the box (CPU share);
* ``py-thread``: one busy pure-Python thread in the same process (GIL contention, as the asyncio
  loop and Whisper's Python parts are in ``up``), at the interpreter's switch interval and at 1 and
  0.5 ms (``sys.setswitchinterval``);
* ``graph-threads=1``: each mediapipe graph's default executor limited to one thread.

Prints wall milliseconds per analysed frame (the batch's wall time / frames) and the process's CPU
per frame (with ``py-thread`` it includes the busy thread). Ratios are what count on a shared box.

    python -m bench.perception_contention [--students 20] [--frames 37]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

CONDITIONS: dict[str, dict[str, Any]] = {
    "idle": {},
    "hogs=2": {"hogs": 2},
    "py-thread": {"py_thread": True},
    "py-thread, switch 1 ms": {"py_thread": True, "switch_ms": 1.0},
    "py-thread, switch 0.5 ms": {"py_thread": True, "switch_ms": 0.5},
    "graph-threads=1": {"graph_threads": 1},
    "graph-threads=1, hogs=2": {"graph_threads": 1, "hogs": 2},
}


CLIP_FRAMES = 50
"""The clip: 10 s at 5 fps."""
WARM_FRAMES = 3
"""Frames every participant's graphs see before the measurement."""


def _busy() -> None:
    x = 0
    while True:
        x += 1


def _limit_graph_threads(n: int) -> None:
    """Build every mediapipe solution graph with ``n`` threads in its default executor."""
    from mediapipe.framework import thread_pool_executor_pb2
    from mediapipe.python import solution_base

    make = solution_base.calculator_graph.CalculatorGraph

    def build(*, graph_config: Any) -> Any:
        defaults = [e for e in graph_config.executor if not e.name]
        if defaults:
            defaults[0].options.Extensions[thread_pool_executor_pb2.ThreadPoolExecutorOptions.ext].num_threads = n
        else:
            graph_config.num_threads = n
        return make(graph_config=graph_config)

    solution_base.calculator_graph.CalculatorGraph = build


def measure(condition: dict[str, Any], *, clip: Path, students: int, frames: int) -> dict[str, float]:
    """One condition in this process: ms per frame (wall, CPU)."""
    if condition.get("graph_threads"):
        _limit_graph_threads(int(condition["graph_threads"]))
    import av

    from services.inference.perception import FaceTrack, PerceptionRequest
    from services.inference.perception_mediapipe import MediapipeBackend
    from services.inference.perception_pool import ThreadedPerception

    with av.open(str(clip)) as container:
        images = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    perception = ThreadedPerception(factory=lambda: MediapipeBackend(mesh_trackers=32), workers=2)
    perception.load()
    tracks = [FaceTrack(key=f"s{i}") for i in range(students)]
    for k in range(WARM_FRAMES):  # every participant's graphs built and tracking
        perception.analyze([PerceptionRequest(key=t.key, image=images[k], want_pose=k == 0, track=t) for t in tracks])
    if condition.get("switch_ms"):
        sys.setswitchinterval(float(condition["switch_ms"]) / 1000)
    if condition.get("py_thread"):
        threading.Thread(target=_busy, daemon=True).start()
    hogs = [multiprocessing.Process(target=_busy, daemon=True) for _ in range(int(condition.get("hogs", 0)))]
    for hog in hogs:
        hog.start()
    time.sleep(0.3)
    n = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    # pose on a schedule: one participant in 5 per frame
    for k, image in enumerate(images[WARM_FRAMES : WARM_FRAMES + frames]):
        perception.analyze(
            [PerceptionRequest(key=t.key, image=image, want_pose=k % 5 == i % 5, track=t) for i, t in enumerate(tracks)]
        )
        n += len(tracks)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    for hog in hogs:
        hog.terminate()
    return {"wall_ms": 1000 * wall / n, "cpu_ms": 1000 * cpu / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=20, help="participants analysed per frame (1-200)")
    parser.add_argument(
        "--frames", type=int, default=37, help=f"frames per participant measured (1-{CLIP_FRAMES - WARM_FRAMES})"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one condition, print JSON
    parser.add_argument("--clip", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.students <= 200 or not 1 <= args.frames <= CLIP_FRAMES - WARM_FRAMES:
        parser.error(f"--students must be 1-200 and --frames 1-{CLIP_FRAMES - WARM_FRAMES}")
    if args.one is not None:
        out = measure(CONDITIONS[args.one], clip=args.clip, students=args.students, frames=args.frames)
        print(json.dumps(out), flush=True)
        os._exit(0)  # mediapipe's graphs and the hogs: no teardown needed
    from shared.testkit.clips import write_webcam_clip

    with tempfile.TemporaryDirectory(prefix="classpulse-contention-") as tmp:
        clip = Path(tmp) / "webcam-640x360-5fps.webm"
        write_webcam_clip(clip, seconds=CLIP_FRAMES / 5, fps=5, video_kbps=400)
        print(f"{args.students} students, {args.frames} frames each; load average {os.getloadavg()[0]:.1f}")
        print("condition                  | wall ms/frame | process CPU ms/frame")
        for name in CONDITIONS:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.perception_contention",
                    "--one",
                    name,
                    "--clip",
                    str(clip),
                    "--students",
                    str(args.students),
                    "--frames",
                    str(args.frames),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{name:26s} | {row['wall_ms']:13.2f} | {row['cpu_ms']:20.2f}", flush=True)


if __name__ == "__main__":
    main()
