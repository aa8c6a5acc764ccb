"""Sampling decoded media into analysis messages, shared by WHIP tracks and file sources.

* :class:`FrameSampler` sees every decoded video frame, keeps the latest one and emits a
  :class:`~shared.contracts.media.VideoFrame` whenever the media clock crosses the next
  analysis tick (default 5 fps, capped by a shared :class:`~shared.transport.rate.SourceRate`:
  the rate inference's degradation policy analyses now). Ticks lie on the grid of the message's
  media time (publish offset included), the grid the policy thins on, so it admits every frame
  sampled here. Only emitted frames are converted and resized (OpenCV, ``INTER_AREA``), so
  skipped frames cost nothing beyond their decode.
* :class:`AudioChunker` turns decoded audio of any rate/layout/sample format into fixed chunks
  (default 0.5 s) of 16 kHz mono float32, converted by FFmpeg's resampler through PyAV
  (``av.AudioResampler``): no torch in ingest.

Timing: the caller passes ``capture_ts`` (wall clock of the media) and ``received`` (when
ingest got the frame); each message carries an ``ingest`` stage stamp. A publish after the
participant's first one (a reconnect) passes its ``epoch`` and ``media_offset``
(:mod:`shared.transport.publishes`): seq restarts at 0, media_time continues.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import av
import cv2
import numpy as np
from numpy.typing import NDArray

from shared.contracts.events import Role
from shared.contracts.media import AudioChunk, VideoFrame
from shared.contracts.timing import StageStamp, TimingTrail, wall_clock
from shared.transport.rate import SourceRate

ANALYSIS_SAMPLE_RATE = 16_000
_GAP_TOLERANCE_S = 0.1  # timestamps further than this from the sample count: a gap (restart)
_FILL_MIN_S = 0.002  # a smaller forward jump is timestamp rounding (e.g. mkv's 1 ms), not a gap
# swresample's downmix adds channels at -3 dB each and, for float output, does not normalise
# (L = R gives 1.41 L); capping the matrix at 1 makes stereo -> mono the channel mean.
_RESAMPLER_OPTIONS = {"rematrix_maxval": "1.0"}


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


def _tick_after(t: float, fps: float) -> float:
    """The first tick of a ``fps`` grid after media time ``t`` (the degradation policy's grid too)."""
    return (math.floor(t * fps + 1e-6) + 1) / fps


class FrameSampler:
    """Keeps the latest decoded frame and emits one analysis frame per tick of media time."""

    def __init__(
        self,
        *,
        session: str,
        participant: str,
        role: Role = "student",
        fps: float = 5.0,
        width: int = 640,
        epoch: int = 0,
        media_offset: float = 0.0,
        rate: SourceRate | None = None,
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
        self.epoch = epoch  # the publish (shared.transport.publishes): seq restarts at 0 per epoch
        self.media_offset = media_offset  # media_time of this publish's start
        self.seq = 0
        self.frames_seen = 0
        self.latest: av.VideoFrame | None = None
        self.rate = rate  # the consumer's cap (thinning at the source); None = always ``fps``
        self.thinned = 0  # frames not emitted only because of the cap
        self._next_tick = 0.0  # on the grid of media_offset + media_time
        self._full_tick = 0.0  # the next tick at ``fps``, uncapped
        self._credit = False  # a frame was emitted between two uncapped ticks: it stands for the next one

    @property
    def current_fps(self) -> float:
        """The rate frames are emitted at now: ``fps``, or the consumer's cap below it."""
        return self.fps if self.rate is None else self.rate.cap(self.fps)

    def due(self, media_time: float) -> bool:
        """Whether a frame at ``media_time`` would be emitted (callers may skip work otherwise)."""
        return self.media_offset + max(0.0, media_time) + 1e-6 >= self._next_tick

    def skip(self, media_time: float) -> bool:
        """A frame that is not :meth:`due`: True (and counted in ``thinned``) when it would have been
        emitted without the cap, i.e. it is an analysis frame dropped at the source."""
        t = self.media_offset + max(0.0, media_time)
        if t + 1e-6 < self._full_tick:
            return False
        self._full_tick = _tick_after(t, self.fps)
        if self._credit:
            self._credit = False
            return False
        self.thinned += 1
        return True

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
            self.skip(media_time)
            return None
        image = frame_to_bgr(frame, self.width)
        return self.sample(image, media_time=media_time, capture_ts=capture_ts, received=received)

    def sample(
        self, image: NDArray[np.uint8], *, media_time: float, capture_ts: float, received: float | None = None
    ) -> VideoFrame:
        """Emit ``image`` as the next analysis frame and move the tick past ``media_time``."""
        t = self.media_offset + max(0.0, media_time)
        self._next_tick = _tick_after(t, self.current_fps)
        if t + 1e-6 >= self._full_tick:
            self._full_tick = _tick_after(t, self.fps)
        else:
            self._credit = True
        msg = VideoFrame.from_image(
            image,
            session=self.session,
            participant=self.participant,
            role=self.role,
            epoch=self.epoch,
            seq=self.seq,
            media_time=self.media_offset + max(0.0, media_time),
            timing=ingest_trail(capture_ts=capture_ts, received=wall_clock() if received is None else received),
        )
        self.seq += 1
        return msg


class AudioChunker:
    """Resamples decoded audio as one continuous stream and cuts fixed 16 kHz mono chunks.

    Frames go to FFmpeg's resampler (``av.AudioResampler``: any sample format, layout and
    rate in; ``flt`` mono at 16 kHz out; stereo becomes the channel mean), which keeps its
    filter state across frames, so chunk edges carry no artefacts. Frames are resampled in
    blocks, not one by one: decoded frames wait (as they are) until they complete the next
    chunk, then go through the resampler as one frame (about two calls per chunk, the second
    for the look-ahead, instead of one per 20 ms Opus frame; the output is the same stream).
    The resampler's output is time-aligned with its input but holds back about 1 ms (the
    filter's look-ahead): a chunk is complete once the frame after its end arrives, or on
    :meth:`flush` at the end of the stream.

    Timing comes from counting samples: ``media_time`` of chunk ``k`` of a run is the run's
    start plus ``k`` chunk durations, exactly. Input timestamps only check the count: a
    forward jump of up to 0.1 s (a lost 20 ms Opus packet) is filled with silence so later
    chunks stay on time; a larger jump, or one backwards, drops the partial chunk and starts
    a new run (``gaps``). ``capture_ts`` is the wall-clock time of a chunk's *last* sample
    (from the newest frame's capture time, never after that frame arrived), since a chunk
    exists only once it is complete. A change of rate, layout or sample format starts a new
    run too.
    """

    def __init__(
        self,
        *,
        session: str,
        participant: str,
        role: Role = "student",
        chunk_s: float = 0.5,
        sample_rate: int = ANALYSIS_SAMPLE_RATE,
        epoch: int = 0,
        media_offset: float = 0.0,
    ) -> None:
        if not 0.01 <= chunk_s <= 10.0:
            raise ValueError("chunk_s must be within [0.01, 10] seconds")
        self.session = session
        self.participant = participant
        self.role: Role = role
        self.chunk_s = chunk_s
        self.sample_rate = sample_rate
        self.epoch = epoch
        self.media_offset = media_offset
        self.seq = 0
        self.gaps = 0
        self.filled_s = 0.0  # silence inserted for small forward jumps (lost packets)
        self._block = max(1, round(chunk_s * sample_rate))  # output samples per chunk
        self._input: tuple[str, str, int] | None = None  # (format, layout, rate) of the current run
        self._resampler: av.AudioResampler | None = None
        self._run_start = 0.0  # media time of the run's first sample
        self._fed = 0  # input samples given to the resampler in this run (silence included)
        self._emitted = 0  # output samples emitted in chunks in this run
        self._parts: list[NDArray[np.float32]] = []
        self._buffered = 0  # output samples waiting for a chunk
        self._waiting: list[av.AudioFrame] = []  # decoded input not resampled yet (one block at a time)
        self._waiting_samples = 0
        self.resample_calls = 0
        self._offset = 0.0  # capture_ts - media_time, from the newest frame
        self._received = 0.0

    @property
    def pending_start(self) -> float | None:
        """Media time of the first sample not yet emitted in a chunk (None when nothing is pending)."""
        if self._input is None or self._fed * self.sample_rate <= self._emitted * self._input[2]:
            return None
        return self._chunk_start()

    def _chunk_start(self) -> float:
        return self._run_start + self._emitted / self.sample_rate

    def push(
        self, frame: av.AudioFrame, *, media_time: float, capture_ts: float, received: float | None = None
    ) -> list[AudioChunk]:
        """Offer one decoded audio frame; returns the chunks it completed (often none)."""
        rate = frame.sample_rate
        if rate <= 0:
            raise ValueError("sample rate must be > 0")
        now = wall_clock() if received is None else received
        key = (frame.format.name, frame.layout.name, rate)
        if key != self._input:
            self._restart(key, media_time)
        elif self._fed:
            expected = self._run_start + self._fed / rate
            ahead = media_time - expected
            if ahead > _GAP_TOLERANCE_S or ahead < -_GAP_TOLERANCE_S:
                self.gaps += 1
                self._restart(key, media_time)
            elif ahead > _FILL_MIN_S:
                self._fill(frame, round(ahead * rate))
        # Re-derive the wall clock from the newest frame, so clock updates apply at once.
        self._offset = capture_ts - (self._run_start + self._fed / rate)
        self._received = now
        self._fed += frame.samples
        self._queue(frame)
        if self._waiting_samples * self.sample_rate >= (self._block - self._buffered) * rate:
            self._resample_waiting()  # enough input to complete the next chunk (or, held back, the frame after)
        return self._cut()

    def push_samples(
        self,
        samples: NDArray[np.float32],
        *,
        rate: int,
        media_time: float,
        capture_ts: float,
        received: float | None = None,
    ) -> list[AudioChunk]:
        """Offer mono float32 samples at ``rate`` starting at ``media_time`` (tests, tools)."""
        if rate <= 0:
            raise ValueError("sample rate must be > 0")
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1), format="flt", layout="mono"
        )
        frame.sample_rate = rate
        return self.push(frame, media_time=media_time, capture_ts=capture_ts, received=received)

    def flush(self) -> list[AudioChunk]:
        """End of stream: drain the resampler's held-back samples, return the chunks that completes.

        A partial chunk is dropped; the next frame starts a new run.
        """
        out: list[AudioChunk] = []
        if self._resampler is not None and self._fed:
            self._resample_waiting()
            self._take(self._resampler.resample(None))
            out = self._cut()
        self._input = None
        self._resampler = None
        self._parts, self._buffered, self._fed, self._emitted = [], 0, 0, 0
        self._waiting, self._waiting_samples = [], 0
        return out

    def _restart(self, key: tuple[str, str, int], media_time: float) -> None:
        self._input = key
        self._resampler = av.AudioResampler(
            format="flt", layout="mono", rate=self.sample_rate, options=_RESAMPLER_OPTIONS
        )
        self._run_start = max(0.0, media_time)
        self._parts, self._buffered, self._fed, self._emitted = [], 0, 0, 0
        self._waiting, self._waiting_samples = [], 0

    def _fill(self, like: av.AudioFrame, samples: int) -> None:
        silence = av.AudioFrame(format=like.format.name, layout=like.layout.name, samples=samples)
        silence.sample_rate = like.sample_rate
        zero = 128 if like.format.name.startswith("u8") else 0
        for plane in silence.planes:
            plane.update(bytes([zero]) * plane.buffer_size)
        self.filled_s += samples / like.sample_rate
        self._fed += samples
        self._queue(silence)

    def _queue(self, frame: av.AudioFrame) -> None:
        self._waiting.append(frame)
        self._waiting_samples += frame.samples

    def _resample_waiting(self) -> None:
        """Resample the waiting input as one frame (one resampler call for a whole block)."""
        assert self._resampler is not None
        frames, self._waiting, self._waiting_samples = self._waiting, [], 0
        if not frames:
            return
        if len(frames) == 1:
            block = frames[0]
        else:
            first = frames[0]
            data = np.concatenate([f.to_ndarray() for f in frames], axis=1)  # planar: (ch, n); packed: (1, n*ch)
            block = av.AudioFrame.from_ndarray(data, format=first.format.name, layout=first.layout.name)
            block.sample_rate = first.sample_rate  # no pts: timing comes from counting samples
        self.resample_calls += 1
        self._take(self._resampler.resample(block))

    def _take(self, frames: Sequence[av.AudioFrame | None]) -> None:
        for out in frames:
            if out is not None and out.samples:  # a pass-through flush gives [None]
                data = out.to_ndarray().reshape(-1)
                self._parts.append(np.asarray(data[: out.samples], dtype=np.float32))
                self._buffered += out.samples

    def _cut(self) -> list[AudioChunk]:
        out: list[AudioChunk] = []
        block = self._block
        while self._buffered >= block:
            data = np.concatenate(self._parts) if len(self._parts) > 1 else self._parts[0]
            head, rest = data[:block], data[block:]
            self._parts = [rest] if len(rest) else []
            self._buffered = len(rest)
            out.append(self._emit(np.clip(head, -1.0, 1.0)))
        return out

    def _emit(self, wave: NDArray[np.float32]) -> AudioChunk:
        start = self._chunk_start()
        end = start + len(wave) / self.sample_rate
        chunk = AudioChunk.from_waveform(
            wave,
            sample_rate=self.sample_rate,
            session=self.session,
            participant=self.participant,
            role=self.role,
            epoch=self.epoch,
            seq=self.seq,
            media_time=self.media_offset + start,
            timing=ingest_trail(capture_ts=min(self._offset + end, self._received), received=self._received),
        )
        self.seq += 1
        self._emitted += len(wave)
        return chunk
