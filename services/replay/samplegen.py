"""Sample recordings with known truth, made from a photo shipped in a wheel and espeak-ng speech.

``classpulse demo`` and the tests use this: a real photo (matplotlib's ``grace_hopper.jpg``
by default) is composed into 640x480 frames as a frontal face (present, attentive), the
same face plane rotated ~55 degrees about the vertical axis in perspective (present, looking
away) or left out (absent); espeak-ng speech is mixed over low noise at scripted times.
The clip is encoded with PyAV (H.264/AAC mp4 or VP8/Opus webm) and the per-second truth
is returned with it. Nothing but the requested file is written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Literal, cast

import av
import cv2
import numpy as np
from numpy.typing import NDArray

from shared.contracts.report import TimelineRow

Visual = Literal["frontal", "away", "empty"]
AUDIO_RATE = 48_000
SPEECH_TEXT = (
    "Today we look at how plants turn light into sugar. "
    "The leaf takes in carbon dioxide and water, and the sun gives the energy. "
)


@dataclass(frozen=True)
class Segment:
    """What the camera shows from ``start`` to ``end`` (seconds)."""

    start: float
    end: float
    visual: Visual


@dataclass(frozen=True)
class SpeechSpan:
    """The participant speaks from ``start`` to ``end`` (seconds)."""

    start: float
    end: float


@dataclass(frozen=True)
class SampleScript:
    """A clip's script: visual segments covering ``[0, duration)`` and speech spans."""

    segments: tuple[Segment, ...]
    speech: tuple[SpeechSpan, ...]
    fps: int = 15
    width: int = 640
    height: int = 480
    speech_dbfs: float = -20.0
    noise_dbfs: float = -45.0
    seed: int = 7

    @property
    def duration_s(self) -> float:
        return max(s.end for s in self.segments)

    def visual_at(self, t: float) -> Visual:
        for seg in self.segments:
            if seg.start <= t < seg.end:
                return seg.visual
        return self.segments[-1].visual

    def speaking_at(self, t: float) -> bool:
        return any(s.start <= t < s.end for s in self.speech)


@dataclass(frozen=True)
class TruthRow:
    """Ground truth for the second ``[t, t+1)`` and whether it lies near a change of each signal."""

    t: float
    present: bool
    attentive: bool
    speaking: bool
    near_boundary: dict[str, bool] = field(default_factory=dict)


def default_script(duration_s: float = 30.0) -> SampleScript:
    """Frontal, away, empty and frontal again, with speech in each of the three visual states."""
    d = float(duration_s)
    cuts = [0.0, d / 3, d * 0.6, d * 0.8, d]
    visuals: list[Visual] = ["frontal", "away", "empty", "frontal"]
    segments = tuple(Segment(round(a, 2), round(b, 2), v) for a, b, v in zip(cuts[:-1], cuts[1:], visuals, strict=True))
    speech = (
        SpeechSpan(round(d * 0.07, 2), round(d * 0.23, 2)),
        SpeechSpan(round(d * 0.40, 2), round(d * 0.53, 2)),
        SpeechSpan(round(d * 0.85, 2), round(d * 0.95, 2)),
    )
    return SampleScript(segments=segments, speech=speech)


def truth_timeline(script: SampleScript) -> list[TruthRow]:
    """One row per second; state sampled at the middle of the second."""
    pairs = list(zip(script.segments, script.segments[1:], strict=False))
    present_edges = [b.start for a, b in pairs if (a.visual == "empty") != (b.visual == "empty")]
    attentive_edges = [b.start for a, b in pairs if (a.visual == "frontal") != (b.visual == "frontal")]
    speech_edges = [e for s in script.speech for e in (s.start, s.end)]
    rows = []
    for t in range(int(np.ceil(script.duration_s))):
        mid = t + 0.5
        visual = script.visual_at(mid)
        rows.append(
            TruthRow(
                t=float(t),
                present=visual != "empty",
                attentive=visual == "frontal",
                speaking=script.speaking_at(mid),
                near_boundary={
                    "present": _near(t, present_edges),
                    "attentive": _near(t, attentive_edges),
                    "speaking": _near(t, speech_edges),
                },
            )
        )
    return rows


SIGNALS = ("present", "attentive", "speaking")


def agreement(truth: list[TruthRow], rows: Sequence[TimelineRow], participant: str | None = None) -> dict[str, float]:
    """Share of seconds where each signal matches the truth, excluding seconds within 1 s of its changes.

    A second missing from ``rows`` counts as a miss.
    """
    by_t = {r.t: r for r in rows if participant is None or r.participant == participant}
    out: dict[str, float] = {}
    for sig in SIGNALS:
        judged = [x for x in truth if not x.near_boundary.get(sig, False)]
        hits = sum(1 for x in judged if x.t in by_t and bool(getattr(by_t[x.t], sig)) == getattr(x, sig))
        out[sig] = hits / len(judged) if judged else 1.0
    return out


def _near(t: int, edges: list[float]) -> bool:
    """True when a change lies less than 1 s from the second ``[t, t+1]``."""
    return any(max(t - e, e - (t + 1), 0.0) < 1.0 for e in edges)


# ----------------------------------------------------------------------------- pictures


def load_photo() -> NDArray[np.uint8]:
    """Grace Hopper's portrait shipped with matplotlib, as BGR."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"sample photo missing: {path}")
    return np.asarray(image, dtype=np.uint8)


def _background(width: int, height: int, rng: np.random.Generator) -> NDArray[np.uint8]:
    """A plain room: a wall gradient, a shelf and a door frame."""
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    wall = np.empty((height, width, 3), np.float32)
    wall[..., 0] = 170 - 40 * ys
    wall[..., 1] = 185 - 35 * ys
    wall[..., 2] = 195 - 30 * ys
    img = wall.astype(np.uint8)
    cv2.rectangle(img, (20, 60), (150, 300), (60, 80, 110), -1)
    for y in (120, 180, 240):
        cv2.line(img, (20, y), (150, y), (40, 55, 80), 4)
    cv2.rectangle(img, (520, 40), (620, 470), (120, 140, 150), 6)
    grain = rng.integers(-4, 5, size=img.shape, dtype=np.int16)
    out: NDArray[np.uint8] = np.clip(img.astype(np.int16) + grain, 0, 255).astype(np.uint8)
    return out


def _place(photo: NDArray[np.uint8], width: int, height: int) -> tuple[NDArray[np.uint8], tuple[int, int]]:
    """Photo scaled to 80 % of the frame height; returns it and its top-left corner."""
    scale = 0.8 * height / photo.shape[0]
    resized = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    x0 = (width - resized.shape[1]) // 2
    y0 = height - resized.shape[0]
    return np.asarray(resized, np.uint8), (x0, y0)


def _rotate_plane(photo: NDArray[np.uint8], yaw_deg: float) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """The photo's plane turned by ``yaw_deg`` about its vertical axis, in perspective; image and mask."""
    h, w = photo.shape[:2]
    f = 1.2 * w
    cx, cy = w / 2.0, h / 2.0
    theta = np.deg2rad(yaw_deg)
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    dst = []
    for x, y in src:
        x3, z3 = (x - cx) * np.cos(theta), (x - cx) * np.sin(theta)
        k = f / (f + z3)
        dst.append([cx + x3 * k, cy + (y - cy) * k])
    m = cv2.getPerspectiveTransform(src, np.array(dst, np.float32))
    warped = cv2.warpPerspective(photo, m, (w, h), flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.full((h, w), 255, np.uint8), m, (w, h), flags=cv2.INTER_NEAREST)
    return np.asarray(warped, np.uint8), np.asarray(mask, np.uint8)


def _compose(
    background: NDArray[np.uint8], photo: NDArray[np.uint8], mask: NDArray[np.uint8], at: tuple[int, int]
) -> NDArray[np.uint8]:
    out = background.copy()
    x0, y0 = at
    h, w = photo.shape[:2]
    region = out[y0 : y0 + h, x0 : x0 + w]
    sel = mask[: region.shape[0], : region.shape[1]] > 0
    region[sel] = photo[: region.shape[0], : region.shape[1]][sel]
    return out


class _Frames:
    """Pre-composed stills per visual state, with a small sway and sensor noise per frame.

    Stills for each sway offset and a few noise patterns are made once, so a frame costs
    two saturated additions (the generator must stay far faster than real time).
    """

    _SWAY_PX = 3

    def __init__(self, *, script: SampleScript, photo: NDArray[np.uint8]) -> None:
        rng = np.random.default_rng(script.seed)
        bg = _background(script.width, script.height, rng)
        placed, at = _place(photo, script.width, script.height)
        full = np.full(placed.shape[:2], 255, np.uint8)
        turned, turned_mask = _rotate_plane(placed, 55.0)
        base: dict[Visual, NDArray[np.uint8]] = {
            "frontal": _compose(bg, placed, full, at),
            "away": _compose(bg, turned, turned_mask, at),
            "empty": bg,
        }
        self._stills: dict[tuple[Visual, int], NDArray[np.uint8]] = {}
        for visual, still in base.items():
            for dx in range(-self._SWAY_PX, self._SWAY_PX + 1):
                m = np.array([[1, 0, dx], [0, 1, 0]], np.float32)
                size = (still.shape[1], still.shape[0])
                moved = cv2.warpAffine(still, m, size, borderMode=cv2.BORDER_REPLICATE)
                self._stills[(visual, dx)] = np.asarray(moved if visual != "empty" else still, np.uint8)
        self._noise = [
            (rng.integers(0, 2, size=bg.shape, dtype=np.uint8), rng.integers(0, 2, size=bg.shape, dtype=np.uint8))
            for _ in range(4)
        ]

    def frame(self, visual: Visual, t: float) -> NDArray[np.uint8]:
        dx = round(self._SWAY_PX * np.sin(2 * np.pi * 0.25 * t))
        still = self._stills[(visual, dx)]
        plus, minus = self._noise[int(t * 15) % len(self._noise)]
        return np.asarray(cv2.subtract(cv2.add(still, plus), minus), np.uint8)


# ----------------------------------------------------------------------------- sound


def espeak_wave(text: str, *, rate: int = AUDIO_RATE, voice: str = "en-us", wpm: int = 165) -> NDArray[np.float32]:
    """Speech from espeak-ng as mono float32 at ``rate`` (the wav lives only in a temp dir)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed; install it with: apt-get install espeak-ng")
    with tempfile.TemporaryDirectory(prefix="classpulse-tts-") as tmp:
        wav = os.path.join(tmp, "speech.wav")
        subprocess.run([exe, "-v", voice, "-s", str(wpm), "-w", wav, text], check=True, capture_output=True)
        with av.open(wav) as container:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            parts = [
                r.to_ndarray().reshape(-1)
                for frame in container.decode(audio=0)
                for r in resampler.resample(frame)
            ]
            parts += [r.to_ndarray().reshape(-1) for r in resampler.resample(None)]
    return np.concatenate(parts).astype(np.float32)


def _rms_to(wave: NDArray[np.float32], dbfs: float) -> NDArray[np.float32]:
    rms = float(np.sqrt(np.mean(wave**2))) or 1.0
    return (wave * (10 ** (dbfs / 20) / rms)).astype(np.float32)


def soundtrack(script: SampleScript) -> NDArray[np.float32]:
    """Low noise throughout with speech inside each speech span (speech RMS measured on voiced parts)."""
    rng = np.random.default_rng(script.seed + 1)
    n = round(script.duration_s * AUDIO_RATE)
    audio = _rms_to(rng.standard_normal(n).astype(np.float32), script.noise_dbfs)
    speech = espeak_wave(SPEECH_TEXT * 4)
    voiced = speech[np.abs(speech) > 0.02]
    gain = 10 ** (script.speech_dbfs / 20) / (float(np.sqrt(np.mean(voiced**2))) if voiced.size else 1.0)
    trimmed = _trim(speech) * gain
    for span in script.speech:
        a, b = int(span.start * AUDIO_RATE), min(n, int(span.end * AUDIO_RATE))
        clip = trimmed[: b - a].copy()
        fade = min(len(clip), int(0.02 * AUDIO_RATE))
        if fade:
            clip[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        audio[a : a + len(clip)] += clip
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def _trim(wave: NDArray[np.float32], threshold: float = 0.01) -> NDArray[np.float32]:
    loud = np.flatnonzero(np.abs(wave) > threshold)
    return wave[loud[0] : loud[-1] + 1] if loud.size else wave


# ----------------------------------------------------------------------------- encoding

Container = Literal["mp4", "webm"]
_CODECS: dict[str, tuple[str, str]] = {"mp4": ("libx264", "aac"), "webm": ("libvpx", "libopus")}


def write_sample(
    path: Path,
    *,
    script: SampleScript | None = None,
    photo: NDArray[np.uint8] | None = None,
    audio: bool = True,
    video: bool = True,
) -> list[TruthRow]:
    """Encode the scripted clip to ``path`` (container from its suffix) and return the truth per second."""
    script = script or default_script()
    kind = path.suffix.lstrip(".").lower()
    if kind not in _CODECS:
        raise ValueError(f"unsupported sample container {path.suffix!r}; use .mp4 or .webm")
    vcodec, acodec = _CODECS[kind]
    frames = _Frames(script=script, photo=photo if photo is not None else load_photo()) if video else None
    sound = soundtrack(script) if audio else None
    with av.open(str(path), "w") as out:
        vstream: av.VideoStream | None = None
        if frames is not None:
            vstream = cast(av.VideoStream, out.add_stream(vcodec, rate=script.fps))
            vstream.width, vstream.height, vstream.pix_fmt = script.width, script.height, "yuv420p"
            vstream.codec_context.time_base = Fraction(1, script.fps)
            fast_vp8: dict[str, str] = {"b": "800k", "deadline": "realtime", "cpu-used": "16"}
            x264: dict[str, str] = {"preset": "veryfast", "crf": "23"}
            vstream.options = x264 if vcodec == "libx264" else fast_vp8  # type: ignore[assignment]
        astream: av.AudioStream | None = None
        if sound is not None:
            astream = cast(av.AudioStream, out.add_stream(acodec, rate=AUDIO_RATE, layout="mono"))
        n_frames = round(script.duration_s * script.fps)
        chunk = 960
        a_pos = 0
        for i in range(n_frames):
            t = i / script.fps
            if vstream is not None and frames is not None:
                frame = av.VideoFrame.from_ndarray(frames.frame(script.visual_at(t), t), format="bgr24")
                frame.pts = i
                out.mux(vstream.encode(frame))
            if astream is not None and sound is not None:
                until = round((i + 1) / script.fps * AUDIO_RATE) if i + 1 < n_frames else len(sound)
                while a_pos < until:
                    block = sound[a_pos : min(a_pos + chunk, until)]
                    aframe = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="flt", layout="mono")
                    aframe.sample_rate = AUDIO_RATE
                    aframe.pts = a_pos
                    aframe.time_base = Fraction(1, AUDIO_RATE)
                    out.mux(astream.encode(aframe))
                    a_pos += len(block)
        if vstream is not None:
            out.mux(vstream.encode(None))
        if astream is not None:
            out.mux(astream.encode(None))
    truth = truth_timeline(script)
    if not video:
        truth = [replace(x, present=False, attentive=False) for x in truth]
    if not audio:
        truth = [replace(x, speaking=False) for x in truth]
    return truth
