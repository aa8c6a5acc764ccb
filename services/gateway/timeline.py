"""Per-second timeline rows from score events (the replay report's row shape).

A row covers one participant during one second of media (``t`` = start of that second):
booleans are true when most of that second's scores were true, engagement and
confidence are means.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

from shared.contracts.events import ScoreEvent
from shared.contracts.report import TimelineRow


@dataclass
class _Bucket:
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

    def row(self, t: float, participant: str) -> TimelineRow:
        half = self.n / 2
        return TimelineRow(
            t=t,
            participant=participant,
            present=self.present > half,
            attentive=self.attentive > half,
            speaking=self.speaking > half,
            hand_raised=self.hand_raised > half,
            engagement=min(1.0, self.engagement / self.n),
            confidence=min(1.0, self.confidence / self.n),
        )


@dataclass
class TimelineBuilder:
    """Buckets one session's scores into per-second rows, keeping at most ``max_rows``."""

    max_rows: int
    _buckets: OrderedDict[tuple[str, int], _Bucket] = field(default_factory=OrderedDict)

    def add(self, event: ScoreEvent) -> None:
        key = (event.participant, math.floor(event.media_time))
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket()
            while len(self._buckets) > self.max_rows:
                self._buckets.popitem(last=False)
        bucket.add(event)

    def rows(self, *, participant: str | None = None, since: float = 0.0) -> list[TimelineRow]:
        out = [
            b.row(float(sec), pid)
            for (pid, sec), b in self._buckets.items()
            if (participant is None or pid == participant) and sec >= since
        ]
        out.sort(key=lambda r: (r.t, r.participant))
        return out
