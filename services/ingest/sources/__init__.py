"""Media sources that feed the same messages as WHIP tracks: files and URLs (PyAV)."""

from services.ingest.sources.base import MediaInfo, MediaSource
from services.ingest.sources.errors import MediaSourceError
from services.ingest.sources.file import FileSource

__all__ = ["FileSource", "MediaInfo", "MediaSource", "MediaSourceError"]
