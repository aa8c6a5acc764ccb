"""Whisper encoder window vs CPU and accuracy for lone segments (the live case), side by side.

    python -m bench.transcribe_window [--prompts 30] [--windows 10 12 30]

Real recorded speech (Debian's Asterisk prompts: every n-th prompt with two words or more, plus
every prompt ending in "?"), each cut by the stage's segmenter (0.5 s chunks, silero-vad) and
transcribed segment by segment as a live host does, once per ``CLASSPULSE_TRANSCRIBE_WINDOW_S``
value, interleaved. Prints WER (normalised), how many question prompts kept their "?" (question
detection reads it), and the process CPU seconds per segment of the Whisper calls, with the load
average.
"""

from __future__ import annotations

import argparse
import os
import resource

from services.inference.transcribe.settings import TranscribeSettings
from services.inference.transcribe.stage import TranscribeStage
from shared.testkit.prompts import as_chunks, decode, prompts, wer


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prompts", type=int, default=30)
    p.add_argument("--windows", type=float, nargs="+", default=[10.0, 12.0, 30.0])
    args = p.parse_args()
    every = [q for q in prompts() if len(q.text.split()) >= 2]
    chosen = every[:: max(1, len(every) // args.prompts)][: args.prompts]
    chosen += [q for q in prompts() if q.text.rstrip().endswith("?")]
    stages = {w: TranscribeStage(settings=TranscribeSettings(window_s=w), keep_text=True) for w in args.windows}
    for stage in stages.values():
        stage.load()
    cpu = dict.fromkeys(stages, 0.0)
    hyps: dict[float, list[str]] = {w: [] for w in stages}
    segments = dict.fromkeys(stages, 0)
    print(f"load before {os.getloadavg()}")
    for i, prompt in enumerate(chosen):
        wave = decode(prompt.path)
        for w, stage in stages.items():
            chunks = as_chunks(wave, session="bench", participant=f"p{i}")
            spoken = [s for c in chunks for s in stage.segment(c)] + stage.close_open()
            started = _cpu()
            events = stage.transcribe(spoken)
            cpu[w] += _cpu() - started
            segments[w] += len(spoken)
            hyps[w].append(" ".join(e.text or "" for e in events))
    refs = [q.text for q in chosen]
    questions = [q.text.rstrip().endswith("?") for q in chosen]
    print("| window | WER | questions keeping '?' | Whisper CPU s per segment |")
    print("|---|---|---|---|")
    for w in stages:
        rate, errors, total = wer(refs, hyps[w])
        kept = sum(h.rstrip().endswith("?") for h, q in zip(hyps[w], questions, strict=True) if q)
        print(f"| {w:g} s | {100 * rate:.1f} % ({errors}/{total}) | {kept}/{sum(questions)} | "
              f"{cpu[w] / max(1, segments[w]):.3f} ({segments[w]} segments) |")
    print(f"load after {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
