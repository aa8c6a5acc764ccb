"""Per-second timeline rows from score events (the replay report's row shape).

A row covers one participant during one second of media (``t`` = start of that second),
voted by the same rules as the replay report (:class:`services.replay.timeline.SecondVotes`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

from services.replay.timeline import SecondVotes
from shared.contracts.events import ScoreEvent
from shared.contracts.report import TimelineRow


@dataclass
class TimelineBuilder:
    """Buckets one session's scores into per-second rows, keeping at most ``max_rows``."""

    max_rows: int
    _buckets: OrderedDict[tuple[str, int], SecondVotes] = field(default_factory=OrderedDict)

    def add(self, event: ScoreEvent) -> None:
        key = (event.participant, math.floor(event.media_time))
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = SecondVotes()
            while len(self._buckets) > self.max_rows:
                self._buckets.popitem(last=False)
        bucket.add(event)

    def rows(self, *, participant: str | None = None, since: float = 0.0) -> list[TimelineRow]:
        out = [
            b.row(sec, pid)
            for (pid, sec), b in self._buckets.items()
            if (participant is None or pid == participant) and sec >= since
        ]
        out.sort(key=lambda r: (r.t, r.participant))
        return out
