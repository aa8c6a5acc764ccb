"""Timing trail carried by every message, so latency is measured from real messages.

Each stage that handles a message appends one :class:`StageStamp` with the wall-clock
time it received the message and the time it emitted its result. ``capture_ts`` is the
wall-clock time the media was captured (mapped from RTP/packet time at ingest).
"""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field


def wall_clock() -> float:
    """Seconds since the epoch; the one clock every stage stamps with."""
    return time.time()


class StageStamp(BaseModel):
    """One stage's receive and emit times (epoch seconds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: str = Field(description="Stage name, e.g. 'ingest', 'inference', 'aggregator', 'gateway'.")
    received: float = Field(description="When the stage received the input (epoch s).")
    emitted: float = Field(description="When the stage emitted its output (epoch s).")


class TimingTrail(BaseModel):
    """Capture time plus one stamp per stage, in the order the stages ran."""

    model_config = ConfigDict(extra="forbid")

    capture_ts: float = Field(description="Wall-clock capture time of the underlying media (epoch s).")
    stages: list[StageStamp] = Field(default_factory=list)

    def stamped(self, stage: str, *, received: float, emitted: float | None = None) -> TimingTrail:
        """A copy with one more stage stamp (``emitted`` defaults to now)."""
        stamp = StageStamp(stage=stage, received=received, emitted=wall_clock() if emitted is None else emitted)
        return TimingTrail(capture_ts=self.capture_ts, stages=[*self.stages, stamp])

    def stage(self, name: str) -> StageStamp | None:
        """The last stamp of stage ``name``, if any."""
        for stamp in reversed(self.stages):
            if stamp.stage == name:
                return stamp
        return None

    def since_capture(self, now: float | None = None) -> float:
        """Seconds from capture to ``now`` (default: the wall clock)."""
        return (wall_clock() if now is None else now) - self.capture_ts
