"""Real photos shipped in wheels, as BGR arrays (nothing is downloaded).

Grace Hopper's portrait comes with matplotlib (a runtime dependency, so ``classpulse demo`` and
``classpulse simulate`` work from an install); the astronaut and camera photos come with
scikit-image, a development dependency that is imported only when one of them is asked for.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Literal, TypeAlias

import cv2
import numpy as np
from numpy.typing import NDArray

Image: TypeAlias = NDArray[np.uint8]
"""A BGR picture (height x width x 3) or a single-channel mask."""

PhotoName = Literal["grace_hopper", "astronaut", "camera"]


def grace_hopper() -> Image:
    """Grace Hopper's portrait (512x600) shipped with matplotlib."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"sample photo missing: {path}")
    return np.asarray(image, dtype=np.uint8)


def astronaut() -> Image:
    """scikit-image's astronaut photo (512x512)."""
    return np.asarray(cv2.cvtColor(_skimage_data().astronaut(), cv2.COLOR_RGB2BGR), np.uint8)


def camera() -> Image:
    """scikit-image's camera man (512x512, grey, as three equal channels)."""
    return np.asarray(cv2.cvtColor(_skimage_data().camera(), cv2.COLOR_GRAY2BGR), np.uint8)


def photo(name: PhotoName) -> Image:
    """One of the photos by name."""
    if name == "grace_hopper":
        return grace_hopper()
    if name == "astronaut":
        return astronaut()
    if name == "camera":
        return camera()
    raise ValueError(f"unknown photo {name!r}; choose grace_hopper, astronaut or camera")


def _skimage_data() -> ModuleType:
    try:
        from skimage import data
    except ImportError as exc:
        raise RuntimeError(
            "this photo ships with scikit-image, a development dependency; install it with: pip install -e '.[dev]'"
        ) from exc
    return data
