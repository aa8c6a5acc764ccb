"""Score events (about 5 per second per participant) to one timeline row per participant per second.

Rules (the report's per-second semantics):

* second ``t`` holds the events with ``t <= media_time < t + 1``; ``t`` counts from 0;
* ``present``, ``attentive``, ``speaking``, ``hand_raised``: true when strictly more than
  half of that second's events say so (majority vote; a tie reads false);
* ``engagement`` and ``confidence``: the mean over that second's events;
* the last second counts only when the media lasts more than ``TAIL_S`` into it;
* a second without any event of a participant (no media, a gap, before they joined)
  reads all false with engagement 0 and confidence 0 — nothing was observed;
* events are deduplicated by ``event_id`` (the event log is at-least-once).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from shared.contracts.events import Role, ScoreEvent
from shared.contracts.report import TimelineRow

TAIL_S = 0.1
"""Half an analysis step at 5 fps."""


@dataclass
class SecondVotes:
    """One participant's events within one second, voted into a row (shared with the gateway)."""

    n: int = 0
    present: int = 0
    attentive: int = 0
    speaking: int = 0
    hand_raised: int = 0
    engagement: float = 0.0
    confidence: float = 0.0

    def add(self, e: ScoreEvent) -> None:
        self.n += 1
        self.present += e.present
        self.attentive += e.attentive
        self.speaking += e.speaking
        self.hand_raised += e.hand_raised
        self.engagement += e.engagement
        self.confidence += e.confidence

    def row(self, t: int, participant: str) -> TimelineRow:
        n = self.n
        if n == 0:
            return TimelineRow(
                t=float(t), participant=participant, present=False, attentive=False, speaking=False,
                hand_raised=False, engagement=0.0, confidence=0.0,
            )
        return TimelineRow(
            t=float(t),
            participant=participant,
            present=2 * self.present > n,
            attentive=2 * self.attentive > n,
            speaking=2 * self.speaking > n,
            hand_raised=2 * self.hand_raised > n,
            engagement=min(1.0, max(0.0, self.engagement / n)),
            confidence=min(1.0, max(0.0, self.confidence / n)),
        )


class TimelineBuilder:
    """Accumulates score events; :meth:`rows` returns the per-second timeline."""

    def __init__(self) -> None:
        self._seconds: dict[str, dict[int, SecondVotes]] = {}
        self._roles: dict[str, Role] = {}
        self._seen: set[str] = set()
        self.last_media_time = 0.0
        self.events = 0

    def add(self, event: ScoreEvent, *, at: float | None = None) -> bool:
        """Add one event at ``at`` seconds (default: its ``media_time``); False when its id was already seen."""
        if event.event_id in self._seen:
            return False
        self._seen.add(event.event_id)
        self.events += 1
        self._roles.setdefault(event.participant, event.role)
        at = event.media_time if at is None else max(0.0, at)
        second = math.floor(at)
        per = self._seconds.setdefault(event.participant, {})
        per.setdefault(second, SecondVotes()).add(event)
        self.last_media_time = max(self.last_media_time, at)
        return True

    def add_all(self, events: Iterable[ScoreEvent]) -> None:
        for e in events:
            self.add(e)

    @property
    def participants(self) -> dict[str, Role]:
        """Participant id -> role, in order of first appearance."""
        return dict(self._roles)

    def seconds(self, duration_s: float | None = None) -> int:
        """Number of timeline seconds: ``ceil(duration)``, or up to the last event when unknown.

        A trailing sliver shorter than half an analysis step (``TAIL_S``; e.g. Opus padding that
        makes a 6 s clip 6.007 s long) gets no row: nothing was analysed in it.
        """
        if duration_s is not None and duration_s > 0:
            return max(1, math.ceil(duration_s - TAIL_S))
        last = max((max(s) for s in self._seconds.values() if s), default=-1)
        return last + 1

    def rows(self, duration_s: float | None = None) -> list[TimelineRow]:
        """Rows ordered by ``t``, then by participant in order of appearance."""
        n = self.seconds(duration_s)
        out: list[TimelineRow] = []
        for t in range(n):
            for p in self._roles:
                out.append(self._seconds[p].get(t, SecondVotes()).row(t, p))
        return out


def build_timeline(events: Iterable[ScoreEvent], *, duration_s: float | None = None) -> list[TimelineRow]:
    """Convenience: the timeline of a finished set of events."""
    builder = TimelineBuilder()
    builder.add_all(events)
    return builder.rows(duration_s)
