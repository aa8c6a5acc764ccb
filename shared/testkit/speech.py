"""Sound with known truth: espeak-ng speech, trimmed and levelled, mixed over noise at chosen times.

:func:`speech_scene` places utterances in silence (or white noise at an SNR) and returns the
true speech segments; :func:`soundtrack` is the sample class's audio for a
:class:`~shared.testkit.script.SampleScript`; :func:`tone` is the ``simulate`` clip's beeping.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TypeAlias

import av
import numpy as np
from numpy.typing import NDArray

from shared.testkit.script import SampleScript

Wave: TypeAlias = NDArray[np.float32]
"""Mono audio, float32 in [-1, 1]."""

AUDIO_RATE = 48_000
"""Sample rate of encoded clips."""
SPEECH_TEXT = (
    "Today we look at how plants turn light into sugar. "
    "The leaf takes in carbon dioxide and water, and the sun gives the energy. "
)


def espeak(text: str, *, rate: int, voice: str = "en-us", wpm: int = 165) -> Wave:
    """Speech from espeak-ng resampled to ``rate`` (the wav lives only in a temp dir)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed; install it with: apt-get install espeak-ng")
    with tempfile.TemporaryDirectory(prefix="classpulse-tts-") as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run([exe, "-v", voice, "-s", str(wpm), "-w", str(wav), text], check=True, capture_output=True)
        with av.open(str(wav)) as container:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            parts = [
                r.to_ndarray().reshape(-1) for frame in container.decode(audio=0) for r in resampler.resample(frame)
            ]
            parts += [r.to_ndarray().reshape(-1) for r in resampler.resample(None)]
    return np.concatenate(parts).astype(np.float32)


def trim(wave: Wave, threshold: float = 0.01) -> Wave:
    """Drop leading and trailing samples quieter than ``threshold`` (espeak pads its output)."""
    loud = np.flatnonzero(np.abs(wave) > threshold)
    return wave[loud[0] : loud[-1] + 1] if loud.size else wave[:0]


def level(wave: Wave, dbfs: float) -> Wave:
    """The wave scaled to an RMS of ``dbfs`` dB full scale."""
    rms = float(np.sqrt(np.mean(wave**2))) or 1.0
    return (wave * (10 ** (dbfs / 20) / rms)).astype(np.float32)


def white_noise(n: int, *, dbfs: float, rng: np.random.Generator) -> Wave:
    """``n`` samples of Gaussian white noise with an RMS of ``dbfs``."""
    return level(rng.standard_normal(n).astype(np.float32), dbfs)


def speech_scene(
    utterances: list[tuple[float, str]], *, seconds: float, snr_db: float | None, seed: int = 0, rate: int = 16000
) -> tuple[Wave, list[tuple[float, float]]]:
    """Speech placed at the given start times in silence (+ white noise at ``snr_db``); true segments."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * rate), dtype=np.float32)
    truth: list[tuple[float, float]] = []
    voiced: list[Wave] = []
    for start, text in utterances:
        clip = trim(espeak(text, rate=rate, voice="en", wpm=150))
        i = int(start * rate)
        clip = clip[: len(out) - i]
        out[i : i + len(clip)] += 0.5 * clip / max(1e-6, float(np.abs(clip).max()))
        truth.append((start, start + len(clip) / rate))
        voiced.append(out[i : i + len(clip)])
    if snr_db is not None:
        power = float(np.mean(np.concatenate(voiced) ** 2))
        out = out + white_noise(len(out), dbfs=10 * np.log10(power) - snr_db, rng=rng)
    return np.clip(out, -1.0, 1.0).astype(np.float32), truth


def soundtrack(script: SampleScript) -> Wave:
    """The sample class's audio at :data:`AUDIO_RATE`: low noise throughout, speech inside each span.

    The speech level is measured on its voiced parts; each span is cut from one long utterance
    and faded out over 20 ms.
    """
    rng = np.random.default_rng(script.seed + 1)
    n = round(script.duration_s * AUDIO_RATE)
    audio = white_noise(n, dbfs=script.noise_dbfs, rng=rng)
    speech = espeak(SPEECH_TEXT * 4, rate=AUDIO_RATE)
    voiced = speech[np.abs(speech) > 0.02]
    gain = 10 ** (script.speech_dbfs / 20) / (float(np.sqrt(np.mean(voiced**2))) if voiced.size else 1.0)
    trimmed = trim(speech) * gain
    for span in script.speech:
        a, b = int(span.start * AUDIO_RATE), min(n, int(span.end * AUDIO_RATE))
        clip = trimmed[: b - a].copy()
        fade = min(len(clip), int(0.02 * AUDIO_RATE))
        if fade:
            clip[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        audio[a : a + len(clip)] += clip
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def tone(seconds: float, rate: int = AUDIO_RATE) -> Wave:
    """A 220 Hz tone in bursts (0.6 s on, 0.4 s off)."""
    t = np.arange(int(seconds * rate)) / rate
    gate = (np.mod(t, 1.0) < 0.6).astype(np.float32)
    wave: Wave = (0.3 * np.sin(2 * np.pi * 220 * t) * gate).astype(np.float32)
    return wave


def segments(times: list[float], flags: list[bool], step: float) -> list[tuple[float, float]]:
    """Merge per-step flags (at ``times``, each ``step`` long) into (start, end) segments, like a scene's truth."""
    out: list[tuple[float, float]] = []
    for t, on in zip(times, flags, strict=True):
        if not on:
            continue
        if out and t - out[-1][1] <= step * 0.5 + 1e-6:
            out[-1] = (out[-1][0], t + step)
        else:
            out.append((t, t + step))
    return out
