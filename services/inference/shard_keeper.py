"""One inference worker's shards: leases renewed and rebalanced, its participants' state kept with them.

The :class:`ShardKeeper` owns the worker's :class:`~services.inference.ownership.ShardOwnership` and
:class:`~services.inference.handover.StateHandover` and runs two of the worker's loops:

* the lease loop heartbeats and renews every ``lease_renew_ms``, acquires the shards the assignment
  gives the worker once they are free (their pending media is claimed before they are read:
  :meth:`claims`) and queues the ones it should give up;
* the state loop snapshots the participants of held shards every ``snapshot_interval_s`` (fenced by
  the lease), hands a revoked shard over (the worker drains what it read of it, then the shard's
  participants are snapshotted, forgotten and the lease released) and drops the state of a shard
  whose lease was lost (the next owner restores it from the store).

The worker reads only :meth:`readable` shards: none that is being handed over or cleaned up, none
whose pending media is still to be claimed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from services.inference.handover import StateHandover
from services.inference.ownership import Changes, ShardOwnership
from services.inference.settings import InferenceSettings
from shared.log import get_logger
from shared.metrics import Metrics
from shared.supervise import TaskHealth

log = get_logger(__name__)
STAGE = "inference"

Drain = Callable[[set[int], float], Awaitable[None]]
"""Waits (at most the given seconds) until the worker holds no media of these shards any more."""


class BrokerDown(Protocol):
    """Reports a transient broker error of a task (raises anything else)."""

    def __call__(self, health: TaskHealth, exc: Exception, *, what: str) -> None: ...


class ShardKeeper:
    """The leases of one worker and the state of the participants in its shards (see the module docstring)."""

    def __init__(
        self,
        *,
        ownership: ShardOwnership,
        states: StateHandover,
        settings: InferenceSettings,
        metrics: Metrics,
        clock: Callable[[], float],
        stopping: asyncio.Event,
        drain: Drain,
        health: Callable[[str], TaskHealth],
        broker_down: BrokerDown,
    ) -> None:
        self.ownership = ownership
        self.states = states
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._stopping = stopping
        self._drain = drain
        self._health = health
        self._broker_down = broker_down
        self._claim_now: set[int] = set()
        """Shards just acquired: claim their pending media (a dead owner's) before reading them."""
        self._cleanup: set[int] = set()
        """Shards lost or handed over whose participants' state is not dropped yet: not read meanwhile."""
        self._wake = asyncio.Event()
        self._revoking: list[int] = []
        self._lost: list[int] = []

    # -- what the reader may read ------------------------------------------------------------

    def readable(self) -> list[int]:
        """Shards to read now: held, not moving, their pending media claimed."""
        return [k for k in self.ownership.readable() if k not in self._cleanup and k not in self._claim_now]

    def claims(self) -> list[int]:
        """Shards acquired since the last read whose pending media is to be claimed first."""
        return sorted(self._claim_now - self._cleanup)

    def claimed(self, shard: int) -> None:
        """The pending media of ``shard`` was claimed (or the shard is no longer held)."""
        self._claim_now.discard(shard)

    # -- leases ------------------------------------------------------------------------------

    async def tick(self) -> None:
        """One heartbeat: renew, acquire, learn what to give up or what was lost."""
        changes: Changes = await self.ownership.tick()
        self.lose(changes.lost)
        self._claim_now.update(lease.shard for lease in changes.acquired)
        if changes.revoke:
            self._revoking += changes.revoke
            self._wake.set()

    def lose(self, shards: list[int]) -> None:
        """Lost leases: stop reading the shards; the state loop drops their participants' state."""
        if shards:
            self._cleanup.update(shards)
            self._lost += shards
            self._wake.set()

    async def lease_loop(self) -> None:
        """Heartbeat and renew every ``lease_renew_ms``; while the store is down, leases lapse locally
        (nothing is published for a lapsed shard) and media waits in the streams."""
        health = self._health("inference-leases")
        period = self._settings.lease_renew_ms / 1000
        while not self._stopping.is_set():
            await asyncio.sleep(period)
            try:
                await self.tick()
            except Exception as exc:
                self._broker_down(health, exc, what="lease renewal")
                continue
            health.ok()

    # -- participant state -------------------------------------------------------------------

    async def state_loop(self) -> None:
        health = self._health("inference-state")
        interval = self._settings.snapshot_interval_s
        next_snapshot = self._clock() + interval
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, next_snapshot - self._clock()))
            except TimeoutError:
                pass
            try:
                while self._lost:
                    await self.drop(self._lost.pop(0))
                if self._revoking:
                    shards, self._revoking = self._revoking, []
                    await self.hand_over(shards)
                if self._clock() >= next_snapshot:
                    next_snapshot = self._clock() + interval
                    await self.states.snapshot(self.ownership.readable(), only_changed=True)
            except Exception as exc:
                self._broker_down(health, exc, what="state snapshot")
                continue
            health.ok()

    async def hand_over(self, shards: list[int]) -> None:
        """Rebalance: stop reading ``shards``, finish what was read, snapshot and forget their participants, release."""
        moving = set(shards)
        await self._drain(moving, self._settings.drain_timeout_s)
        self._cleanup.update(moving)
        try:
            held = [k for k in shards if self.ownership.holds(k)]
            await self.states.snapshot(held, only_changed=False, forget=True)
            for k in shards:
                if k not in held:
                    await self.drop(k)
        finally:
            for k in shards:
                await self.ownership.release(k)
                self._cleanup.discard(k)

    async def drop(self, shard: int) -> None:
        """A lost lease: forget the shard's participants (the next owner restores their snapshots)."""
        await self.states.drop(shard)
        self._cleanup.discard(shard)

    async def leave(self) -> None:
        """Clean shutdown: snapshot every held shard's participants, release the leases, leave."""
        try:
            held = [k for k in self.ownership.held() if self.ownership.holds(k)]
            await self.states.snapshot(held, only_changed=False)
            await self.ownership.leave()
        except Exception as exc:
            log.warning("shard hand-over at shutdown failed: %s", exc)
            self._metrics.errors_total.labels(STAGE, "state").inc()
