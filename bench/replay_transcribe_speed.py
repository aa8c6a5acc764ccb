"""Replay wall time with transcription vs without, on the same clip (target: at most 1.3x).

    nice -n 10 python -m bench.replay_transcribe_speed [--seconds 60] [--repeat 2] [--json OUT]

Makes a sample class clip (Grace Hopper's photo + espeak-ng speech in three spans, see
``shared.testkit.script.default_script``) once into ``.cache/bench/``, then runs ``classpulse replay``
in child processes, alternating ``CLASSPULSE_TRANSCRIBE_ENABLED=false`` (no transcription) and the
default (transcription for words_spoken/questions) and the default with ``--transcripts``, for
``--repeat`` rounds; keeps each contender's fastest wall time and prints wall and CPU seconds, the
ratios to "off", and the load average before and after (the box may be shared).
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

REPO = Path(__file__).resolve().parents[1]
CONTENDERS = {
    "off": ({"CLASSPULSE_TRANSCRIBE_ENABLED": "false"}, []),
    "counts": ({}, []),
    "transcripts": ({}, ["--transcripts"]),
}


def clip(seconds: float) -> Path:
    from shared.testkit.clips import write_sample
    from shared.testkit.script import default_script

    path = REPO / ".cache" / "bench" / f"transcribe-sample-{int(seconds)}s.mp4"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_sample(path, script=default_script(seconds))
    return path


def run_one(path: Path, env_extra: dict[str, str], flags: list[str]) -> tuple[float, float]:
    env = {**os.environ, **env_extra, "HF_HUB_OFFLINE": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory(prefix="classpulse-bench-") as out:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "services.cli", "replay", str(path), "--out", out, "--no-progress", *flags],
            env=env, check=True, capture_output=True, cwd=REPO, stdin=subprocess.DEVNULL,
        )
        wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    path = clip(args.seconds)
    load_before = os.getloadavg()
    best: dict[str, tuple[float, float]] = {}
    for _ in range(args.repeat):
        for name, (env, flags) in CONTENDERS.items():
            wall, cpu = run_one(path, env, flags)
            if name not in best or wall < best[name][0]:
                best[name] = (wall, cpu)
    load_after = os.getloadavg()
    off_wall, off_cpu = best["off"]
    result = {
        "clip_s": args.seconds, "repeat": args.repeat,
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in load_after],
        **{f"{k}_wall_s": round(v[0], 2) for k, v in best.items()},
        **{f"{k}_cpu_s": round(v[1], 2) for k, v in best.items()},
        "counts_vs_off_wall": round(best["counts"][0] / off_wall, 3),
        "transcripts_vs_off_wall": round(best["transcripts"][0] / off_wall, 3),
        "transcripts_vs_off_cpu": round(best["transcripts"][1] / off_cpu, 3),
    }
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
