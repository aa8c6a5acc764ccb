"""Who speaks in a gallery recording: the mixed audio's voice given to the face whose mouth moves with it.

The engine scores the mixed audio as one audio-only participant (:data:`ROOM`; its ``speaking``
is the same voice-activity decision as any microphone's) and every tile as a participant without
a microphone. :class:`SpeakerAttribution` sits between the engine and the report and decides,
for each of the room's audio chunks (0.5 s by default) that carries voice, whose it is:

* **Mouth motion** of a tile at a frame: how much its lip gap (over mouth width, face mesh
  points 13/14 and 61/291: ``features.mouth_opening``) changed since its previous frame, when
  both frames had a meshed face.
* **Score** of a tile for a voiced chunk: its mean mouth motion at the frames of the
  ``window_s`` (default 1.5 s) centred on the chunk where the room has voice, minus its mean
  motion at the frames without voice from ``baseline_s`` (default 5 s) before that window to its
  end (0 when there are none). This is the covariance of mouth motion with voice activity, up to
  scale: a mouth that moves only with the voice scores high, a still mouth 0, one that moves
  regardless (chewing, a restless face) gains nothing — also in the middle of a long utterance,
  as its silent baseline comes from before it. A tile needs at least ``min_frames`` measured
  voiced frames in the window to take part.
* **Rule.** The chunk goes to the best-scoring tile when its score is at least ``min_motion``
  and at least ``margin`` times the runner-up's; then that tile's frames in the chunk read
  ``speaking``. Otherwise the chunk is **unattributed** and nobody speaks in it: *tied* when two
  or more mouths moved with it (counted for each of them), *no mouth* when none did (a voice from
  an empty tile, a turned-away face or someone off screen).

Events are held back until the window after them has been seen (about ``window_s / 2`` + one
chunk of media); the room's events never leave this stage. The tiles' events then carry
``mic_on`` = the recording has sound at that moment.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.replay.gallery_source import ROOM
from services.replay.pipeline import Scorer
from shared.contracts.events import ScoreEvent
from shared.contracts.media import MediaMessage

METHOD = "mouth-voice-covariance"
AUDIO_GAP_S = 10.0
"""Tile events wait at most this far behind the newest frame for the room's audio (then: no voice)."""
MAX_FRAME_GAP_S = 0.5
"""Mouth motion needs the previous frame within this long."""


@dataclass(frozen=True, kw_only=True)
class AttributionRule:
    window_s: float = 1.5
    baseline_s: float = 5.0
    min_motion: float = 0.02
    margin: float = 1.5
    min_frames: int = 3


@dataclass
class AttributionFigures:
    """Seconds of voiced audio: attributed to this participant, or unattributed with them among the tied."""

    attributed_s: float = 0.0
    tied_s: float = 0.0


@dataclass
class AttributionTotals:
    voiced_s: float = 0.0
    attributed_s: float = 0.0
    tied_s: float = 0.0
    no_mouth_s: float = 0.0
    per_participant: dict[str, AttributionFigures] = field(default_factory=dict)

    @property
    def unattributed_s(self) -> float:
        return self.tied_s + self.no_mouth_s


@dataclass
class _Chunk:
    start: float
    end: float
    voiced: bool
    speaker: str | None = None
    decided: bool = False


@dataclass
class _Mouth:
    """One tile's mouth motion by frame time (pruned behind the decisions)."""

    times: deque[float] = field(default_factory=deque)
    motion: deque[float | None] = field(default_factory=deque)
    last: tuple[float, float] | None = None

    def add(self, t: float, opening: float | None) -> None:
        value = None
        if opening is not None and self.last is not None and t - self.last[0] <= MAX_FRAME_GAP_S:
            value = abs(opening - self.last[1])
        self.last = (t, opening) if opening is not None else None
        self.times.append(t)
        self.motion.append(value)

    def prune(self, before: float) -> None:
        while self.times and self.times[0] < before:
            self.times.popleft()
            self.motion.popleft()


class SpeakerAttribution:
    """Holds tile events until their audio is attributed, then releases them with ``speaking`` set."""

    def __init__(self, *, participants: Sequence[str], rule: AttributionRule | None = None,
                 has_audio: bool = True, chunk_s: float = 0.5) -> None:
        self.rule = rule or AttributionRule()
        self.chunk_s = chunk_s
        """Length of the room's audio chunks (the replay's ``audio_chunk_s``)."""
        self.participants = list(participants)
        self.has_audio = has_audio
        self.totals = AttributionTotals(per_participant={p: AttributionFigures() for p in participants})
        self._held: deque[ScoreEvent] = deque()
        self._chunks: deque[_Chunk] = deque()
        self._mouths = {p: _Mouth() for p in participants}
        self._newest_frame = -math.inf
        self._room_end = -math.inf

    # -- intake ----------------------------------------------------------------------------

    def feed(self, events: Sequence[ScoreEvent]) -> list[ScoreEvent]:
        """Take engine events; return the tile events now decided (in media order)."""
        for e in events:
            if e.participant == ROOM:
                end = e.media_time + self.chunk_s
                self._chunks.append(_Chunk(start=e.media_time, end=end, voiced=e.speaking))
                self._room_end = max(self._room_end, end)
            else:
                mouth = self._mouths.get(e.participant)
                if mouth is not None:
                    mouth.add(e.media_time, e.features.mouth_opening)
                self._newest_frame = max(self._newest_frame, e.media_time)
                self._held.append(e)
        return self._release(final=False)

    def flush(self, events: Sequence[ScoreEvent] = ()) -> list[ScoreEvent]:
        """Everything still held (end of the recording): the last chunks decided with what is known."""
        out = self.feed(events)
        return out + self._release(final=True)

    # -- deciding --------------------------------------------------------------------------

    def _release(self, *, final: bool) -> list[ScoreEvent]:
        half = self.rule.window_s / 2
        horizon = math.inf if final else min(self._newest_frame, self._room_end)
        for c in self._chunks:
            if not c.decided and (final or c.end + half <= horizon):
                self._decide(c)
        # tile events whose chunk is decided, or that no chunk will ever cover
        done_until = max((c.end for c in self._chunks if c.decided), default=-math.inf)
        if not self.has_audio or final:
            done_until = math.inf
        elif self._newest_frame - self._room_end > AUDIO_GAP_S:
            done_until = max(done_until, self._newest_frame - AUDIO_GAP_S)
        out: list[ScoreEvent] = []
        while self._held and self._held[0].media_time < done_until - 1e-9:
            out.append(self._finish(self._held.popleft()))
        keep_from = (self._held[0].media_time if self._held else self._newest_frame) - (
            self.rule.window_s + self.rule.baseline_s)
        while self._chunks and self._chunks[0].decided and self._chunks[0].end < keep_from:
            self._chunks.popleft()
        for m in self._mouths.values():
            m.prune(keep_from)
        return sorted(out, key=lambda e: (e.media_time, e.participant))

    def _voiced_at(self, t: float) -> bool | None:
        for c in self._chunks:
            if c.start - 1e-9 <= t < c.end - 1e-9:
                return c.voiced
        return None

    def scores(self, chunk: _Chunk) -> dict[str, float]:
        """Each candidate tile's score for a chunk (see the module's rule)."""
        mid = (chunk.start + chunk.end) / 2
        lo, hi = mid - self.rule.window_s / 2, mid + self.rule.window_s / 2
        out: dict[str, float] = {}
        for pid, mouth in self._mouths.items():
            on: list[float] = []
            off: list[float] = []
            for t, m in zip(mouth.times, mouth.motion, strict=True):
                if m is None or not lo - self.rule.baseline_s <= t < hi:
                    continue
                voiced = self._voiced_at(t)
                if voiced and t >= lo:
                    on.append(m)
                elif voiced is False:
                    off.append(m)
            if len(on) >= self.rule.min_frames:
                out[pid] = statistics.fmean(on) - (statistics.fmean(off) if off else 0.0)
        return out

    def _decide(self, chunk: _Chunk) -> None:
        chunk.decided = True
        if not chunk.voiced:
            return
        seconds = chunk.end - chunk.start
        totals = self.totals
        totals.voiced_s += seconds
        ranked = sorted(self.scores(chunk).items(), key=lambda kv: -kv[1])
        moving = [pid for pid, s in ranked if s >= self.rule.min_motion]
        if not moving:
            totals.no_mouth_s += seconds
            return
        best, score = ranked[0]
        runner = max(0.0, ranked[1][1]) if len(ranked) > 1 else 0.0
        if score >= self.rule.margin * runner:
            chunk.speaker = best
            totals.attributed_s += seconds
            totals.per_participant[best].attributed_s += seconds
            return
        totals.tied_s += seconds
        for pid, s in ranked:
            if s * self.rule.margin > score:  # within the margin of the best
                totals.per_participant[pid].tied_s += seconds

    def _finish(self, e: ScoreEvent) -> ScoreEvent:
        chunk = next((c for c in self._chunks if c.start - 1e-9 <= e.media_time < c.end - 1e-9), None)
        speaking = chunk is not None and chunk.speaker == e.participant
        return e.model_copy(update={"speaking": speaking, "mic_on": chunk is not None})


class GalleryScorer:
    """The engine with :class:`SpeakerAttribution` on its output (what :class:`ReplayJob` calls the scorer)."""

    def __init__(self, *, engine: Scorer, attribution: SpeakerAttribution) -> None:
        self.engine = engine
        self.attribution = attribution

    def load(self) -> None:
        self.engine.load()

    def process(self, batch: Sequence[MediaMessage]) -> list[ScoreEvent]:
        return self.attribution.feed(self.engine.process(batch))

    def flush(self) -> list[ScoreEvent]:
        return self.attribution.flush(self.engine.flush())
