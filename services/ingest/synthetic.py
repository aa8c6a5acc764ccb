"""Synthetic test media built from a real photo shipped in a wheel (no downloads).

Used by ``classpulse simulate`` (publishers relay this pre-encoded clip) and by tests.
The picture is matplotlib's ``grace_hopper.jpg`` gently panning (so there is motion);
the audio is a 220 Hz tone in bursts (0.6 s on, 0.4 s off).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import cv2
import matplotlib
import numpy as np
from numpy.typing import NDArray

VideoCodec = Literal["vp8", "h264"]


def photo(width: int, height: int) -> NDArray[np.uint8]:
    """matplotlib's grace_hopper.jpg, scaled to cover ``width`` x ``height`` + 10 % margin (BGR)."""
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"matplotlib sample photo missing: {path}")
    scale = 1.1 * max(width / image.shape[1], height / image.shape[0])
    size = (int(image.shape[1] * scale) + 1, int(image.shape[0] * scale) + 1)
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


def frame_at(base: NDArray[np.uint8], index: int, fps: float, width: int, height: int) -> NDArray[np.uint8]:
    """A crop of ``base`` panning slowly with time."""
    mx, my = base.shape[1] - width, base.shape[0] - height
    t = index / fps
    x = int(mx / 2 * (1 + np.sin(t * 0.8)))
    y = int(my / 2 * (1 + np.cos(t * 0.6)))
    return np.ascontiguousarray(base[y : y + height, x : x + width])


def tone(seconds: float, rate: int = 48_000) -> NDArray[np.float32]:
    """A 220 Hz tone in bursts, mono float32."""
    t = np.arange(int(seconds * rate)) / rate
    gate = (np.mod(t, 1.0) < 0.6).astype(np.float32)
    wave: NDArray[np.float32] = (0.3 * np.sin(2 * np.pi * 220 * t) * gate).astype(np.float32)
    return wave


def write_clip(
    path: Path,
    *,
    seconds: float,
    width: int = 640,
    height: int = 480,
    fps: int = 15,
    video: VideoCodec | None = "vp8",
    audio: bool = True,
) -> Path:
    """Encode a clip: VP8+Opus in .webm, H.264+AAC (or Opus in .mkv) otherwise.

    H.264 uses the constrained-baseline profile, which aiortc accepts.
    """
    if video is None and not audio:
        raise ValueError("a clip needs video, audio or both")
    path = Path(path)
    container = av.open(str(path), mode="w")
    vstream: av.VideoStream | None = None
    if video is not None:
        vstream = container.add_stream("libvpx" if video == "vp8" else "libx264", rate=fps)
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        if video == "vp8":
            vstream.bit_rate = 800_000
            vstream.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        else:
            vstream.options = {"profile": "baseline", "preset": "ultrafast", "tune": "zerolatency", "g": str(fps * 2)}
    astream: av.AudioStream | None = None
    if audio:
        codec = "libopus" if path.suffix in (".webm", ".mkv") else "aac"
        added = container.add_stream(codec, rate=48_000)
        assert isinstance(added, av.AudioStream)
        added.layout = "mono"
        astream = added
    base = photo(width, height) if vstream is not None else None
    wave = tone(seconds) if astream is not None else None
    step = 960
    audio_pos = 0
    n_video = int(seconds * fps) if vstream is not None else 0
    for i in range(max(n_video, 1)):
        if vstream is not None and base is not None and i < n_video:
            frame = av.VideoFrame.from_ndarray(frame_at(base, i, fps, width, height), format="bgr24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in vstream.encode(frame):
                container.mux(packet)
        if astream is not None and wave is not None:
            until = len(wave) if i >= n_video - 1 else int((i + 1) / fps * 48_000)
            while audio_pos + step <= until:
                block = wave[audio_pos : audio_pos + step].reshape(1, -1)
                aframe = av.AudioFrame.from_ndarray(block, format="flt", layout="mono")
                aframe.sample_rate = 48_000
                aframe.pts = audio_pos
                aframe.time_base = Fraction(1, 48_000)
                for packet in astream.encode(aframe):
                    container.mux(packet)
                audio_pos += step
    if vstream is not None:
        container.mux(vstream.encode())
    if astream is not None:
        container.mux(astream.encode())
    container.close()
    return path
