"""Decode threads and the merge of several participants' tracks onto one session clock.

Each track (one participant's recording) is decoded and sampled by its own
:class:`TrackDecoder` thread into its own bounded queue; :class:`TrackMerge` takes the
message with the earliest **session time** (``offset_s + media_time``; ties go to the track
listed first) off the queue heads, waiting until every live track has a head. The merged
order so depends only on the recordings, never on how fast each thread runs, and the
aggregation core receives scores roughly in session-time order, as it expects from a live
session. A single recording is the case of one track at offset 0.
"""

from __future__ import annotations

import heapq
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from services.ingest.sources.errors import MediaSourceError
from shared.contracts.events import Role
from shared.contracts.media import AudioChunk, MediaMessage, VideoFrame
from shared.log import get_logger, pii

log = get_logger(__name__)


class Source(Protocol):
    """What replay needs from a media source (:class:`services.ingest.sources.file.FileSource`)."""

    warnings: list[str]

    def __iter__(self) -> Iterator[MediaMessage]: ...


@dataclass(kw_only=True)
class Track:
    """One participant's recording, placed on the session clock at ``offset_s``."""

    source: Source | None
    """None: the recording could not be opened (the job's warnings say why); the participant keeps
    their rows, all not observed."""
    participant: str
    role: Role = "student"
    source_name: str = ""
    """The file as the user gave it (``participants[].source`` of a class report)."""
    offset_s: float = 0.0
    """Session time at which this track's media time 0 lies."""
    expected_duration_s: float | None = None
    """The container's declared duration (the analysed extent never exceeds it)."""


END = object()
"""Put by a decoder after its last message."""


class TrackDecoder(threading.Thread):
    """Runs one track's source in a thread, handing messages (then ``END`` or an exception) to a bounded queue."""

    def __init__(
        self,
        *,
        source: Source,
        out: queue.Queue[object],
        index: int = 0,
        prepare: Callable[[AudioChunk], None] | None = None,
        prepare_frame: Callable[[VideoFrame], None] | None = None,
    ) -> None:
        super().__init__(name=f"classpulse-replay-decode-{index}", daemon=True)
        self.source = source
        self.out = out
        self.prepare = prepare
        self.prepare_frame = prepare_frame
        self.stop = threading.Event()

    def _put(self, item: object) -> bool:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            for msg in self.source:
                if self.prepare is not None and isinstance(msg, AudioChunk):
                    self.prepare(msg)
                elif self.prepare_frame is not None and isinstance(msg, VideoFrame):
                    self.prepare_frame(msg)
                if not self._put(msg):
                    return
            self._put(END)
        except BaseException as exc:  # re-raised (or reported) on the analysis thread
            self._put(exc)


@dataclass
class TrackFailure:
    """A track that stopped with a media error while others went on (class replay)."""

    track: Track
    error: MediaSourceError
    at_s: float
    """Session time of the last message it delivered (its offset when none)."""


@dataclass
class TrackMerge:
    """Messages of every track in session-time order, as ``(track index, session time, message)``.

    With ``tolerate_failures`` (class replay) a track whose source raises a
    :class:`MediaSourceError` ends there and is listed in :attr:`failures`; the others go on
    (the error is raised only when every track failed before delivering anything). Otherwise any
    exception is raised.
    """

    tracks: Sequence[Track]
    queues: Sequence[queue.Queue[object] | None]
    tolerate_failures: bool = False
    failures: list[TrackFailure] = field(default_factory=list)
    peak: int = 0
    """Most messages seen waiting in one track's queue."""
    delivered: dict[int, float] = field(default_factory=dict)
    """Track index -> session time of its latest message."""

    def _pull(self, i: int) -> tuple[float, int, MediaMessage] | None:
        q = self.queues[i]
        if q is None:
            return None
        item = q.get()
        self.peak = max(self.peak, q.qsize() + 1)
        if item is END:
            return None
        if isinstance(item, BaseException):
            track = self.tracks[i]
            if not (self.tolerate_failures and isinstance(item, MediaSourceError)):
                raise item
            at = self.delivered.get(i, track.offset_s)
            self.failures.append(TrackFailure(track=track, error=item, at_s=at))
            log.warning("replay track %s -> %s", "decoding", "failed", extra=pii(participant=track.participant))
            if not self.delivered and len(self.failures) == sum(q is not None for q in self.queues):
                raise item  # nothing could be analysed at all
            return None
        if not isinstance(item, (AudioChunk, VideoFrame)):
            raise TypeError(f"unexpected item from the media source: {type(item).__name__}")
        at = self.tracks[i].offset_s + item.media_time
        self.delivered[i] = at
        return at, i, item

    def __iter__(self) -> Iterator[tuple[int, float, MediaMessage]]:
        heads: list[tuple[float, int, MediaMessage]] = []
        for i in range(len(self.tracks)):
            head = self._pull(i)
            if head is not None:
                heads.append(head)
        heapq.heapify(heads)
        while heads:
            at, i, msg = heapq.heappop(heads)
            yield i, at, msg
            head = self._pull(i)
            if head is not None:
                heapq.heappush(heads, head)


def track_queue_size(queue_max: int, tracks: int) -> int:
    """Messages buffered per track: the replay's ``queue_max`` shared among the tracks, at least 4 each."""
    return max(4, queue_max // max(1, tracks))
