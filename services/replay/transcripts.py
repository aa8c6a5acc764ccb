"""Speech transcription during a replay: the transcribe stage in its own thread, beside the analysis.

:class:`ReplayTranscriber` takes each audio chunk the replay analyses (:meth:`put`, in media
order per participant, from the analysis thread), segments speech with silero-vad in its own
thread and packs closed segments into Whisper windows (a window's cost does not depend on how
much speech is in it, so segments wait until ``PACK_S`` seconds of them are pending or the
replay ends). :meth:`finish` returns every segment's :class:`InteractionEvent` (``source:
speech``) in media order: the replay counts their words and questions and, with
``--transcripts`` only, keeps their text for ``report.json``'s ``transcript``. The queue is
bounded: a slow transcriber slows the replay down, it never loses speech.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from shared.contracts.interactions import InteractionEvent
from shared.contracts.media import AudioChunk
from shared.contracts.report import TranscriptLine
from shared.log import get_logger

if TYPE_CHECKING:
    from services.inference.features_audio import VadWindows
    from services.inference.transcribe.stage import Spoken, TranscribeStage

log = get_logger(__name__)
QUEUE_MAX = 256
_END = object()


class ReplayTranscriber(threading.Thread):
    """The transcribe stage of one replay (see the module docstring); ``start()`` it, ``put()``, ``finish()``."""

    def __init__(
        self,
        *,
        stage: TranscribeStage,
        offsets: dict[str, float] | None = None,
        vad_windows: Callable[[AudioChunk], VadWindows | None] | None = None,
    ) -> None:
        super().__init__(name="replay-transcribe", daemon=True)
        self.stage = stage
        self.offsets = offsets or {}
        self.vad_windows = vad_windows
        """Where a chunk's silero-vad windows were computed already (the engine's
        :meth:`~services.inference.engine.InferenceEngine.take_vad_windows`): segmenting then reuses them."""
        self._queue: queue.Queue[object] = queue.Queue(maxsize=QUEUE_MAX)
        self._events: list[InteractionEvent] = []
        self._error: BaseException | None = None

    def put(self, chunk: AudioChunk) -> None:
        """Hand over one analysed audio chunk (blocks while the transcriber is behind)."""
        if self._error is not None:
            raise RuntimeError("speech transcription failed") from self._error
        windows = self.vad_windows(chunk) if self.vad_windows is not None else None
        self._queue.put((chunk, windows))

    def run(self) -> None:
        from services.inference.transcribe.model import PACK_S

        pending: list[Spoken] = []
        try:
            self.stage.load()
            while True:
                item = self._queue.get()
                if item is _END:
                    break
                assert isinstance(item, tuple)
                chunk, windows = item
                pending += self.stage.segment(chunk, windows)
                if sum(s.segment.end - s.segment.start for s in pending) >= PACK_S:
                    self._events += self.stage.transcribe(pending)
                    pending = []
            self._events += self.stage.transcribe([*pending, *self.stage.close_open()])
        except BaseException as exc:  # reported by put()/finish() in the replay's thread
            self._error = exc
            while True:  # unblock a producer waiting on a full queue
                try:
                    if self._queue.get_nowait() is _END:
                        break
                except queue.Empty:
                    break

    def close(self) -> None:
        """Let the thread end without waiting for it (a replay that failed); idempotent."""
        if self.is_alive():
            try:
                self._queue.put_nowait(_END)
            except queue.Full:  # a failing replay: drain what the thread will never read
                while not self._queue.empty():
                    self._queue.get_nowait()
                self._queue.put_nowait(_END)

    def finish(self) -> list[InteractionEvent]:
        """Wait for the last segments; the events in session-time order (raises what the stage raised)."""
        if self._error is None and self.is_alive():
            self._queue.put(_END)
        self.join()
        if self._error is not None:
            raise RuntimeError(f"speech transcription failed: {self._error}") from self._error
        log.info("replay transcription %s -> %s", "running", "done",
                 extra={"segments": self.stage.segments, "speech_s": round(self.stage.speech_s, 1)})
        return sorted(self._events, key=lambda e: (self.session_time(e, e.start), e.participant))

    def session_time(self, event: InteractionEvent, media_s: float | None) -> float:
        return round(self.offsets.get(event.participant, 0.0) + (media_s or 0.0), 3)

    def transcript(self, events: list[InteractionEvent]) -> list[TranscriptLine]:
        """``report.json``'s ``transcript``: events that kept their text, on the session clock."""
        return [
            TranscriptLine(participant=e.participant, start=self.session_time(e, e.start),
                           end=self.session_time(e, e.end), text=e.text)
            for e in events if e.text
        ]
