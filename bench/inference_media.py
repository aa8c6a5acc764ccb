"""Generated, labelled test media for the inference worker (tests and benchmarks; no downloads).

Faces are real photos shipped in wheels (scikit-image ``astronaut``, matplotlib
``grace_hopper.jpg``) placed in 640x480 frames; "looking away" is a perspective warp of
the face plane about the vertical axis. Speech is Debian's espeak-ng, mixed into
silence and white noise at a chosen SNR, with the true speech segments returned.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
import wave
from pathlib import Path

import cv2
import matplotlib
import numpy as np
from numpy.typing import NDArray

from shared.contracts.media import AudioChunk, VideoFrame
from shared.contracts.timing import TimingTrail

WIDTH, HEIGHT = 640, 480
BACKGROUND = 90


def photo(name: str) -> NDArray[np.uint8]:
    """'astronaut' (scikit-image) or 'grace_hopper' (matplotlib), BGR."""
    if name == "astronaut":
        from skimage import data

        return np.ascontiguousarray(data.astronaut()[:, :, ::-1])  # type: ignore[no-untyped-call]
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(path)
    return np.asarray(image, dtype=np.uint8)


def place(image: NDArray[np.uint8], size: int = 420) -> NDArray[np.uint8]:
    """The photo scaled to ``size`` px (longest side), centred in a grey 640x480 frame."""
    frame = np.full((HEIGHT, WIDTH, 3), BACKGROUND, np.uint8)
    h, w = image.shape[:2]
    s = size / max(h, w)
    im = cv2.resize(image, (int(w * s), int(h * s)), interpolation=cv2.INTER_AREA)
    y0, x0 = (HEIGHT - im.shape[0]) // 2, (WIDTH - im.shape[1]) // 2
    frame[y0 : y0 + im.shape[0], x0 : x0 + im.shape[1]] = im
    return frame


def turn(frame: NDArray[np.uint8], degrees: float, centre: tuple[float, float]) -> NDArray[np.uint8]:
    """Perspective view of the frame's plane rotated ``degrees`` about the vertical axis through ``centre``."""
    h, w = frame.shape[:2]
    f = float(w)
    k = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
    a = np.radians(degrees)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    cx, cy = centre
    t = np.array([cx - w / 2, cy - h / 2, f])
    plane = k @ np.column_stack([rot[:, 0], rot[:, 1], t])
    shift = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    out = cv2.warpPerspective(frame, plane @ shift, (w, h), borderValue=(BACKGROUND,) * 3)
    return np.asarray(out, dtype=np.uint8)


def empty_frame() -> NDArray[np.uint8]:
    return np.full((HEIGHT, WIDTH, 3), BACKGROUND, np.uint8)


def speech(text: str, *, rate: int = 16000) -> NDArray[np.float32]:
    """espeak-ng speech, mono float32 at ``rate``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(path), text], check=True, capture_output=True)
        with wave.open(str(path)) as wav:
            src_rate = wav.getframerate()
            raw = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    samples = raw.astype(np.float32) / 32768.0
    n = round(len(samples) * rate / src_rate)
    resampled = np.interp(np.linspace(0, len(samples) - 1, n), np.arange(len(samples)), samples)
    return np.asarray(resampled, dtype=np.float32)


def trim(wave_: NDArray[np.float32], *, rate: int = 16000, floor_db: float = -40.0) -> NDArray[np.float32]:
    """Drop leading/trailing near-silence (espeak pads its output)."""
    frame = rate // 100
    n = len(wave_) // frame
    levels = [float(np.sqrt(np.mean(wave_[i * frame : (i + 1) * frame] ** 2)) + 1e-12) for i in range(n)]
    loud = [i for i, lv in enumerate(levels) if 20 * np.log10(lv) > floor_db]
    if not loud:
        return wave_[:0]
    return wave_[loud[0] * frame : (loud[-1] + 1) * frame]


def speech_scene(
    utterances: list[tuple[float, str]], *, seconds: float, snr_db: float | None, seed: int = 0, rate: int = 16000
) -> tuple[NDArray[np.float32], list[tuple[float, float]]]:
    """Speech placed at the given start times in silence (+ white noise at ``snr_db``); true segments."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * rate), dtype=np.float32)
    truth: list[tuple[float, float]] = []
    voiced: list[NDArray[np.float32]] = []
    for start, text in utterances:
        clip = trim(speech(text, rate=rate), rate=rate)
        i = int(start * rate)
        clip = clip[: len(out) - i]
        out[i : i + len(clip)] += 0.5 * clip / max(1e-6, float(np.abs(clip).max()))
        truth.append((start, start + len(clip) / rate))
        voiced.append(out[i : i + len(clip)])
    if snr_db is not None:
        power = float(np.mean(np.concatenate(voiced) ** 2))
        noise = rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), len(out)).astype(np.float32)
        out = out + noise
    return np.clip(out, -1.0, 1.0).astype(np.float32), truth


def frames(
    images: list[NDArray[np.uint8]], *, session: str, participant: str, fps: float = 5.0, start_seq: int = 0
) -> list[VideoFrame]:
    """VideoFrame messages for consecutive images at ``fps``."""
    now = time.time()
    return [
        VideoFrame.from_image(
            img,
            session=session,
            participant=participant,
            seq=start_seq + i,
            media_time=(start_seq + i) / fps,
            timing=TimingTrail(capture_ts=now),
        )
        for i, img in enumerate(images)
    ]


def chunks(
    wave_: NDArray[np.float32], *, session: str, participant: str, chunk_s: float = 0.5, rate: int = 16000
) -> list[AudioChunk]:
    """AudioChunk messages of ``chunk_s`` seconds covering the waveform."""
    n = round(chunk_s * rate)
    now = time.time()
    return [
        AudioChunk.from_waveform(
            np.ascontiguousarray(wave_[i : i + n]),
            sample_rate=rate,
            session=session,
            participant=participant,
            seq=k,
            media_time=i / rate,
            timing=TimingTrail(capture_ts=now),
        )
        for k, i in enumerate(range(0, len(wave_) - n + 1, n))
    ]


def segments(times: list[float], flags: list[bool], step: float) -> list[tuple[float, float]]:
    """Merge per-step flags (at ``times``, each ``step`` long) into (start, end) segments."""
    out: list[tuple[float, float]] = []
    for t, on in zip(times, flags, strict=True):
        if not on:
            continue
        if out and t - out[-1][1] <= step * 0.5 + 1e-6:
            out[-1] = (out[-1][0], t + step)
        else:
            out.append((t, t + step))
    return out
