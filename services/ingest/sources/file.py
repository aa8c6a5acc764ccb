"""File and URL sources decoded with PyAV: the same messages as WHIP tracks.

``iter(FileSource(...))`` decodes as fast as possible (replay); ``stream()`` paces the
media in real time (live simulation) from a worker thread. Timing: ``capture_ts =
base_epoch + media_time`` where ``base_epoch`` is the wall clock when iteration started.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import av
import av.container

from services.ingest.sampling import AudioChunker, FrameSampler
from services.ingest.sources.base import MediaInfo
from services.ingest.sources.errors import MediaSourceError
from shared.contracts.media import MediaMessage
from shared.contracts.timing import wall_clock
from shared.log import get_logger

log = get_logger(__name__)

_REORDER_LIMIT = 48  # messages held back to merge video and audio in media-time order
_TRUNCATION_SLACK_S = 1.0
_STREAM_QUEUE = 16


_IMAGE_FORMATS = frozenset({"image2", "gif", "apng", "image2pipe"})
_IMAGE_CODECS = frozenset({"png", "apng", "gif", "bmp", "tiff", "webp", "jpegls", "qoi"})


def _still_image(container: av.container.InputContainer) -> str | None:
    """The image kind when the container holds a picture (PNG, GIF, JPEG ... whatever its file name), else None."""
    name = container.format.name
    if name.endswith("_pipe") or name in _IMAGE_FORMATS:
        return name.removesuffix("_pipe")
    video = container.streams.video
    if video and not container.streams.audio and video[0].codec_context.name in _IMAGE_CODECS:
        return video[0].codec_context.name
    return None


def _is_url(path: str) -> bool:
    return "://" in path


def _declared_length(container: av.container.InputContainer) -> float | None:
    """The media's declared length (s). Matroska/WebM declare the end timestamp, so a recording that
    starts at 4 s (a recorder's clock) and lasts 10 s says 14 s there; mp4 says 10 s."""
    if not container.duration:
        return None
    length = container.duration / 1_000_000
    if "matroska" in container.format.name and container.start_time and container.start_time > 0:
        length -= container.start_time / 1_000_000
    return length


class FileSource:
    """Decodes one file or URL into sampled video frames and audio chunks."""

    def __init__(
        self,
        *,
        path: str,
        session: str,
        participant: str,
        role: Literal["student", "teacher"] = "student",
        fps: float = 5.0,
        frame_width: int = 640,
        audio_chunk_s: float = 0.5,
        realtime: bool = False,
    ) -> None:
        self.path = str(path)
        self.session = session
        self.participant = participant
        self.role: Literal["student", "teacher"] = role
        self.fps = fps
        self.frame_width = frame_width
        self.audio_chunk_s = audio_chunk_s
        self.realtime = realtime
        self.warnings: list[str] = []
        self.base_epoch: float | None = None
        self.frames_decoded = 0

    # -- opening -------------------------------------------------------------------------

    def _name(self) -> str:
        return self.path if _is_url(self.path) else Path(self.path).name

    def _check_path(self) -> None:
        if _is_url(self.path):
            return
        p = Path(self.path)
        if not p.exists():
            raise MediaSourceError(f"{self.path}: no such file; check the path and try again")
        if p.is_dir():
            raise MediaSourceError(f"{self.path} is a folder; give a video or audio file (mp4, webm, mkv)")
        if not os.access(p, os.R_OK):
            raise MediaSourceError(f"{self.path} cannot be read (permission denied); check its permissions")
        if p.stat().st_size == 0:
            raise MediaSourceError(f"{self.path} is empty; give a recording that contains video or audio")

    def _open(self) -> av.container.InputContainer:
        self._check_path()
        options = {"rw_timeout": "10000000"} if _is_url(self.path) else {}
        try:
            container = av.open(self.path, mode="r", options=options, timeout=10.0)
        except (av.error.FFmpegError, OSError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            if _is_url(self.path):
                raise MediaSourceError(
                    f"cannot open {self.path} ({reason}); check the URL and that the stream is reachable"
                ) from exc
            raise MediaSourceError(
                f"{self._name()} is not a media file PyAV/ffmpeg can read, or it is truncated ({reason}); "
                "give a complete mp4, webm or mkv recording"
            ) from exc
        image = _still_image(container)
        if image is not None:
            container.close()
            raise MediaSourceError(
                f"{self._name()} is a still image ({image}), not a recording; give a video or audio recording "
                "(mp4, webm, mkv)"
            )
        if not container.streams.video and not container.streams.audio:
            container.close()
            raise MediaSourceError(
                f"{self._name()} has neither video nor audio; give a recording with a camera and/or microphone track"
            )
        return container

    def probe(self) -> MediaInfo:
        """Container facts without decoding; raises :class:`MediaSourceError` on bad input."""
        container = self._open()
        try:
            video = container.streams.video[0] if container.streams.video else None
            audio = container.streams.audio[0] if container.streams.audio else None
            codecs: dict[str, str] = {}
            if video is not None:
                codecs["video"] = video.codec_context.name
            if audio is not None:
                codecs["audio"] = audio.codec_context.name
            duration = _declared_length(container)
            rate = video.average_rate if video is not None else None
            return MediaInfo(
                duration_s=duration,
                has_video=video is not None,
                has_audio=audio is not None,
                width=video.codec_context.width if video is not None else None,
                height=video.codec_context.height if video is not None else None,
                fps=float(rate) if rate else None,
                codecs=codecs,
                video_streams=len(container.streams.video),
                video_size=(video.codec_context.width, video.codec_context.height) if video is not None else None,
            )
        finally:
            container.close()

    # -- decoding ------------------------------------------------------------------------

    def __iter__(self) -> Iterator[MediaMessage]:
        """Messages in media-time order; paced in real time only when ``realtime=True``."""
        return self._messages(paced=self.realtime, stop=None)

    def _messages(self, *, paced: bool, stop: threading.Event | None) -> Iterator[MediaMessage]:
        container = self._open()
        self.warnings = []
        self.frames_decoded = 0
        sampler = FrameSampler(
            session=self.session, participant=self.participant, role=self.role, fps=self.fps, width=self.frame_width
        )
        chunker = AudioChunker(
            session=self.session, participant=self.participant, role=self.role, chunk_s=self.audio_chunk_s
        )
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        streams: list[Any] = [s for s in (video, audio) if s is not None]
        if video is not None:
            video.thread_type = "AUTO"
        origin = container.start_time / 1_000_000 if container.start_time is not None else 0.0
        base = wall_clock()
        self.base_epoch = base
        heap: list[tuple[float, int, MediaMessage]] = []
        order = itertools.count()
        last_time: dict[int, float] = {s.index: 0.0 for s in streams}
        emitted = 0
        end_time = 0.0
        try:
            packets = container.demux(*streams)
            while stop is None or not stop.is_set():
                try:
                    packet = next(packets)
                    frames = packet.decode()
                except StopIteration:
                    break
                except av.error.EOFError:
                    break
                except av.error.FFmpegError as exc:
                    self._warn(f"{self._name()}: damaged data after {end_time:.1f} s ({exc.strerror}); skipped it")
                    if len(self.warnings) > 20:
                        break
                    continue
                for frame in frames:
                    if frame.pts is None or frame.time is None:
                        continue
                    media_time = max(0.0, float(frame.time) - origin)
                    if paced:
                        delay = base + media_time - wall_clock()
                        if delay > 0:
                            time.sleep(delay)
                    received = wall_clock()
                    capture = base + media_time
                    last_time[packet.stream.index] = media_time
                    end_time = max(end_time, media_time)
                    if isinstance(frame, av.VideoFrame):
                        self.frames_decoded += 1
                        msg = sampler.push(frame, media_time=media_time, capture_ts=capture, received=received)
                        if msg is not None:
                            heapq.heappush(heap, (msg.media_time, next(order), msg))
                    elif isinstance(frame, av.AudioFrame):
                        for chunk in chunker.push(frame, media_time=media_time, capture_ts=capture, received=received):
                            heapq.heappush(heap, (chunk.media_time, next(order), chunk))
                pending = chunker.pending_start
                if audio is not None and pending is not None:
                    last_time[audio.index] = pending
                watermark = min(last_time.values())
                while heap and (heap[0][0] <= watermark or len(heap) > _REORDER_LIMIT):
                    emitted += 1
                    yield heapq.heappop(heap)[2]
            for chunk in chunker.flush():  # the resampler's held-back samples complete the last chunk
                heapq.heappush(heap, (chunk.media_time, next(order), chunk))
            while heap:
                emitted += 1
                yield heapq.heappop(heap)[2]
            self._check_complete(container, end_time, emitted)
        finally:
            container.close()

    def _check_complete(self, container: av.container.InputContainer, end_time: float, emitted: int) -> None:
        if emitted == 0:
            raise MediaSourceError(
                f"{self._name()} contains no decodable video or audio (truncated or damaged); "
                "give a complete recording"
            )
        declared = _declared_length(container)
        if declared is not None and not _is_url(self.path):
            if end_time + _TRUNCATION_SLACK_S < declared:
                self._warn(
                    f"{self._name()} ends at {end_time:.1f} s but declares {declared:.1f} s (truncated?); "
                    "analysed what could be decoded"
                )

    def _warn(self, text: str) -> None:
        self.warnings.append(text)
        log.warning("media source warning: %s", text)

    async def stream(self) -> AsyncIterator[MediaMessage]:
        """The same messages paced in real time; decoding runs in a worker thread."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[MediaMessage | BaseException | None] = asyncio.Queue(_STREAM_QUEUE)
        stop = threading.Event()

        def put(item: MediaMessage | BaseException | None) -> None:
            fut = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            while not stop.is_set():
                try:
                    fut.result(timeout=0.2)
                    return
                except TimeoutError:
                    continue
            fut.cancel()

        def work() -> None:
            try:
                for msg in self._messages(paced=True, stop=stop):
                    put(msg)
                    if stop.is_set():
                        return
                put(None)
            except BaseException as exc:  # handed to the consumer, re-raised there
                put(exc)

        thread = threading.Thread(target=work, name="classpulse-file-source", daemon=True)
        thread.start()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while not queue.empty():
                queue.get_nowait()
            await asyncio.to_thread(thread.join, 5.0)
