"""Aggregation parameters: window sizes, lateness, event duration and alert thresholds.

A plain frozen dataclass (no environment access): the aggregator's service settings build
one; the gateway's live history and ``classpulse replay`` construct it directly (the
defaults). All times are seconds of session time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def _is_multiple(value: float, base: float) -> bool:
    ratio = value / base
    return math.isclose(ratio, round(ratio), abs_tol=1e-9) and round(ratio) >= 1


@dataclass(frozen=True, kw_only=True)
class AggregationConfig:
    """Windows, time bounds and alert thresholds of one session's aggregation."""

    bucket_s: float = 1.0
    """Finest time grain; every window size and hop step is a whole multiple of it."""
    tumbling_sizes_s: tuple[float, ...] = (1.0, 10.0, 60.0)
    """Sizes of the tumbling windows emitted for every session."""
    hopping_size_s: float | None = 60.0
    """Size of the hopping window (None: no hopping window)."""
    hopping_step_s: float = 10.0
    """Step between the starts of consecutive hopping windows."""
    lateness_s: float = 1.0
    """Events may arrive this long after their capture time; later ones are counted and ignored."""
    step_s: float = 0.2
    """Nominal duration of one score event (one analysis step, 0.2 s at 5 fps)."""
    max_gap_s: float = 0.5
    """An event lasts until the participant's next event when that comes within this gap, else ``step_s``."""
    turn_gap_s: float = 1.0
    """Silence longer than this between a participant's speech splits it into two turns."""
    wait_time_max_s: float = 60.0
    """A student answering later than this after the teacher stopped does not count as wait time."""
    response_max_s: float = 120.0
    """A student response later than this after a teacher's question does not answer it."""
    late_after_s: float = 300.0
    """A participant whose first media comes later than this after the session start is late."""
    away_after_s: float = 10.0
    """Alert 'away' when a participant's steps say they are not in frame for this long (missing steps are no
    evidence: a gap in the scores is the pipeline's, a stream that stops is ingest's camera_off/left)."""
    evidence_gap_s: float = 3.0
    """A participant's steps further apart than this interrupt the evidence of 'away' (and of a camera off only
    the steps say): the condition counts again from the first step after the gap. Steps come every 0.2-1 s
    (the degrade floor is 1 fps); a longer gap is the pipeline's (a pause, frames dropped as stale)."""
    empty_windows_max_s: float = 300.0
    """Windows without any score are emitted (nobody observed) across a class-wide gap up to this long (a broker
    pause, a reconnect); a longer gap (a pause of the class, a wild clock) is skipped."""
    attention_threshold: float = 0.5
    """Alert 'attention_dip' when the class attentive ratio stays below this ..."""
    attention_dip_s: float = 30.0
    """... for this long."""
    silence_after_s: float = 300.0
    """Alert 'silence' when no student has spoken for this long."""
    camera_off_after_s: float = 5.0
    """Alert 'camera_off' when a participant's camera has been off for this long."""

    def __post_init__(self) -> None:
        if self.bucket_s <= 0:
            raise ValueError("bucket_s must be positive")
        sizes = [*self.tumbling_sizes_s]
        if self.hopping_size_s is not None:
            sizes += [self.hopping_size_s, self.hopping_step_s]
        for size in sizes:
            if not _is_multiple(size, self.bucket_s):
                raise ValueError(f"window size/step {size} s is not a whole multiple of bucket_s={self.bucket_s} s")
        if self.hopping_size_s is not None and self.hopping_step_s > self.hopping_size_s:
            raise ValueError("hopping_step_s must not exceed hopping_size_s")
        for name in ("lateness_s", "max_gap_s", "turn_gap_s", "away_after_s", "evidence_gap_s", "attention_dip_s",
                     "silence_after_s", "camera_off_after_s", "wait_time_max_s", "late_after_s",
                     "response_max_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.step_s <= 0:
            raise ValueError("step_s must be positive")
        if not 0.0 <= self.attention_threshold <= 1.0:
            raise ValueError("attention_threshold must lie in [0, 1]")

    @property
    def close_delay_s(self) -> float:
        """How far behind ``now`` the frontier of closed time runs."""
        return self.lateness_s + self.max_gap_s

    def buckets(self, seconds: float) -> int:
        """Whole buckets in ``seconds`` (sizes are validated multiples)."""
        return round(seconds / self.bucket_s)
