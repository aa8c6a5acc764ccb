"""Per-track consumers for aiortc tracks: drain continuously, sample, hand to a publisher.

aiortc decodes in a thread per receiver and puts frames into an *unbounded* asyncio
queue on the track. These consumers call ``recv()`` in a tight loop, so the queue stays
near empty; if the event loop still falls behind, everything but the newest frame is
dropped and counted (``reason="decoder_backlog"``) so the backlog can never grow.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from numpy.typing import NDArray

from services.ingest.aiortc_hooks import SenderReportClock
from services.ingest.publisher import StreamPublisher
from services.ingest.sampling import AudioChunker, FrameSampler, frame_to_bgr
from shared.contracts.media import AudioChunk
from shared.contracts.timing import wall_clock
from shared.metrics import Metrics

BACKLOG_DROP = "decoder_backlog"
SOURCE_THINNED = "degraded_at_source"
"""An analysis frame ingest did not emit because inference analyses fewer now (see FrameSampler.skip)."""
SILENCE_RMS = 1e-4  # about -80 dBFS: digital silence, as sent by a muted browser track
BLACK_MEAN = 8.0  # mean BGR value of a black frame (disabled camera)


class MediaClock:
    """Maps a track's media timestamps (RTP time) to the wall clock.

    ``media_time`` counts from the first frame. The wall-clock offset is the smallest
    ``arrival - media_time`` seen so far, so ``capture_ts`` includes every delay beyond
    the fastest frame's (network + jitter buffer + decode floor of that frame). A jump
    in the timestamps (backwards, or more than ``max_jump_s`` ahead) re-anchors the
    clock so media time keeps running with the arrivals.
    """

    def __init__(self, *, max_jump_s: float = 5.0) -> None:
        self.max_jump_s = max_jump_s
        self._first: float | None = None
        self._offset: float | None = None
        self._last_ts = 0.0
        self._last_arrival = 0.0
        self.jumps = 0

    def map(self, ts: float, arrival: float) -> tuple[float, float]:
        """``(media_time, capture_ts)`` for a frame stamped ``ts`` seconds that arrived at ``arrival``."""
        if self._first is None:
            self._first = ts
        elif ts < self._last_ts - 0.001 or ts > self._last_ts + self.max_jump_s:
            self.jumps += 1
            last_media = self._last_ts - self._first
            self._first = ts - (last_media + max(0.0, arrival - self._last_arrival))
        self._last_ts = ts
        self._last_arrival = arrival
        media_time = max(0.0, ts - self._first)
        offset = arrival - media_time
        if self._offset is None or offset < self._offset:
            self._offset = offset
        return media_time, self._offset + media_time


class TrackObserver(Protocol):
    """Told about every frame (for camera/mic state), cheaply."""

    def video_frame(self, now: float, *, black: bool | None) -> None: ...

    def audio_frame(self, now: float, *, silent: bool) -> None: ...


def drain_backlog(track: MediaStreamTrack, *, limit: int, metrics: Metrics) -> int:
    """Drop all but the newest decoded frame when more than ``limit`` wait; returns how many."""
    queue: Any = getattr(track, "_queue", None)
    if not isinstance(queue, asyncio.Queue) or queue.qsize() <= limit:
        return 0
    dropped = 0
    while queue.qsize() > 1:
        item = queue.get_nowait()
        if item is None:  # end-of-track marker: keep it for recv()
            queue.put_nowait(None)
            break
        dropped += 1
    if dropped:
        metrics.media_dropped_total.labels(BACKLOG_DROP).inc(dropped)
    return dropped


def _frame_time(frame: av.VideoFrame | av.AudioFrame) -> float | None:
    tb = frame.time_base
    if frame.pts is None or tb is None:
        return None
    return frame.pts * tb.numerator / tb.denominator  # floats: Fraction arithmetic is slow per frame


def _timing(
    frame: av.VideoFrame | av.AudioFrame, clock: MediaClock, sender: SenderReportClock | None, arrival: float
) -> tuple[float, float]:
    """``(media_time, capture_ts)``: sender-report time when plausible, else arrival-based."""
    ts = _frame_time(frame)
    media_time, capture = clock.map(arrival if ts is None else ts, arrival)
    tb = frame.time_base
    if sender is not None and frame.pts is not None and tb is not None and tb.numerator > 0:
        reported = sender.capture(int(frame.pts), tb.denominator // tb.numerator, arrival)
        if reported is not None:
            capture = reported
    return media_time, capture


def _convert(frame: av.VideoFrame, width: int) -> tuple[NDArray[np.uint8], bool]:
    image = frame_to_bgr(frame, width)
    return image, float(image[::8, ::8].mean()) < BLACK_MEAN


async def consume_video(
    track: MediaStreamTrack,
    *,
    sampler: FrameSampler,
    publisher: StreamPublisher,
    observer: TrackObserver,
    metrics: Metrics,
    max_backlog: int,
    sender: SenderReportClock | None = None,
) -> None:
    """Run until the track ends: keep the latest frame, publish one per analysis tick."""
    clock = MediaClock()
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        arrival = wall_clock()
        drain_backlog(track, limit=max_backlog, metrics=metrics)
        if not isinstance(frame, av.VideoFrame):
            continue
        media_time, capture = _timing(frame, clock, sender, arrival)
        sampler.note(frame)
        if not sampler.due(media_time):
            if sampler.skip(media_time):
                metrics.media_dropped_total.labels(SOURCE_THINNED).inc()
            observer.video_frame(arrival, black=None)
            continue
        # Only sampled frames are converted; kept on the loop thread (measured: handing it to a
        # worker thread costs more in GIL hand-offs than the ~2 ms conversion saves).
        image, black = _convert(frame, sampler.width)
        observer.video_frame(arrival, black=black)
        publisher.offer(sampler.sample(image, media_time=media_time, capture_ts=capture, received=arrival))


async def consume_audio(
    track: MediaStreamTrack,
    *,
    chunker: AudioChunker,
    publisher: StreamPublisher,
    observer: TrackObserver,
    metrics: Metrics,
    max_backlog: int,
    sender: SenderReportClock | None = None,
) -> None:
    """Run until the track ends: cut 16 kHz mono chunks and publish each (the last one on the end)."""
    clock = MediaClock()
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            _publish_audio(chunker.flush(), publisher=publisher, observer=observer, arrival=wall_clock())
            return
        arrival = wall_clock()
        drain_backlog(track, limit=max_backlog * 4, metrics=metrics)
        if not isinstance(frame, av.AudioFrame):
            continue
        media_time, capture = _timing(frame, clock, sender, arrival)
        chunks = chunker.push(frame, media_time=media_time, capture_ts=capture, received=arrival)
        _publish_audio(chunks, publisher=publisher, observer=observer, arrival=arrival)


def _publish_audio(
    chunks: list[AudioChunk], *, publisher: StreamPublisher, observer: TrackObserver, arrival: float
) -> None:
    for chunk in chunks:
        wave = chunk.waveform()
        observer.audio_frame(arrival, silent=float(np.sqrt(np.mean(wave * wave))) < SILENCE_RMS)
        publisher.offer(chunk)
