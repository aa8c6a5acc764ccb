"""Real recorded speech with transcripts: Debian's Asterisk core sound prompts, and word error rate.

``asterisk-core-sounds-en-g722`` ships 568 prompts (16 kHz G.722, one US speaker, CC-BY-SA-3.0)
and ``asterisk-core-sounds-en`` their transcripts. :func:`prompts` lists the ones with a spoken
transcript; :func:`decode` turns one into 16 kHz mono float32 with Debian's ffmpeg (in memory,
nothing written). :func:`wer` compares texts after :func:`normalise` (case, punctuation,
numbers as words), the usual scoring of speech recognition.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from shared.contracts.media import AudioChunk
from shared.contracts.timing import TimingTrail, wall_clock

SOUNDS = Path("/usr/share/asterisk/sounds/en")
TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
PACKAGES = "asterisk-core-sounds-en asterisk-core-sounds-en-g722"


@dataclass(frozen=True, slots=True)
class Prompt:
    name: str
    """Path below the sounds folder without suffix, e.g. ``digits/7`` or ``conf-onlyperson``."""
    text: str
    path: Path


def prompts() -> list[Prompt]:
    """Every prompt with a G.722 file and a spoken transcript (not ``[tones]`` or ``(notes)``), by name."""
    if not TRANSCRIPTS.is_file() or not SOUNDS.is_dir():
        raise RuntimeError(f"recorded prompts missing; install them with: apt-get install -y {PACKAGES}")
    out = []
    for line in gzip.open(TRANSCRIPTS, "rt", encoding="utf-8", errors="replace"):
        name, sep, text = line.partition(":")
        name, text = name.strip(), text.strip()
        if not sep or not text or name.startswith(";") or " " in name:
            continue
        spoken = re.sub(r"\[[^\]]*\]|\([^)]*\)", " ", text).strip()  # [tones], (notes) are not spoken
        path = SOUNDS / f"{name}.g722"
        if spoken and normalise(spoken) and path.is_file():
            out.append(Prompt(name=name, text=spoken, path=path))
    return sorted(out, key=lambda p: p.name)


def decode(path: Path) -> NDArray[np.float32]:
    """A G.722 prompt as 16 kHz mono float32 (ffmpeg to a pipe)."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise RuntimeError("ffmpeg is not installed; install it with: apt-get install -y ffmpeg")
    raw = subprocess.run(
        [exe, "-v", "error", "-f", "g722", "-i", str(path), "-ar", "16000", "-ac", "1", "-f", "f32le", "-"],
        check=True, capture_output=True,
    ).stdout
    return np.frombuffer(raw, dtype="<f4").copy()


_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL = {"1": "first", "2": "second", "3": "third", "5": "fifth", "8": "eighth", "9": "ninth", "12": "twelfth"}


def number_words(n: int) -> str:
    """0..999999 as English words ("one hundred twenty three"; no "and")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_words(rest))
    rest = n % 1000
    return number_words(n // 1000) + " thousand" + ("" if rest == 0 else " " + number_words(rest))


def _ordinal(n: int, suffix: str) -> str:
    words = number_words(n).split()
    last = words[-1]
    key = str(_ONES.index(last)) if last in _ONES else ""
    if key in _ORDINAL:
        words[-1] = _ORDINAL[key]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


_WORD_MAP = {"ok": "okay", "o'clock": "oclock", "%": " percent ", "&": " and ", "#": " pound "}


def normalise(text: str) -> str:
    """Lower case, numbers as words (also ordinals, times, thousands separators), no punctuation."""
    t = text.lower().replace("’", "'")
    for k, v in _WORD_MAP.items():
        t = t.replace(k, v) if not k.isalpha() else re.sub(rf"\b{re.escape(k)}\b", v, t)
    t = re.sub(r"(\d),(\d{3})", r"\1\2", t)
    t = re.sub(r"(\d+):(\d\d)", lambda m: f"{m.group(1)} {m.group(2)}", t)
    t = re.sub(r"\b(\d+)(st|nd|rd|th)\b", lambda m: _ordinal(int(m.group(1)), m.group(2)), t)
    t = re.sub(r"\d+", lambda m: " " + (number_words(int(m.group(0))) if len(m.group(0)) <= 6 else
                                         " ".join(_ONES[int(d)] for d in m.group(0))) + " ", t)
    t = t.replace("-", " ").replace("'", "")
    t = re.sub(r"[^a-z ]+", " ", t)
    return " ".join(t.split())


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[float, int, int]:
    """(word error rate, errors, reference words) over pairs, after :func:`normalise`."""
    errors = words = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        r, h = normalise(ref).split(), normalise(hyp).split()
        errors += edit_distance(r, h)
        words += len(r)
    return (errors / words if words else 0.0), errors, words


def as_chunks(
    wave: NDArray[np.float32], *, session: str, participant: str, chunk_s: float = 0.5, pad_s: float = 0.5,
    t0: float = 0.0,
) -> list[AudioChunk]:
    """``wave`` (16 kHz) with ``pad_s`` of silence either side, as ingest's audio chunks from media time ``t0``."""
    pad = np.zeros(int(pad_s * 16000), dtype=np.float32)
    data = np.concatenate([pad, wave.astype(np.float32), pad])
    n = int(chunk_s * 16000)
    now = wall_clock()
    return [
        AudioChunk.from_waveform(
            data[i : i + n], sample_rate=16000, session=session, participant=participant, seq=i // n,
            media_time=t0 + i / 16000, timing=TimingTrail(capture_ts=now + t0 + i / 16000),
        )
        for i in range(0, len(data), n)
    ]
