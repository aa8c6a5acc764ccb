"""Which media shards this inference worker owns: heartbeat, desired assignment, leases.

:meth:`ShardOwnership.tick` runs every ``lease_renew_ms``: it heartbeats the worker's
membership, computes the desired assignment over the live members
(:func:`shared.transport.shards.assign`, the same on every worker), renews the leases it
holds, reports the ones it lost and the ones it should hand over, and acquires the desired
shards that are free (a dead owner's lease becomes free when it expires). The worker does
the rest: it reads only :meth:`readable` shards, claims a new shard's pending media, drains
and snapshots a shard before :meth:`release`, and drops the state of a lost one.

Local validity: a lease counts as held until ``SAFETY`` of its TTL before the store would
expire it, measured from *before* the request that set it, so a worker whose renewals stop
(paused, partitioned) stops trusting its lease before anyone else can acquire it (clock
rates may differ by less than that margin). :meth:`holds` is checked before every publish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from shared.log import get_logger
from shared.metrics import Metrics
from shared.transport.leases import Lease, LeaseStore
from shared.transport.shards import assign

log = get_logger(__name__)

SAFETY = 0.2
"""Share of the lease TTL a worker stops trusting its lease before the store expires it."""


@dataclass
class Changes:
    """What one tick changed."""

    acquired: list[Lease] = field(default_factory=list)
    """New leases (``previous`` set: taken over from an owner that died)."""
    lost: list[int] = field(default_factory=list)
    """Shards whose lease could not be renewed: stop processing them, drop their participants' state."""
    revoke: list[int] = field(default_factory=list)
    """Held shards another member should own now: drain, snapshot, then :meth:`ShardOwnership.release`."""
    members: list[str] = field(default_factory=list)


class ShardOwnership:
    """The leases of one worker (one member) over ``shards`` media shards."""

    def __init__(
        self,
        *,
        store: LeaseStore,
        member: str,
        shards: int,
        ttl_ms: int,
        clock: Callable[[], float],
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.member = member
        self.shards = shards
        self.ttl_ms = ttl_ms
        self._clock = clock
        self._metrics = metrics
        self._held: dict[int, Lease] = {}
        self._valid_until: dict[int, float] = {}
        self._releasing: set[int] = set()
        self.members: list[str] = []

    # -- queries ---------------------------------------------------------------------------

    def lease(self, shard: int) -> Lease | None:
        return self._held.get(shard)

    def held(self) -> list[int]:
        return sorted(self._held)

    def holds(self, shard: int) -> bool:
        """True while this worker may publish for ``shard`` (lease held and locally still valid)."""
        return shard in self._held and self._clock() < self._valid_until[shard]

    def readable(self) -> list[int]:
        """Shards to read new media from: held, valid and not being handed over."""
        return [k for k in sorted(self._held) if k not in self._releasing and self.holds(k)]

    # -- changes ---------------------------------------------------------------------------

    def _trust(self, shard: int, sent_at: float) -> None:
        self._valid_until[shard] = sent_at + (1.0 - SAFETY) * self.ttl_ms / 1000

    def _drop(self, shard: int) -> None:
        self._held.pop(shard, None)
        self._valid_until.pop(shard, None)
        self._releasing.discard(shard)

    async def tick(self) -> Changes:
        """Heartbeat, renew, rebalance, acquire (one round trip each)."""
        out = Changes()
        sent = self._clock()
        self.members = out.members = await self.store.heartbeat(self.member, ttl_ms=self.ttl_ms)
        desired = assign(self.shards, self.members).get(self.member, set())
        leases = [self._held[k] for k in sorted(self._held)]
        sent = self._clock()
        for lease, ok in zip(leases, await self.store.renew(leases, ttl_ms=self.ttl_ms), strict=True):
            if self._held.get(lease.shard) is not lease:
                continue  # released meanwhile (a hand-over finished during the renewal)
            if ok:
                self._trust(lease.shard, sent)
                continue
            self._drop(lease.shard)
            out.lost.append(lease.shard)
            self._count("lost")
            log.warning("shard lease %s -> %s", "held", "lost", extra={"shard": lease.shard, "epoch": lease.epoch})
        for k in sorted(self._held):
            if k not in desired and k not in self._releasing:
                self._releasing.add(k)
                out.revoke.append(k)
        wanted = sorted(k for k in desired if k not in self._held)
        sent = self._clock()
        for k, got in zip(wanted, await self.store.acquire(wanted, self.member, ttl_ms=self.ttl_ms), strict=True):
            if got is None:
                continue  # still held by its previous owner (handing over, or not yet expired)
            self._held[k] = got
            self._trust(k, sent)
            out.acquired.append(got)
            event = "taken_over" if got.previous is not None else "acquired"
            self._count(event)
            log.info(
                "shard lease %s -> %s",
                "free" if got.previous is None else "expired",
                "held",
                extra={"shard": k, "epoch": got.epoch, "previous": got.previous or ""},
            )
        self._gauge()
        return out

    async def confirm(self, shards: Iterable[int]) -> list[int]:
        """Ask the store about ``shards`` whose lease lapsed locally; returns the ones really lost.

        A worker that was only slow (its loop starved, a renewal late) keeps its shards: the renewal
        succeeds only while the store still holds this worker's lease under its token, so nobody else
        can have acquired the shard meanwhile, and the lease is trusted again. A refused renewal is a
        lost lease (dropped here, like in :meth:`tick`); a broker error propagates (nothing confirmed).
        """
        leases = [self._held[k] for k in sorted(set(shards)) if k in self._held and not self.holds(k)]
        if not leases:
            return []
        sent = self._clock()
        lost: list[int] = []
        for lease, ok in zip(leases, await self.store.renew(leases, ttl_ms=self.ttl_ms), strict=True):
            if self._held.get(lease.shard) is not lease:
                continue
            if ok:
                self._trust(lease.shard, sent)
                self._count("confirmed")
                continue
            self._drop(lease.shard)
            lost.append(lease.shard)
            self._count("lost")
            log.warning("shard lease %s -> %s", "lapsed", "lost", extra={"shard": lease.shard, "epoch": lease.epoch})
        self._gauge()
        return lost

    async def release(self, shard: int) -> None:
        """Give a shard up (after its hand-over snapshot)."""
        lease = self._held.get(shard)
        self._drop(shard)
        if lease is not None and await self.store.release(lease):
            self._count("released")
            log.info("shard lease %s -> %s", "held", "released", extra={"shard": shard, "epoch": lease.epoch})
        self._gauge()

    async def leave(self) -> None:
        """Release every lease and leave the membership (clean shutdown)."""
        for k in self.held():
            await self.release(k)
        await self.store.leave(self.member)

    def _count(self, event: str) -> None:
        if self._metrics is not None:
            self._metrics.inference_lease_events_total.labels(event).inc()

    def _gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.inference_owned_shards.set(len(self._held))
