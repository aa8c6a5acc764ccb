"""Sampling decoded media into analysis messages, shared by WHIP tracks and file sources.

* :class:`FrameSampler` sees every decoded video frame, keeps the latest one and emits a
  :class:`~shared.contracts.media.VideoFrame` whenever the media clock crosses the next
  analysis tick (default 5 fps). Only emitted frames are converted and resized (OpenCV,
  ``INTER_AREA``), so skipped frames cost nothing beyond their decode.
* :class:`AudioChunker` turns decoded audio of any rate/layout into fixed chunks (default
  0.5 s) of 16 kHz mono float32, resampled with torchaudio.

Timing: the caller passes ``capture_ts`` (wall clock of the media) and ``received`` (when
ingest got the frame); each message carries an ``ingest`` stage stamp.
"""

from __future__ import annotations

import math

import av
import cv2
import numpy as np
import torch
from numpy.typing import NDArray
from torchaudio.transforms import Resample

from shared.contracts.events import Role
from shared.contracts.media import AudioChunk, VideoFrame
from shared.contracts.timing import StageStamp, TimingTrail, wall_clock

ANALYSIS_SAMPLE_RATE = 16_000
_GAP_TOLERANCE_S = 0.1


def ingest_trail(*, capture_ts: float, received: float, emitted: float | None = None) -> TimingTrail:
    """A timing trail with the capture time and one ``ingest`` stamp."""
    stamp = StageStamp(stage="ingest", received=received, emitted=wall_clock() if emitted is None else emitted)
    return TimingTrail(capture_ts=capture_ts, stages=[stamp])


def resize_to_width(image: NDArray[np.uint8], width: int) -> NDArray[np.uint8]:
    """Resize a BGR image to ``width`` keeping the aspect (even height); no-op when it already fits."""
    h, w = image.shape[:2]
    if w == width:
        return image
    height = max(2, round(h * width / w / 2) * 2)
    out = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return np.asarray(out, dtype=np.uint8)


def frame_to_bgr(frame: av.VideoFrame, width: int) -> NDArray[np.uint8]:
    """Convert a decoded frame (any pixel format, e.g. yuv420p or yuvj420p) to BGR24 at ``width``."""
    image = np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8)
    return resize_to_width(image, width)


class FrameSampler:
    """Keeps the latest decoded frame and emits one analysis frame per tick of media time."""

    def __init__(
        self, *, session: str, participant: str, role: Role = "student", fps: float = 5.0, width: int = 640
    ) -> None:
        if fps <= 0:
            raise ValueError("fps must be > 0")
        if width < 2:
            raise ValueError("width must be >= 2")
        self.session = session
        self.participant = participant
        self.role: Role = role
        self.fps = fps
        self.width = width
        self.seq = 0
        self.frames_seen = 0
        self.latest: av.VideoFrame | None = None
        self._next_tick = 0.0

    def due(self, media_time: float) -> bool:
        """Whether a frame at ``media_time`` would be emitted (callers may skip work otherwise)."""
        return media_time + 1e-6 >= self._next_tick

    def note(self, frame: av.VideoFrame) -> None:
        """Count a decoded frame and keep it as the latest (no conversion)."""
        self.frames_seen += 1
        self.latest = frame

    def push(
        self, frame: av.VideoFrame, *, media_time: float, capture_ts: float, received: float | None = None
    ) -> VideoFrame | None:
        """Offer one decoded frame; returns an analysis frame when a tick is due."""
        self.note(frame)
        if not self.due(media_time):
            return None
        image = frame_to_bgr(frame, self.width)
        return self.sample(image, media_time=media_time, capture_ts=capture_ts, received=received)

    def sample(
        self, image: NDArray[np.uint8], *, media_time: float, capture_ts: float, received: float | None = None
    ) -> VideoFrame:
        """Emit ``image`` as the next analysis frame and move the tick past ``media_time``."""
        self._next_tick = (math.floor(max(0.0, media_time) * self.fps + 1e-6) + 1) / self.fps
        msg = VideoFrame.from_image(
            image,
            session=self.session,
            participant=self.participant,
            role=self.role,
            seq=self.seq,
            media_time=max(0.0, media_time),
            timing=ingest_trail(capture_ts=capture_ts, received=wall_clock() if received is None else received),
        )
        self.seq += 1
        return msg


_SCALE = {np.dtype(np.int16): 1 / 32768.0, np.dtype(np.int32): 1 / 2147483648.0}


def audio_to_mono(frame: av.AudioFrame) -> NDArray[np.float32]:
    """Decoded audio (any sample format, packed or planar, any layout) as mono float32 in [-1, 1].

    Called for every 20 ms frame of every WHIP stream, so it uses few numpy passes.
    """
    data = frame.to_ndarray()
    channels = frame.layout.nb_channels
    arr = data.reshape(channels, -1) if frame.format.is_planar else data.reshape(-1, channels).T
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr.astype(np.float32).mean(axis=0) / 128.0 - 1.0, dtype=np.float32)
    scale = _SCALE.get(arr.dtype, 1.0)
    if channels == 1:
        mono = arr[0].astype(np.float32)
    elif channels == 2:
        mono = arr[0].astype(np.float32)
        mono += arr[1]
        scale *= 0.5
    else:
        mono = arr.astype(np.float32).mean(axis=0)
    if scale != 1.0:
        mono *= np.float32(scale)
    return np.ascontiguousarray(mono, dtype=np.float32)


class AudioChunker:
    """Buffers decoded audio at its own rate and emits fixed 16 kHz mono chunks.

    Each chunk is resampled as one block (torchaudio, cached kernel per input rate).
    ``media_time`` is the chunk's first sample; ``capture_ts`` is the wall-clock time of
    its *last* sample (``capture_start + duration``, never after the frame that completed
    it arrived), since a chunk exists only once it is complete. A gap in the input
    timestamps drops the partial chunk and restarts.
    """

    def __init__(
        self,
        *,
        session: str,
        participant: str,
        role: Role = "student",
        chunk_s: float = 0.5,
        sample_rate: int = ANALYSIS_SAMPLE_RATE,
    ) -> None:
        if not 0.01 <= chunk_s <= 10.0:
            raise ValueError("chunk_s must be within [0.01, 10] seconds")
        self.session = session
        self.participant = participant
        self.role: Role = role
        self.chunk_s = chunk_s
        self.sample_rate = sample_rate
        self.seq = 0
        self.gaps = 0
        self._rate: int | None = None
        self._resampler: Resample | None = None
        self._parts: list[NDArray[np.float32]] = []
        self._buffered = 0
        self._start_time = 0.0  # media time of the first buffered sample
        self._start_capture = 0.0  # wall clock of the first buffered sample
        self._received = 0.0

    @property
    def pending_start(self) -> float | None:
        """Media time of the first sample not yet emitted in a chunk (None when nothing is buffered)."""
        return self._start_time if self._buffered else None

    def _block(self) -> int:
        assert self._rate is not None
        return max(1, round(self.chunk_s * self._rate))

    def push(
        self, frame: av.AudioFrame, *, media_time: float, capture_ts: float, received: float | None = None
    ) -> list[AudioChunk]:
        """Offer one decoded audio frame; returns the chunks it completed (often none)."""
        mono = audio_to_mono(frame)
        return self.push_samples(
            mono, rate=frame.sample_rate, media_time=media_time, capture_ts=capture_ts, received=received
        )

    def push_samples(
        self,
        samples: NDArray[np.float32],
        *,
        rate: int,
        media_time: float,
        capture_ts: float,
        received: float | None = None,
    ) -> list[AudioChunk]:
        """Offer mono float32 samples at ``rate`` starting at ``media_time``."""
        if rate <= 0:
            raise ValueError("sample rate must be > 0")
        now = wall_clock() if received is None else received
        if self._rate != rate:
            self._reset(rate)
        if self._buffered:
            expected = self._start_time + self._buffered / rate
            if abs(media_time - expected) > _GAP_TOLERANCE_S:
                self.gaps += 1
                self._reset(rate)
        if not self._buffered:
            self._start_time = max(0.0, media_time)
        # Re-derive the chunk's start from the newest mapping, so clock updates apply at once.
        self._start_capture = capture_ts - self._buffered / rate
        self._parts.append(samples)
        self._buffered += len(samples)
        self._received = now
        out: list[AudioChunk] = []
        block = self._block()
        while self._buffered >= block:
            out.append(self._emit(block))
        return out

    def _reset(self, rate: int) -> None:
        if rate != self._rate:
            self._rate = rate
            self._resampler = None if rate == self.sample_rate else Resample(rate, self.sample_rate)
        self._parts = []
        self._buffered = 0

    def _emit(self, block: int) -> AudioChunk:
        assert self._rate is not None
        data = np.concatenate(self._parts) if len(self._parts) > 1 else self._parts[0]
        head, rest = data[:block], data[block:]
        self._parts = [rest] if len(rest) else []
        self._buffered = len(rest)
        wave = self._resample(head)
        duration = block / self._rate
        chunk = AudioChunk.from_waveform(
            wave,
            sample_rate=self.sample_rate,
            session=self.session,
            participant=self.participant,
            role=self.role,
            seq=self.seq,
            media_time=self._start_time,
            timing=ingest_trail(
                capture_ts=min(self._start_capture + duration, self._received), received=self._received
            ),
        )
        self.seq += 1
        self._start_time += duration
        self._start_capture += duration
        return chunk

    def _resample(self, wave: NDArray[np.float32]) -> NDArray[np.float32]:
        if self._resampler is None:
            return np.clip(wave, -1.0, 1.0).astype(np.float32)
        with torch.no_grad():
            out = self._resampler(torch.from_numpy(np.ascontiguousarray(wave))).numpy()
        return np.asarray(np.clip(out, -1.0, 1.0), dtype=np.float32)
