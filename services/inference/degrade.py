"""Graceful degradation under overload: every participant's analysed frame rate drops together.

A worker that cannot analyse every frame used to fall behind until frames passed ``max_lag_ms``
and were dropped in stretches, one participant at a time. Instead, :class:`DegradePolicy`
keeps one **target analysed frame rate** for all participants of the worker (fair: everyone
gets the same rate) and thins each participant's frames to it by media time; audio is never
thinned, so speaking keeps its full rate. Pure and clock-free (the caller passes ``now``), so
tests run on virtual time.

Control, once per ``interval_s`` from what the batch loop measured in that window:

* **load**: the loop's duty cycle (time spent running batches / elapsed) and the mean wait
  of the frames in its batches (ingest emitted -> batch start: queue and backlog);
* **overloaded** when the duty cycle is above ``busy_high`` or the wait above ``wait_high_s``:
  the target drops at once to what the measured cost per analysed frame sustains at
  ``busy_target`` for the participants seen, and to at most ``decrease`` x the current rate
  (so a backlog drains even when the cost estimate says the rate would fit), never below
  ``min_fps``;
* **recovery** (hysteresis): only when the duty cycle predicted at the next step up,
  ``+ step_up`` fps, stays below ``busy_target`` and the wait below half of ``wait_high_s``
  for ``recover_s`` in a row; past ``max_fps`` the worker analyses every frame again.

Thinning (:meth:`DegradePolicy.admit`): a participant's frame is analysed when its media time
reaches the participant's next tick of the target rate (as ingest samples frames), so the
kept frames are spread evenly and a participant's rate equals the target whatever its
input rate above it. The first frame of a participant, and every frame while not degraded,
is analysed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class DegradeConfig:
    """Bounds and thresholds of the policy (validated by the worker's settings)."""

    max_fps: float = 5.0
    """The top of the ladder: at or above it every frame is analysed."""
    min_fps: float = 1.0
    """The floor: the target never goes below it (frames that still cannot be served go stale)."""
    interval_s: float = 1.0
    busy_high: float = 0.9
    busy_target: float = 0.75
    wait_high_s: float = 0.5
    decrease: float = 0.8
    step_up: float = 0.5
    recover_s: float = 5.0
    active_s: float = 3.0
    """A participant counts towards the load while it sent a frame within this long."""

    def __post_init__(self) -> None:
        if not 0 < self.min_fps <= self.max_fps:
            raise ValueError("need 0 < min_fps <= max_fps")
        if not 0 < self.busy_target < self.busy_high:
            raise ValueError("need 0 < busy_target < busy_high")
        if not 0 < self.decrease < 1:
            raise ValueError("need 0 < decrease < 1")
        if self.interval_s <= 0 or self.step_up <= 0 or self.recover_s < 0 or self.wait_high_s <= 0:
            raise ValueError("interval_s, step_up and wait_high_s must be > 0, recover_s >= 0")


@dataclass(frozen=True, slots=True)
class Load:
    """One closed control window: what was measured, and the target after it (``None`` = every frame)."""

    busy: float
    wait_s: float
    cost_s: float | None
    participants: int
    before: float | None
    target: float | None

    @property
    def changed(self) -> bool:
        return self.before != self.target


@dataclass(slots=True)
class _Window:
    start: float
    busy_s: float = 0.0
    frames: int = 0
    waits: list[float] = field(default_factory=list)


class DegradePolicy:
    """One worker's target analysed frame rate and the per-participant thinning to it."""

    def __init__(self, config: DegradeConfig, *, now: float) -> None:
        self.config = config
        self.target: float | None = None
        """Analysed frames per second per participant; None = every frame (not degraded)."""
        self.cost_s: float | None = None
        """Latest measured batch-loop time per analysed frame."""
        self._window = _Window(start=now)
        self._calm_since: float | None = None
        self._last_wait = 0.0
        self._changed_at = -math.inf
        self._next_tick: dict[str, float] = {}
        self._last_seen: dict[str, float] = {}

    # -- per frame ---------------------------------------------------------------------------

    def admit(self, key: str, media_time: float, *, now: float) -> bool:
        """Whether this frame of participant ``key`` is analysed (frames of one key in media order)."""
        self._last_seen[key] = now
        target = self.target
        nxt = self._next_tick.get(key)
        if target is None or nxt is None or media_time + _EPS >= nxt or media_time < nxt - 2 / target:
            # Kept: not degraded, a first frame, its tick reached, or media time jumped back (a restart).
            rate = target if target is not None else self.config.max_fps
            self._next_tick[key] = (math.floor(media_time * rate + _EPS) + 1) / rate
            return True
        return False

    def forget(self, key: str) -> None:
        self._next_tick.pop(key, None)
        self._last_seen.pop(key, None)

    # -- per batch ---------------------------------------------------------------------------

    def observe_batch(self, *, busy_s: float, frames: int, waits: list[float]) -> None:
        """One batch: the loop's time on it, video frames analysed, each frame's wait before it ran."""
        w = self._window
        w.busy_s += max(0.0, busy_s)
        w.frames += frames
        w.waits.extend(waits)

    def participants(self, *, now: float) -> int:
        """Participants that sent a frame within ``active_s`` (those the load is shared by)."""
        cutoff = now - self.config.active_s
        for key in [k for k, t in self._last_seen.items() if t < cutoff]:
            self.forget(key)
        return len(self._last_seen)

    def sessions(self, *, now: float) -> dict[str, int]:
        """Active participants per session (keys are ``session/participant``)."""
        self.participants(now=now)
        out: dict[str, int] = {}
        for key in self._last_seen:
            session = key.rpartition("/")[0]
            out[session] = out.get(session, 0) + 1
        return out

    def update(self, *, now: float, adapt: bool = True) -> Load | None:
        """Close the window once ``interval_s`` passed (None before); with ``adapt``, move the target."""
        c = self.config
        w = self._window
        elapsed = now - w.start
        if elapsed < c.interval_s:
            return None
        self._window = _Window(start=now)
        busy = min(1.0, w.busy_s / elapsed)
        wait = sum(w.waits) / len(w.waits) if w.waits else 0.0
        if w.frames:
            self.cost_s = w.busy_s / w.frames
        n = self.participants(now=now)
        before = self.target
        if adapt and n and self.cost_s is not None:
            rate = w.frames / (elapsed * n)  # analysed per participant, as measured
            self.target = self._next_target(busy, wait, n, self.cost_s, rate, now=now)
            if self.target != before:
                self._changed_at = now
        else:
            self._calm_since = None
        self._last_wait = wait
        return Load(busy, wait, self.cost_s, n, before, self.target)

    def _next_target(self, busy: float, wait: float, n: int, cost: float, rate: float, *, now: float) -> float | None:
        c = self.config
        before = self.target
        current = before if before is not None else min(c.max_fps, max(rate, c.min_fps))
        if busy > c.busy_high or wait > c.wait_high_s:
            self._calm_since = None
            if cost * n * current > c.busy_high:  # the rate itself does not fit: down to one that does
                return round(max(c.min_fps, min(c.busy_target / (cost * n), current * c.decrease)), 2)
            settled = now - self._changed_at >= 2 * c.interval_s  # the last change has had a full window
            if settled and wait > c.wait_high_s and wait >= self._last_wait:  # it fits, yet no backlog drains
                return round(max(c.min_fps, current * c.decrease), 2)
            return before  # draining a backlog at a rate that fits: wait for it
        if before is None:
            return None
        nxt = current + c.step_up
        if cost * n * nxt >= c.busy_target or wait > c.wait_high_s / 2:
            self._calm_since = None  # holding: between the thresholds
            return before
        if self._calm_since is None:
            self._calm_since = now
        if now - self._calm_since < c.recover_s:
            return before
        self._calm_since = now
        return None if nxt >= c.max_fps - _EPS else round(nxt, 2)
