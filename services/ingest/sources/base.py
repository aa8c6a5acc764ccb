"""The media source interface: anything that yields sampled frames and audio chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from shared.contracts.media import MediaMessage


@dataclass(frozen=True)
class MediaInfo:
    """What a source holds, from its container headers."""

    duration_s: float | None
    has_video: bool
    has_audio: bool
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    codecs: dict[str, str] = field(default_factory=dict)
    video_streams: int = 0
    """Video streams in the container; only the first is analysed."""
    video_size: tuple[int, int] | None = None


class MediaSource(Protocol):
    """A file, URL or synthetic source of :data:`MediaMessage` in media-time order."""

    warnings: list[str]

    def probe(self) -> MediaInfo: ...

    def __iter__(self) -> Iterator[MediaMessage]: ...

    def stream(self) -> AsyncIterator[MediaMessage]: ...
