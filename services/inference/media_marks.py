"""Which media of one participant its state has taken in: exact repeats are told from late arrivals.

Media of one kind is numbered ``(epoch, seq)``: the epoch grows with each publish (a reconnect starts at
seq 0 again), seq within it. A participant's state keeps the marks it took in as a few closed intervals
(media mostly arrives in order, so they stay few), bounded by ``MAX_SPANS``: a mark inside one is a
repeat (a redelivery, a claim of entries already processed); a mark outside every interval is new even
when newer media came first (a dead worker's pending media, claimed after its successor read on), unless
it is older than everything still remembered.
"""

from __future__ import annotations

import sys
from bisect import bisect_right

MAX_SPANS = 256
"""Intervals kept per kind (gaps split them: source thinning, drops); older ones are forgotten."""

Span = tuple[int, int, int]
"""``(epoch, first seq, last seq)``, closed."""


class TakenMarks:
    """The ``(epoch, seq)`` marks taken in, per kind, as sorted disjoint intervals."""

    def __init__(self, spans: dict[str, list[Span]] | None = None) -> None:
        self._spans: dict[str, list[Span]] = {k: sorted(v) for k, v in (spans or {}).items()}

    def take(self, kind: str, epoch: int, seq: int) -> bool:
        """Whether ``(epoch, seq)`` of ``kind`` is new (then it is taken); False for a repeat, or a mark
        older than every interval still kept (too late to tell, so never taken)."""
        spans = self._spans.setdefault(kind, [])
        i = bisect_right(spans, (epoch, seq, sys.maxsize))  # spans[i - 1] starts at or before the mark
        if i and spans[i - 1][0] == epoch and spans[i - 1][1] <= seq <= spans[i - 1][2]:
            return False
        if len(spans) >= MAX_SPANS and (epoch, seq) < spans[0][:2]:
            return False
        before = spans[i - 1] if i and spans[i - 1][0] == epoch and spans[i - 1][2] == seq - 1 else None
        after = spans[i] if i < len(spans) and spans[i][0] == epoch and spans[i][1] == seq + 1 else None
        if before and after:
            spans[i - 1 : i + 1] = [(epoch, before[1], after[2])]
        elif before:
            spans[i - 1] = (epoch, before[1], seq)
        elif after:
            spans[i] = (epoch, seq, after[2])
        else:
            spans.insert(i, (epoch, seq, seq))
            if len(spans) > MAX_SPANS:
                del spans[0]
        return True

    def dump(self) -> dict[str, list[Span]]:
        return {k: list(v) for k, v in self._spans.items() if v}
