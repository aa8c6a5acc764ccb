"""Pictures for the perception tests and the sample class: a photo placed in a frame, turned, or left out.

"Looking away" is the photo's plane rotated about a vertical axis and seen in perspective by a
camera on the frame's centre line (:func:`turn`). Frames are 640x480 BGR unless asked otherwise.
"""

from __future__ import annotations

import cv2
import numpy as np

from shared.testkit.photos import Image
from shared.testkit.script import SampleScript, Visual

WIDTH, HEIGHT = 640, 480
GREY = 90
"""Level of the plain grey background."""


def grey_frame(width: int = WIDTH, height: int = HEIGHT) -> Image:
    """A plain grey frame (nobody in it)."""
    return np.full((height, width, 3), GREY, np.uint8)


def room(width: int, height: int, rng: np.random.Generator) -> Image:
    """A plain room: a wall gradient, a shelf and a door frame, with a little grain."""
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
    out: Image = np.clip(img.astype(np.int16) + grain, 0, 255).astype(np.uint8)
    return out


def scale(image: Image, factor: float) -> Image:
    """The image resized by ``factor`` (area interpolation)."""
    return np.asarray(cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA), np.uint8)


def paste(background: Image, image: Image, at: tuple[int, int], mask: Image | None = None) -> Image:
    """A copy of ``background`` with ``image`` (where ``mask`` is set) at top-left corner ``at``; clipped."""
    out = background.copy()
    x0, y0 = at
    h, w = image.shape[:2]
    region = out[y0 : y0 + h, x0 : x0 + w]
    rh, rw = region.shape[:2]
    if mask is None:
        region[:] = image[:rh, :rw]
    else:
        sel = mask[:rh, :rw] > 0
        region[sel] = image[:rh, :rw][sel]
    return out


def place(photo: Image, size: int = 420) -> Image:
    """The photo scaled to ``size`` px (longest side), centred in a grey 640x480 frame."""
    im = scale(photo, size / max(photo.shape[:2]))
    return paste(grey_frame(), im, ((WIDTH - im.shape[1]) // 2, (HEIGHT - im.shape[0]) // 2))


def turn(
    image: Image,
    degrees: float,
    centre: tuple[float, float] | None = None,
    *,
    focal: float | None = None,
    border: int = GREY,
    nearest: bool = False,
) -> Image:
    """The image's plane rotated ``degrees`` about the vertical axis through ``centre``, in perspective.

    The camera sits on the image's centre line with focal length ``focal`` px (default: the image
    width); ``centre`` defaults to the image centre. Uncovered pixels get ``border``; ``nearest``
    samples without interpolation (for masks).
    """
    h, w = image.shape[:2]
    f = float(w) if focal is None else float(focal)
    cx, cy = centre if centre is not None else (w / 2.0, h / 2.0)
    k = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
    a = np.radians(degrees)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    t = np.array([cx - w / 2, cy - h / 2, f])
    plane = k @ np.column_stack([rot[:, 0], rot[:, 1], t])
    shift = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    out = cv2.warpPerspective(image, plane @ shift, (w, h), flags=flags, borderValue=(border,) * 3)
    return np.asarray(out, dtype=np.uint8)


def cover(photo: Image, width: int, height: int, *, margin: float = 1.1) -> Image:
    """The photo scaled to cover ``width`` x ``height`` with ``margin`` to spare (room to pan)."""
    return scale(photo, margin * max(width / photo.shape[1], height / photo.shape[0]))


def pan(base: Image, index: int, fps: float, width: int, height: int) -> Image:
    """Frame ``index``: a ``width`` x ``height`` crop of ``base`` panning slowly with time."""
    mx, my = base.shape[1] - width, base.shape[0] - height
    t = index / fps
    x = int(mx / 2 * (1 + np.sin(t * 0.8)))
    y = int(my / 2 * (1 + np.cos(t * 0.6)))
    return np.ascontiguousarray(base[y : y + height, x : x + width])


class SampleFrames:
    """The sample class's frames: the photo frontal, turned away or absent in a room.

    The photo is scaled to 80 % of the frame height, standing on the bottom edge; "away" turns
    its plane 55 degrees. Stills for each sway offset and a few sensor-noise patterns are made
    once, so a frame costs two saturated additions (the generator must stay far faster than
    real time).
    """

    SWAY_PX = 3
    AWAY_DEGREES = -55.0
    """The turn of "away": the photo's left edge comes nearer to the camera."""

    def __init__(self, *, script: SampleScript, photo: Image) -> None:
        rng = np.random.default_rng(script.seed)
        bg = room(script.width, script.height, rng)
        placed = scale(photo, 0.8 * script.height / photo.shape[0])
        at = ((script.width - placed.shape[1]) // 2, script.height - placed.shape[0])
        full = np.full(placed.shape[:2], 255, np.uint8)
        focal = 1.2 * placed.shape[1]
        turned = turn(placed, self.AWAY_DEGREES, focal=focal, border=0)
        turned_mask = turn(full, self.AWAY_DEGREES, focal=focal, border=0, nearest=True)
        base: dict[Visual, Image] = {
            "frontal": paste(bg, placed, at),
            "away": paste(bg, turned, at, turned_mask),
            "empty": bg,
        }
        self._stills: dict[tuple[Visual, int], Image] = {}
        for visual, still in base.items():
            for dx in range(-self.SWAY_PX, self.SWAY_PX + 1):
                m = np.array([[1, 0, dx], [0, 1, 0]], np.float32)
                size = (still.shape[1], still.shape[0])
                moved = cv2.warpAffine(still, m, size, borderMode=cv2.BORDER_REPLICATE)
                self._stills[(visual, dx)] = np.asarray(moved if visual != "empty" else still, np.uint8)
        self._noise = [
            (rng.integers(0, 2, size=bg.shape, dtype=np.uint8), rng.integers(0, 2, size=bg.shape, dtype=np.uint8))
            for _ in range(4)
        ]

    def frame(self, visual: Visual, t: float) -> Image:
        """The frame at ``t`` seconds showing ``visual``."""
        dx = round(self.SWAY_PX * np.sin(2 * np.pi * 0.25 * t))
        still = self._stills[(visual, dx)]
        plus, minus = self._noise[int(t * 15) % len(self._noise)]
        return np.asarray(cv2.subtract(cv2.add(still, plus), minus), np.uint8)
