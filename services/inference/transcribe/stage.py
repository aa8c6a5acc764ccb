"""The transcribe stage: audio chunks -> speaking segments -> Whisper -> ``source: speech`` InteractionEvents.

Synchronous and transport-free (like the inference engine), so ``classpulse replay`` and the
live host (:mod:`services.inference.transcribe.live`) share it::

    stage = TranscribeStage(settings=TranscribeSettings(), keep_text=False)
    stage.load()
    for chunk in chunks:                       # one participant's chunks in media order
        events += stage.feed(chunk)
    events += stage.flush()                    # end of the media: the open segments

Each participant has one :class:`~services.inference.transcribe.segments.SegmentTracker` (its
silero-vad stream and the open segment, at most ``max_segment_s`` of audio); the VAD and
Whisper models are shared. An event carries the segment's ``start``/``end`` (media seconds),
``ts`` = the capture time of the segment's end, ``words`` and ``is_question`` derived from the
text, and the text itself only when ``keep_text`` (``CLASSPULSE_KEEP_TEXT=true`` live,
``replay --transcripts``). Event ids are stable (session, participant, start in ms), so a
segment transcribed twice after a redelivery is deduplicated downstream. Nothing here logs text.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from services.inference.features_audio import SileroVad, VadWindows, to_16k
from services.inference.transcribe.model import WhisperTranscriber
from services.inference.transcribe.segments import SegmentRules, SegmentTracker, SpeechSegment
from services.inference.transcribe.settings import TranscribeSettings
from shared.contracts.events import Role
from shared.contracts.interactions import MAX_TEXT_CHARS, InteractionEvent
from shared.contracts.media import AudioChunk
from shared.contracts.timing import wall_clock
from shared.metrics import Metrics

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Speaker:
    session: str
    participant: str
    role: Role
    epoch: float
    """Capture time (epoch s) of media time 0 of this participant (from the chunks' timing)."""


@dataclass(frozen=True, slots=True)
class Spoken:
    """A closed speech segment and whose it is (waiting for Whisper)."""

    speaker: Speaker
    segment: SpeechSegment


def rules_from(settings: TranscribeSettings) -> SegmentRules:
    return SegmentRules(
        threshold=settings.speech_threshold,
        hangover_s=settings.hangover_ms / 1000,
        pad_s=settings.pad_ms / 1000,
        min_speech_s=settings.min_speech_ms / 1000,
        max_segment_s=settings.max_segment_s,
    )


class TranscribeStage:
    """Speech segments of many participants, transcribed one at a time (see the module docstring)."""

    def __init__(
        self,
        *,
        settings: TranscribeSettings,
        keep_text: bool,
        metrics: Metrics | None = None,
        model: WhisperTranscriber | None = None,
    ) -> None:
        self.settings = settings
        self.keep_text = keep_text
        self._metrics = metrics
        self.model = model or WhisperTranscriber(settings=settings, metrics=metrics)
        self._vad = SileroVad()
        self._rules = rules_from(settings)
        self._trackers: dict[Key, SegmentTracker] = {}
        self._last: dict[Key, Speaker] = {}
        self._lock = threading.Lock()
        self.segments = 0
        self.speech_s = 0.0

    def load(self, *, vad: bool = True, whisper: bool = True) -> None:
        """Load silero-vad and the Whisper model (explicit, not at init); a segmenting-only host
        (the inference worker feeding ``classpulse transcribe``) skips Whisper, a transcribe worker the VAD."""
        if vad:
            self._vad.load()
        if whisper and not self.model.loaded:
            self.model.load()

    def participants(self) -> list[Key]:
        with self._lock:
            return list(self._trackers)

    def segment(self, chunk: AudioChunk, windows: VadWindows | None = None) -> list[Spoken]:
        """One audio chunk (a participant's chunks in media order) -> the segments it closed (VAD only).

        ``windows``: the chunk's VAD window probabilities when already computed (replay: by the engine).
        """
        key = (chunk.session, chunk.participant)
        with self._lock:
            tracker = self._trackers.get(key)
            if tracker is None:
                tracker = self._trackers[key] = SegmentTracker(rules=self._rules)
            speaker = Speaker(
                session=chunk.session, participant=chunk.participant, role=chunk.role,
                epoch=chunk.timing.capture_ts - chunk.media_time,
            )
            self._last[key] = speaker
            tracker.last_audio_wall = time.monotonic()
            closed = tracker.feed(to_16k(chunk.waveform(), chunk.sample_rate), chunk.media_time, self._vad, windows)
        return [Spoken(speaker=speaker, segment=s) for s in closed]

    def feed(self, chunk: AudioChunk) -> list[InteractionEvent]:
        """:meth:`segment` then :meth:`transcribe` at once (lowest latency, one Whisper call per chunk)."""
        return self.transcribe(self.segment(chunk))

    def close_open(self, keys: list[Key] | None = None) -> list[Spoken]:
        """End the open segments (of ``keys``; default all) and forget those participants."""
        out: list[Spoken] = []
        with self._lock:
            for key in list(self._trackers) if keys is None else keys:
                tracker = self._trackers.pop(key, None)
                speaker = self._last.pop(key, None)
                if tracker is not None and speaker is not None:
                    out += [Spoken(speaker=speaker, segment=s) for s in tracker.flush()]
        return out

    def flush(self, keys: list[Key] | None = None) -> list[InteractionEvent]:
        """Transcribe the open segments (of ``keys``; default all) and forget those participants."""
        return self.transcribe(self.close_open(keys))

    def idle(self, *, max_idle_s: float, now: float | None = None) -> list[Key]:
        """Participants whose last audio came ``max_idle_s`` or more ago (monotonic clock)."""
        cutoff = (time.monotonic() if now is None else now) - max_idle_s
        with self._lock:
            return [k for k, t in self._trackers.items() if t.last_audio_wall <= cutoff]

    def transcribe(self, spoken: list[Spoken]) -> list[InteractionEvent]:
        """Whisper on segments (packed, see :meth:`WhisperTranscriber.transcribe_many`) -> their events.

        A segment without words makes no event.
        """
        if not spoken:
            return []
        texts = self.model.transcribe_many([s.segment.audio for s in spoken])
        out = []
        for item, text in zip(spoken, texts, strict=True):
            event = self._event(item, text[:MAX_TEXT_CHARS])
            if event is not None:
                out.append(event)
        return out

    def _event(self, item: Spoken, text: str) -> InteractionEvent | None:
        speaker, segment = item.speaker, item.segment
        self.segments += 1
        self.speech_s += segment.end - segment.start
        if self._metrics is not None:
            self._metrics.transcribe_speech_seconds_total.inc(segment.end - segment.start)
            self._metrics.transcribe_segments_total.labels("text" if text else "empty").inc()
        if not text:
            return None
        event = InteractionEvent(
            event_id=f"speech:{speaker.session}/{speaker.participant}/{round(segment.start * 1000)}",
            session=speaker.session,
            participant=speaker.participant,
            role=speaker.role,
            kind="chat",
            ts=at if (at := speaker.epoch + segment.end) > 0 else wall_clock(),
            source="speech",
            text=text,
            start=segment.start,
            end=segment.end,
        )
        return event.derived(keep_text=self.keep_text)
