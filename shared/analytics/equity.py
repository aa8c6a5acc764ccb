"""Participation figures: shares, Gini coefficient, percentiles (pure functions).

Used by the window aggregates (:mod:`shared.analytics.windows`) and the session summary
(:mod:`shared.analytics.summary`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def talk_shares(talk: Mapping[str, float]) -> dict[str, float]:
    """Each participant's share of the total talk time; sums to 1 unless nobody talked (then all 0)."""
    total = sum(max(0.0, v) for v in talk.values())
    if total <= 0.0:
        return {k: 0.0 for k in talk}
    return {k: max(0.0, v) / total for k, v in talk.items()}


def gini(values: Sequence[float]) -> float:
    """Gini coefficient of non-negative values: 0 = perfectly equal, towards 1 = one takes all.

    Empty, single-valued or all-zero inputs give 0 (nothing is unequal).
    """
    xs = sorted(max(0.0, float(v)) for v in values)
    n = len(xs)
    total = sum(xs)
    if n < 2 or total <= 0.0:
        return 0.0
    # G = sum_i (2i - n - 1) x_i / (n * sum x), i = 1..n over the sorted values.
    weighted = sum((2 * i - n - 1) * x for i, x in enumerate(xs, start=1))
    return min(1.0, max(0.0, weighted / (n * total)))


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile ``q`` in [0, 100] of ``values`` (0 when empty)."""
    xs = sorted(values)
    if not xs:
        return 0.0
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def ratio(part: float, whole: float) -> float:
    """``part / whole`` clamped to [0, 1]; 0 when ``whole`` is 0."""
    if whole <= 0.0:
        return 0.0
    return min(1.0, max(0.0, part / whole))


def participation(talk: Mapping[str, float], messages: Mapping[str, float]) -> dict[str, float]:
    """Each participant's participation over voice and chat: the mean of their talk-time share and
    message share, over the modalities someone used (only voice when nobody wrote, and vice versa).

    Keys are the union of both maps (a participant who only wrote counts with zero talk).
    """
    people = sorted(set(talk) | set(messages))
    voice = talk_shares({p: talk.get(p, 0.0) for p in people})
    chat = talk_shares({p: messages.get(p, 0.0) for p in people})
    used = [m for m, values in (("voice", talk), ("chat", messages)) if sum(max(0.0, v) for v in values.values()) > 0]
    if not used:
        return {p: 0.0 for p in people}
    return {p: sum(voice[p] if m == "voice" else chat[p] for m in used) / len(used) for p in people}
