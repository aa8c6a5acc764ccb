"""Speaking segments of one participant from 16 kHz audio and silero-vad, streaming.

A segment is a run of speech: it starts at the first 32 ms window whose speech probability
reaches the threshold (with ``pad_ms`` of audio before it), continues through pauses shorter
than the hang-over, and ends after ``hangover_ms`` below ``threshold - 0.15`` (keeping
``pad_ms`` after the last speech). A run longer than ``max_segment_s`` is cut there and goes on
as a new segment. Segments with less than ``min_speech_ms`` of speech are dropped.

:class:`SegmentTracker` is one participant's state (its VAD stream and the open segment's
audio, bounded by ``max_segment_s``); the VAD model is shared. Times are seconds of the
participant's media.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from services.inference.features_audio import SAMPLE_RATE, WINDOW, SileroVad, VadStream, VadWindows

WINDOW_S = WINDOW / SAMPLE_RATE
OFF_MARGIN = 0.15
"""A window counts as silence below ``threshold - OFF_MARGIN`` (hysteresis, as faster-whisper's VAD)."""


@dataclass(frozen=True, slots=True)
class SegmentRules:
    threshold: float = 0.5
    hangover_s: float = 0.5
    pad_s: float = 0.2
    min_speech_s: float = 0.25
    max_segment_s: float = 15.0


@dataclass(frozen=True, slots=True)
class SpeechSegment:
    """One speaking segment: media seconds and its 16 kHz samples."""

    start: float
    end: float
    audio: NDArray[np.float32] = field(repr=False)
    speech_s: float


@dataclass(eq=False)
class SegmentTracker:
    """One participant's speech segmenting (see the module docstring)."""

    rules: SegmentRules
    vad: VadStream = field(default_factory=VadStream)
    pending: NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    """Samples that do not fill a window yet."""
    pending_at: float | None = None
    """Media time of ``pending[0]`` (or of the next sample when it is empty)."""
    preroll: deque[NDArray[np.float32]] = field(default_factory=deque)
    windows: list[NDArray[np.float32]] = field(default_factory=list)
    """The open segment's windows (empty: no segment open)."""
    start: float = 0.0
    speech_windows: int = 0
    silent_windows: int = 0
    last_audio_wall: float = 0.0

    @property
    def open(self) -> bool:
        return bool(self.windows)

    def feed(
        self, wave: NDArray[np.float32], media_time: float, vad: SileroVad, windows: VadWindows | None = None
    ) -> list[SpeechSegment]:
        """Take a 16 kHz chunk starting at ``media_time``; return the segments it closed.

        ``windows``: this chunk's window probabilities computed elsewhere on the same audio from the
        same start (the replay engine's VAD, :class:`VadWindows`); used when they line up with this
        tracker's windows (same samples carried over, same count), else the tracker runs ``vad``.
        """
        if self.pending_at is None or abs(self.pending_at + self.pending.size / SAMPLE_RATE - media_time) > 0.05:
            # first audio, or a gap in the media (muted, dropped chunks): what was open ends here
            closed = self.flush()
            self.preroll.clear()
            self.pending = np.zeros(0, dtype=np.float32)
            self.pending_at = media_time
        else:
            closed = []
        data = np.concatenate([self.pending, np.asarray(wave, dtype=np.float32)])
        n = data.size // WINDOW
        parts = [data[i * WINDOW : (i + 1) * WINDOW] for i in range(n)]
        if windows is not None and windows.carried == self.pending.size and len(windows.probs) == n:
            probs = list(windows.probs)
        else:
            probs = vad.process([(self.vad, w) for w in parts]) if parts else []
        at = self.pending_at
        for w, p in zip(parts, probs, strict=True):
            segment = self._window(w, p, at)
            if segment is not None:
                closed.append(segment)
            at += WINDOW_S
        self.pending = np.array(data[n * WINDOW :], dtype=np.float32)
        self.pending_at = at
        return closed

    def _window(self, w: NDArray[np.float32], p: float, at: float) -> SpeechSegment | None:
        r = self.rules
        pad = round(r.pad_s / WINDOW_S)
        if not self.windows:
            if p >= r.threshold:
                self.windows = [*self.preroll, w]
                self.start = max(0.0, at - len(self.preroll) * WINDOW_S)
                self.preroll.clear()
                self.speech_windows, self.silent_windows = 1, 0
            else:
                self.preroll.append(w)
                while len(self.preroll) > pad:
                    self.preroll.popleft()
            return None
        self.windows.append(w)
        if p >= r.threshold - OFF_MARGIN:
            self.speech_windows += 1 if p >= r.threshold else 0
            self.silent_windows = 0
        else:
            self.silent_windows += 1
        if self.silent_windows * WINDOW_S >= r.hangover_s:
            return self._close(trailing=max(0, self.silent_windows - pad))
        if len(self.windows) * WINDOW_S >= r.max_segment_s:
            return self._close(trailing=0)
        return None

    def _close(self, *, trailing: int) -> SpeechSegment | None:
        """End the open segment, leaving out its last ``trailing`` (silent) windows."""
        kept = self.windows[: len(self.windows) - trailing] if trailing else self.windows
        speech_s = self.speech_windows * WINDOW_S
        start = self.start
        self.windows, self.speech_windows, self.silent_windows = [], 0, 0
        if not kept or speech_s < self.rules.min_speech_s:
            return None
        audio = np.concatenate(kept)
        return SpeechSegment(start=round(start, 3), end=round(start + audio.size / SAMPLE_RATE, 3), audio=audio,
                             speech_s=round(speech_s, 3))

    def flush(self) -> list[SpeechSegment]:
        """End whatever segment is open (end of the media, a gap, the participant went quiet)."""
        if not self.windows:
            return []
        trailing = max(0, self.silent_windows - round(self.rules.pad_s / WINDOW_S))
        segment = self._close(trailing=trailing)
        return [segment] if segment is not None else []
