"""GPU check of the inference worker's torch parts: fusion model throughput/latency on CUDA for
batch sizes 1..256, CPU/CUDA agreement, and the engine end to end with the fusion model on CUDA.

Perception (mediapipe) and the audio features (onnxruntime silero-vad, numpy log-mel) run on
CPU in every configuration; only the fusion model moves to CUDA. Finishes in well under
5 minutes on one GPU. Run through ``bench/gpu_check.sh`` (or ``python -m bench.gpu_fusion``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from services.inference.fusion import FusionModel
from shared.testkit.features import realistic_inputs
from shared.torch_threads import set_torch_threads

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TOLERANCE = 1e-4


def timed(model: FusionModel, inputs: tuple[torch.Tensor, ...], device: torch.device, iters: int) -> list[float]:
    x, m, v = (t.to(device) for t in inputs)
    times = []
    with torch.inference_mode():
        for _ in range(5):
            model(x, m, v)
        if device.type == "cuda":
            torch.cuda.synchronize()
        for _ in range(iters):
            started = time.perf_counter()
            out = model(x, m, v)
            _ = out.probs.cpu()  # include the copy back, as the engine does
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
    return times


def agreement(window: int, device: str) -> dict[str, float]:
    cpu = FusionModel(window=window).eval()
    gpu = FusionModel(window=window).to(device).eval()
    x, m, v = realistic_inputs(256, window, seed=1)
    with torch.inference_mode():
        a = cpu(x, m, v)
        b = gpu(x.to(device), m.to(device), v.to(device))
    diffs = {
        "probs": float((a.probs - b.probs.cpu()).abs().max()),
        "confidence": float((a.confidence - b.confidence.cpu()).abs().max()),
        "contributions": float((a.contributions - b.contributions.cpu()).abs().max()),
    }
    decisions = float(((a.probs > 0.5) == (b.probs.cpu() > 0.5)).float().mean())
    return {**diffs, "same_decisions": decisions}


def engine_agreement(device: str) -> dict[str, object]:
    """The engine on generated frames + speech with the fusion model on CPU and on CUDA."""
    from services.inference.engine import InferenceEngine
    from services.inference.settings import InferenceSettings
    from shared.contracts.media import MediaMessage
    from shared.testkit.frames import place, turn
    from shared.testkit.messages import chunks, frames
    from shared.testkit.photos import photo
    from shared.testkit.speech import speech_scene

    frontal = place(photo("grace_hopper"))
    images = [frontal] * 10 + [turn(frontal, 55.0, (320.0, 200.0))] * 5
    wave, _ = speech_scene([(0.5, "checking the GPU path")], seconds=3.0, snr_db=10.0)
    both: list[MediaMessage] = [
        *frames(images, session="g", participant="p"),
        *chunks(wave, session="g", participant="p"),
    ]
    msgs = sorted(
        both,
        key=lambda msg: (msg.media_time, msg.kind != "audio"),
    )
    out = {}
    for label, choice in (("cpu", "cpu"), ("other", device)):
        engine = InferenceEngine(settings=InferenceSettings(device=choice))  # type: ignore[arg-type]
        engine.load()
        out[label] = engine.process(msgs) + engine.flush()
        engine.close()
    pairs = list(zip(out["cpu"], out["other"], strict=True))
    same = all(
        (a.event_id, a.present, a.attentive, a.speaking, a.hand_raised)
        == (b.event_id, b.present, b.attentive, b.speaking, b.hand_raised)
        for a, b in pairs
    )
    worst = max(max(abs(a.engagement - b.engagement), abs(a.confidence - b.confidence)) for a, b in pairs)
    return {"events": len(pairs), "same_flags_and_ids": same, "max_score_diff": worst}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument(
        "--dry-run-cpu", action="store_true", help="run every step with 'cpu' in place of CUDA (checks the script)"
    )
    args = parser.parse_args()
    device = "cpu" if args.dry_run_cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (the CPU path is covered by the unit tests)")
        return 2
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu (dry run: CUDA columns are CPU)"
    print(f"device: {name}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    set_torch_threads(1)
    gpu = FusionModel(window=args.window).to(device).eval()
    cpu = FusionModel(window=args.window).eval()
    rows = []
    for batch in BATCHES:
        inputs = realistic_inputs(batch, args.window)
        g = timed(gpu, inputs, torch.device(device), args.iters)
        c = timed(cpu, inputs, torch.device("cpu"), max(20, args.iters // 5))
        row = {
            "batch": batch,
            "cuda_items_per_s": batch / float(np.mean(g)),
            "cuda_p95_ms": 1000 * float(np.percentile(g, 95)),
            "cpu_items_per_s": batch / float(np.mean(c)),
            "cpu_p95_ms": 1000 * float(np.percentile(c, 95)),
        }
        rows.append(row)
        print(
            f"batch {batch:4d}: CUDA {row['cuda_items_per_s']:10.0f} items/s p95 {row['cuda_p95_ms']:6.2f} ms | "
            f"CPU(1 thread) {row['cpu_items_per_s']:9.0f} items/s p95 {row['cpu_p95_ms']:6.2f} ms"
        )
    ratio = rows[-1]["cuda_items_per_s"] / rows[0]["cuda_items_per_s"]
    print(f"CUDA batch-{BATCHES[-1]} / batch-1 throughput: {ratio:.1f}x")
    need = 1000 * 5  # 1,000 students at 5 fps
    fits = [r for r in rows if r["cuda_items_per_s"] >= need and r["cuda_p95_ms"] < 100]
    print(
        "fusion for 1,000 students at 5 fps (5,000 items/s, p95 < 100 ms): "
        + (f"met from batch {fits[0]['batch']}" if fits else "not met")
    )
    agree = agreement(args.window, device)
    ok = max(agree["probs"], agree["confidence"], agree["contributions"]) <= TOLERANCE
    print(f"CPU vs CUDA fusion (256 windows): {json.dumps(agree)} -> {'AGREE' if ok else 'DISAGREE'} (tol {TOLERANCE})")
    eng = engine_agreement(device)
    print(f"engine CPU vs CUDA fusion on generated media: {json.dumps(eng)}")
    return 0 if ok and eng["same_flags_and_ids"] else 1


if __name__ == "__main__":
    sys.exit(main())
