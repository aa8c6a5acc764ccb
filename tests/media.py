"""Test media with known truth, for any engineer's tests (built on services.replay.samplegen).

    truth = make_clip(tmp_path / "class.webm", seconds=24, photo="astronaut")

Photos come from wheels (matplotlib's grace_hopper.jpg, scikit-image's astronaut), speech
from Debian espeak-ng; nothing is downloaded and nothing large is committed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from services.replay.samplegen import SampleScript, TruthRow, default_script, load_photo, write_sample

Photo = Literal["hopper", "astronaut"]


def astronaut_bgr() -> NDArray[np.uint8]:
    """scikit-image's astronaut photo (512x512) as BGR."""
    from skimage import data

    return np.asarray(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), np.uint8)


def photo_bgr(photo: Photo) -> NDArray[np.uint8]:
    return astronaut_bgr() if photo == "astronaut" else load_photo()


def make_clip(
    path: Path,
    *,
    seconds: float = 24.0,
    photo: Photo = "hopper",
    video: bool = True,
    audio: bool = True,
    script: SampleScript | None = None,
) -> list[TruthRow]:
    """Write a scripted clip (.mp4: H.264/AAC, .webm: VP8/Opus) and return its per-second truth."""
    return write_sample(
        path, script=script or default_script(seconds), photo=photo_bgr(photo), video=video, audio=audio
    )


def truncate(src: Path, dst: Path, *, keep: float) -> Path:
    """Copy the first ``keep`` share of ``src``'s bytes to ``dst`` (a recording cut short)."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst
