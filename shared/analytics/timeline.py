"""Score events (about 5 per second per participant) to one timeline row per participant per second.

Used by ``classpulse replay`` (the report of a file or of a past session's event log) and by
the gateway's live history (the timeline route and the report of a running session), so
both read seconds by the same rules (the report's per-second semantics):

* second ``t`` holds the events with ``t <= media_time < t + 1``; ``t`` counts from 0;
* ``present``, ``attentive``, ``speaking``, ``hand_raised``: true when strictly more than
  half of that second's events say so (majority vote; a tie reads false);
* ``engagement`` and ``confidence``: the mean over that second's events;
* the last second counts only when the media lasts more than ``TAIL_S`` into it;
* a second without any event of a participant (no media, a gap, before they joined)
  reads all false with engagement 0 and confidence 0 — nothing was observed;
* events are deduplicated by ``event_id`` (the event log is at-least-once; a bounded builder
  leaves that to its caller).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from shared.contracts.events import Role, ScoreEvent
from shared.contracts.report import TimelineRow

TAIL_S = 0.1
"""Half an analysis step at 5 fps."""


@dataclass
class SecondVotes:
    """One participant's events within one second, voted into a row."""

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

    def voted(self) -> tuple[bool, bool, bool, bool, float, float]:
        """``(present, attentive, speaking, hand_raised, engagement, confidence)`` of this second."""
        n = self.n
        if n == 0:
            return False, False, False, False, 0.0, 0.0
        return (
            2 * self.present > n,
            2 * self.attentive > n,
            2 * self.speaking > n,
            2 * self.hand_raised > n,
            min(1.0, max(0.0, self.engagement / n)),
            min(1.0, max(0.0, self.confidence / n)),
        )

    def row(self, t: int, participant: str) -> TimelineRow:
        present, attentive, speaking, hand_raised, engagement, confidence = self.voted()
        return TimelineRow(
            t=float(t), participant=participant, present=present, attentive=attentive, speaking=speaking,
            hand_raised=hand_raised, engagement=engagement, confidence=confidence,
        )


class TimelineBuilder:
    """Accumulates score events into per-participant seconds.

    Two users, two views of the same votes:

    * ``classpulse replay`` (a file, or a past session's event log): unbounded, events deduplicated by
      ``event_id``; :meth:`rows` gives the full grid, every participant every second;
    * the gateway's live history: ``max_rows`` bounds the seconds kept (the oldest go first) and no
      event id is remembered (the history drops repeated (participant, seq) before adding);
      :meth:`observed_rows` gives the seconds that hold events.
    """

    def __init__(self, *, max_rows: int | None = None) -> None:
        self.max_rows = max_rows
        self._votes: OrderedDict[tuple[str, int], SecondVotes] = OrderedDict()
        self._roles: dict[str, Role] = {}
        self._seen: set[str] = set()
        self.events = 0

    def add(self, event: ScoreEvent, *, at: float | None = None) -> bool:
        """Add one event at ``at`` seconds (default: its ``media_time``); False when its id was already seen
        (an unbounded builder only)."""
        if self.max_rows is None:
            if event.event_id in self._seen:
                return False
            self._seen.add(event.event_id)
        self.events += 1
        self._roles.setdefault(event.participant, event.role)
        at = event.media_time if at is None else max(0.0, at)
        key = (event.participant, math.floor(at))
        votes = self._votes.get(key)
        if votes is None:
            votes = self._votes[key] = SecondVotes()
            if self.max_rows is not None:
                while len(self._votes) > self.max_rows:
                    self._votes.popitem(last=False)
        votes.add(event)
        return True

    def forget(self, participant: str) -> int:
        """Drop every second of ``participant`` (an opt-out); how many rows went."""
        keys = [k for k in self._votes if k[0] == participant]
        for key in keys:
            del self._votes[key]
        self._roles.pop(participant, None)
        return len(keys)

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
        return max((second for _, second in self._votes), default=-1) + 1

    def rows(self, duration_s: float | None = None) -> list[TimelineRow]:
        """The full grid (replay): rows ordered by ``t``, then by participant in order of appearance."""
        empty = SecondVotes()
        return [
            self._votes.get((p, t), empty).row(t, p)
            for t in range(self.seconds(duration_s))
            for p in self._roles
        ]

    def observed_rows(self, *, participant: str | None = None, since: float = 0.0) -> list[TimelineRow]:
        """The seconds that hold events (live history), from ``since``, ordered by ``t`` then participant id."""
        out = [
            votes.row(second, pid)
            for (pid, second), votes in self._votes.items()
            if (participant is None or pid == participant) and second >= since
        ]
        out.sort(key=lambda r: (r.t, r.participant))
        return out

    def observed_tuples(self) -> list[tuple[float, str, bool, bool, bool, bool, float, float]]:
        """:meth:`observed_rows` as plain tuples ``(t, participant, present, attentive, speaking, hand_raised,
        engagement, confidence)``: ~20x cheaper than the models (exports of long sessions)."""
        out = [(float(second), pid, *votes.voted()) for (pid, second), votes in self._votes.items()]
        out.sort(key=lambda r: (r[0], r[1]))
        return out


def build_timeline(events: Iterable[ScoreEvent], *, duration_s: float | None = None) -> list[TimelineRow]:
    """Convenience: the timeline of a finished set of events."""
    builder = TimelineBuilder()
    builder.add_all(events)
    return builder.rows(duration_s)
