"""The torch and mediapipe perception backends side by side on CPU: milliseconds per frame.

Same frames (8 students, 640x480, real photos), same run, one torch thread and mediapipe's
default graphs: steady state (tracked: mesh only), with pose on every frame, and the first
(detection) round. Torch runs batched (one call for the 8 frames) and batch-1. Numbers on a
shared box are only meaningful as ratios; the load average is printed with them.

    python -m bench.perception_backends_cpu [--students 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence

import torch

from bench.gpu_perception import Class
from services.inference.perception import PerceptionBackend, PerceptionRequest
from services.inference.perception_mediapipe import MediapipeBackend
from services.inference.perception_torch import TorchBackend


def per_frame_ms(
    run: Callable[[Sequence[PerceptionRequest]], object], klass: Class, rounds: int, *, pose: bool
) -> float:
    total = 0.0
    frames = 0
    for _ in range(rounds):
        reqs = [PerceptionRequest(key=r.key, image=r.image, want_pose=pose, track=r.track) for r in klass.tick()]
        t0 = time.perf_counter()
        run(reqs)
        total += time.perf_counter() - t0
        frames += len(reqs)
    return round(1000 * total / frames, 1)


def measure(backend: PerceptionBackend, n: int, rounds: int, *, batched: bool) -> dict[str, float]:
    klass = Class.of(n)

    def run(reqs: Sequence[PerceptionRequest]) -> object:
        return backend.analyze(reqs) if batched else [backend.analyze([r]) for r in reqs]

    first = per_frame_ms(run, klass, 1, pose=False)  # no tracks yet: full-range detection + mesh
    return {
        "detect_round_ms": first,
        "tracked_ms": per_frame_ms(run, klass, rounds, pose=False),
        "tracked_with_pose_ms": per_frame_ms(run, klass, rounds, pose=True),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--students", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    mp = MediapipeBackend()
    mp.load()
    tb = TorchBackend(device="cpu")
    tb.load()
    load_before = os.getloadavg()[0]
    result = {
        "students": args.students,
        "mediapipe": measure(mp, args.students, args.rounds, batched=False),
        "torch_batched": measure(tb, args.students, args.rounds, batched=True),
        "torch_batch1": measure(tb, args.students, args.rounds, batched=False),
        "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
    }
    ratio = {k: round(result["torch_batched"][k] / result["mediapipe"][k], 2) for k in result["mediapipe"]}
    result["torch_batched_over_mediapipe"] = ratio
    print(json.dumps(result, indent=2))
    mp.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
