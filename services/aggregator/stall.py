"""The aggregator's stall watchdog (``CLASSPULSE_AGGREGATOR_STALL_S``).

A worker that still runs but no longer gets anything done (a consumer that never rejoins its group,
an agent waiting for something that cannot come) looks alive to every other check. The watchdog
compares two facts, sampled about once a second::

    work waiting?   records taken and not yet closed, a batch being emitted, or input lag > 0
    progress?       a batch closed (windows emitted, offsets stored and acked), or a tick emitted windows

Work waiting with no progress for ``degraded_after_s`` makes the service unhealthy (``/healthz`` 503);
for ``stall_s`` it is a stall: :meth:`StallWatchdog.check` returns one readable line and the service
gives up (exit status 3, :data:`shared.supervise.EXIT_UNRECOVERABLE`), so the orchestrator restarts
it. No work waiting is never a stall (an idle class, changelog recovery before any record arrives).
Time comes from ``clock`` (monotonic seconds), so tests drive it with virtual time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

DEGRADED_AFTER_S = 5.0
"""Work waiting without progress this long (or ``stall_s``, if shorter) reads unhealthy."""


@dataclass(frozen=True)
class Waiting:
    """What the worker has waiting right now."""

    records: int = 0
    """Records taken from the input and not closed yet (a batch being filled or emitted)."""
    lag: int = 0
    """Records on the brokers past the next offset the state will take, summed over partitions."""

    @property
    def any(self) -> bool:
        return self.records > 0 or self.lag > 0


class StallWatchdog:
    """Decides, from :meth:`progressed` calls and :class:`Waiting` samples, whether the worker is stuck."""

    def __init__(self, *, stall_s: float, clock: Callable[[], float] = time.monotonic,
                 degraded_after_s: float = DEGRADED_AFTER_S) -> None:
        if stall_s <= 0:
            raise ValueError("stall_s must be > 0")
        self.stall_s = stall_s
        self.degraded_after_s = min(degraded_after_s, stall_s)
        self._clock = clock
        self._progress_at = clock()
        self._waiting_since: float | None = None

    def progressed(self) -> None:
        """The worker closed a batch or emitted windows."""
        self._progress_at = self._clock()

    def stalled_for(self, waiting: Waiting) -> float:
        """Seconds work has been waiting without progress (0.0: none waiting, or progress since)."""
        now = self._clock()
        if not waiting.any:
            self._waiting_since = None
            return 0.0
        if self._waiting_since is None:
            self._waiting_since = now
        return now - max(self._waiting_since, self._progress_at)

    def check(self, waiting: Waiting) -> tuple[bool, str | None]:
        """``(degraded, stall message)`` for this sample; the message is None unless it is a stall."""
        stalled = self.stalled_for(waiting)
        if stalled < self.stall_s:
            return stalled >= self.degraded_after_s, None
        return True, (
            f"aggregator stalled: {waiting.records} records taken and {waiting.lag} waiting on the brokers, "
            f"but no batch closed and no window emitted for {stalled:.0f} s (CLASSPULSE_AGGREGATOR_STALL_S="
            f"{self.stall_s:g}); exiting so the orchestrator restarts it"
        )


class Stalled(Exception):
    """The health entry's error while work waits without progress (its type name is what /healthz shows)."""
