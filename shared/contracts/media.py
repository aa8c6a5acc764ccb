"""Media messages: sampled video frames and audio chunks (stream ``classpulse:media``).

Producer: ``services.ingest`` (WHIP tracks, file/URL sources).
Consumers: ``services.inference`` (consumer group ``inference``).

Pixels and samples travel as raw bytes behind a small JSON header (see
:mod:`shared.contracts.codec`), never as base64 JSON.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.timing import TimingTrail


class MediaHeader(BaseModel):
    """Ids and timing common to every media message."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    session: str = Field(min_length=1, max_length=128)
    participant: str = Field(min_length=1, max_length=128)
    role: Literal["student", "teacher"] = "student"
    epoch: int = Field(
        default=0,
        ge=0,
        description="Publish epoch of this participant: 0 for the first publish, larger for every later one "
        "(a reconnect). (epoch, seq) never repeats for a participant and kind.",
    )
    seq: int = Field(ge=0, description="Per participant, kind and epoch, increasing from 0.")
    media_time: float = Field(
        ge=0.0,
        description="Seconds from the start of this participant's media (their first publish); a reconnect "
        "continues it, so the time between publishes is a gap.",
    )
    timing: TimingTrail


class VideoFrame(MediaHeader):
    """One sampled, resized video frame in BGR24 (OpenCV's layout)."""

    kind: Literal["video"] = "video"
    width: int = Field(gt=0, le=8192)
    height: int = Field(gt=0, le=8192)
    pixel_format: Literal["bgr24"] = "bgr24"
    pixels: bytes = Field(repr=False, description="height*width*3 bytes, row-major BGR.")

    def image(self) -> NDArray[np.uint8]:
        """The frame as an ``(height, width, 3)`` uint8 array (a view, no copy)."""
        return np.frombuffer(self.pixels, dtype=np.uint8).reshape(self.height, self.width, 3)

    @classmethod
    def from_image(cls, image: NDArray[np.uint8], **header: object) -> VideoFrame:
        """Build a frame from an ``(h, w, 3)`` BGR uint8 array."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (h, w, 3) uint8 BGR image, got {image.shape} {image.dtype}")
        h, w = int(image.shape[0]), int(image.shape[1])
        return cls(width=w, height=h, pixels=np.ascontiguousarray(image).tobytes(), **header)  # type: ignore[arg-type]


class AudioChunk(MediaHeader):
    """A fixed-length chunk of mono audio as little-endian float32 samples in [-1, 1]."""

    kind: Literal["audio"] = "audio"
    sample_rate: int = Field(default=16000, gt=0, le=192000)
    duration: float = Field(gt=0.0, le=10.0, description="Chunk length in seconds.")
    samples: bytes = Field(repr=False, description="float32 little-endian mono samples.")

    def waveform(self) -> NDArray[np.float32]:
        """The samples as a float32 array (a view, no copy)."""
        return np.frombuffer(self.samples, dtype="<f4")

    @classmethod
    def from_waveform(cls, wave: NDArray[np.float32], *, sample_rate: int, **header: object) -> AudioChunk:
        """Build a chunk from a mono float32 array."""
        if wave.ndim != 1:
            raise ValueError(f"expected mono samples, got shape {wave.shape}")
        data = np.ascontiguousarray(wave, dtype="<f4")
        return cls(
            sample_rate=sample_rate,
            duration=len(data) / sample_rate,
            samples=data.tobytes(),
            **header,  # type: ignore[arg-type]
        )


MediaMessage = VideoFrame | AudioChunk
