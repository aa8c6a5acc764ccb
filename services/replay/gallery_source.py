"""A gallery recording as per-tile media: each sampled frame cut into its tiles, the mixed audio apart.

:class:`GallerySource` wraps the ingest :class:`~services.ingest.sources.file.FileSource` of the
recording (the same decoding and sampling as any replay) and yields, for every sampled frame,
one :class:`VideoFrame` per tile (participant ``p1..pN``, the tile's pixels only, same ``seq``,
``media_time`` and timing), and every audio chunk once, as participant :data:`ROOM` — the
mixed audio, which is no one participant's microphone. Each tile so reaches the inference
engine as its own participant with its own state (face track, calibration, windows); the
room's voice activity goes to :mod:`services.replay.gallery_speakers`, which gives each
voiced moment to the face whose mouth moves with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from services.replay.gallery_layout import BBox
from shared.contracts.events import Role
from shared.contracts.media import AudioChunk, MediaMessage, VideoFrame

ROOM = "gallery-audio"
"""Participant id of the mixed audio inside the engine (never in the report)."""


class _Inner(Protocol):
    warnings: list[str]

    def __iter__(self) -> Iterator[MediaMessage]: ...


@dataclass(frozen=True)
class TileCrop:
    participant: str
    role: Role
    bbox: BBox
    """In pixels of the recording's frame."""


class GallerySource:
    """Per-tile frames and the room's audio from one gallery recording's sampled messages."""

    def __init__(self, *, inner: _Inner, tiles: list[TileCrop], frame_width: int) -> None:
        self.inner = inner
        self.tiles = tiles
        self.frame_width = frame_width
        """Width of the recording's frame, which the tile boxes are in."""
        self.warnings: list[str] = []
        """The recording's warnings (the inner source's, once decoding has ended)."""

    def __iter__(self) -> Iterator[MediaMessage]:
        try:
            for msg in self.inner:
                if isinstance(msg, AudioChunk):
                    yield msg.model_copy(update={"participant": ROOM, "role": "student"})
                    continue
                yield from self.split(msg)
        finally:
            self.warnings = self.inner.warnings

    def split(self, frame: VideoFrame) -> list[VideoFrame]:
        """The frame's tiles, each as its participant's frame (boxes scaled to the sampled width)."""
        image = frame.image()
        k = frame.width / self.frame_width
        out = []
        for tile in self.tiles:
            x, y, w, h = tile.bbox
            x0, y0 = max(0, round(x * k)), max(0, round(y * k))
            x1, y1 = min(frame.width, round((x + w) * k)), min(frame.height, round((y + h) * k))
            crop = np.ascontiguousarray(image[y0:y1, x0:x1])
            out.append(VideoFrame(
                session=frame.session, participant=tile.participant, role=tile.role, seq=frame.seq,
                media_time=frame.media_time, timing=frame.timing, width=crop.shape[1], height=crop.shape[0],
                pixels=crop.tobytes(),
            ))
        return out
