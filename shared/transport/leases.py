"""Shard leases and participant-state snapshots for inference workers: a Protocol and its in-memory store.

Each inference worker is a *member* (a heartbeat with an expiry) and owns media shards by
*lease*: a lease is taken only when the shard is free (``SET NX PX`` on Redis), renewed by its
owner, released after a hand-over, and otherwise expires. Every acquisition of a shard gets
a new, larger *epoch* (the fencing token); renew, release and snapshot writes succeed only
with the current token, so a worker that lost its lease (paused, partitioned) can neither
renew it nor overwrite the next owner's snapshots. A lease that expired without release is
*taken over*: :attr:`Lease.previous` names the owner that died.

Snapshots are also *versioned*: each write carries ``(shard, epoch, seq)``, ``seq`` counting up
in the writer as it serialises states, and a participant's stored snapshot is replaced only by
a newer version (a later epoch, or the same epoch and a larger ``seq``; a different shard, i.e.
another shard count, always replaces). So a delayed or retried write of an older snapshot (a
periodic one landing after the hand-over snapshot of a revoke) can never overwrite a newer one.

Implementations: :class:`MemoryLeaseStore` (embedded mode and unit tests; an injectable
clock gives virtual time) and :class:`shared.transport.redis_leases.RedisLeaseStore`
(distributed; expiry measured by the Redis server's clock).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Lease:
    """One worker's lease on one shard."""

    shard: int
    owner: str
    epoch: int
    """Fencing token: larger for every acquisition of this shard."""
    previous: str | None = None
    """Owner of the lease before this one when that lease expired unreleased (a takeover); else None."""

    @property
    def token(self) -> str:
        return f"{self.owner}/{self.epoch}"


@dataclass(frozen=True, slots=True)
class Saved:
    """What :meth:`LeaseStore.save_states` did (truthy when the lease was current)."""

    current: bool
    """False: the lease was not current and nothing was written."""
    stale: tuple[str, ...] = ()
    """Keys left as they were because a newer snapshot of them is stored."""

    def __bool__(self) -> bool:
        return self.current


def newer(stored: tuple[int, int, int] | None, version: tuple[int, int, int]) -> bool:
    """Whether a snapshot at ``version`` (shard, epoch, seq) may replace one stored at ``stored``."""
    if stored is None or stored[0] != version[0]:
        return True
    return stored[1:] < version[1:]


class LeaseStore(Protocol):
    """Membership, shard leases and lease-fenced participant snapshots."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def heartbeat(self, member: str, *, ttl_ms: int) -> list[str]:
        """Mark ``member`` alive for ``ttl_ms``; returns every live member, sorted."""
        ...

    async def leave(self, member: str) -> None:
        """Remove ``member`` at once (clean shutdown)."""
        ...

    async def acquire(self, shards: Sequence[int], owner: str, *, ttl_ms: int) -> list[Lease | None]:
        """Take each shard that has no live lease (else None), for ``ttl_ms``."""
        ...

    async def renew(self, leases: Sequence[Lease], *, ttl_ms: int) -> list[bool]:
        """Extend each lease that is still current; False for one that expired or was taken."""
        ...

    async def release(self, lease: Lease) -> bool:
        """Give the shard up now (after the hand-over snapshot); False if the lease was no longer current."""
        ...

    async def holder(self, shard: int) -> str | None:
        """The current owner of a shard's lease, if any."""
        ...

    async def save_states(self, lease: Lease, states: Mapping[str, bytes], *, ttl_ms: int, seq: int) -> Saved:
        """Store snapshots (key -> bytes, each kept ``ttl_ms``) only while ``lease`` is current, each only
        over an older version (``seq``: the writer's count, larger for every later serialisation)."""
        ...

    async def load_state(self, key: str) -> bytes | None:
        """The latest snapshot stored under ``key``, if any."""
        ...


@dataclass
class _Held:
    lease: Lease
    expires: float


class MemoryLeaseStore:
    """Leases, members and snapshots in process; ``clock`` (seconds) may be virtual."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._members: dict[str, float] = {}
        self._leases: dict[int, _Held] = {}
        self._epochs: dict[int, int] = {}
        self._unreleased: dict[int, str] = {}
        self._states: dict[str, tuple[bytes, float]] = {}
        self._versions: dict[str, tuple[int, int, int]] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _live(self, shard: int) -> _Held | None:
        held = self._leases.get(shard)
        if held is not None and held.expires <= self._clock():
            del self._leases[shard]
            return None
        return held

    def _current(self, lease: Lease) -> _Held | None:
        held = self._live(lease.shard)
        return held if held is not None and held.lease.token == lease.token else None

    async def heartbeat(self, member: str, *, ttl_ms: int) -> list[str]:
        now = self._clock()
        self._members = {m: exp for m, exp in self._members.items() if exp > now}
        self._members[member] = now + ttl_ms / 1000
        return sorted(self._members)

    async def leave(self, member: str) -> None:
        self._members.pop(member, None)

    async def acquire(self, shards: Sequence[int], owner: str, *, ttl_ms: int) -> list[Lease | None]:
        out: list[Lease | None] = []
        for shard in shards:
            if self._live(shard) is not None:
                out.append(None)
                continue
            epoch = self._epochs.get(shard, 0) + 1
            self._epochs[shard] = epoch
            lease = Lease(shard=shard, owner=owner, epoch=epoch, previous=self._unreleased.get(shard))
            self._unreleased[shard] = owner
            self._leases[shard] = _Held(lease, self._clock() + ttl_ms / 1000)
            out.append(lease)
        return out

    async def renew(self, leases: Sequence[Lease], *, ttl_ms: int) -> list[bool]:
        out = []
        for lease in leases:
            held = self._current(lease)
            if held is not None:
                held.expires = self._clock() + ttl_ms / 1000
            out.append(held is not None)
        return out

    async def release(self, lease: Lease) -> bool:
        if self._current(lease) is None:
            return False
        del self._leases[lease.shard]
        self._unreleased.pop(lease.shard, None)
        return True

    async def holder(self, shard: int) -> str | None:
        held = self._live(shard)
        return held.lease.owner if held is not None else None

    async def save_states(self, lease: Lease, states: Mapping[str, bytes], *, ttl_ms: int, seq: int) -> Saved:
        if self._current(lease) is None:
            return Saved(current=False)
        now = self._clock()
        self._states = {k: v for k, v in self._states.items() if v[1] > now}  # bounded by live participants
        self._versions = {k: v for k, v in self._versions.items() if k in self._states}
        version = (lease.shard, lease.epoch, seq)
        stale = []
        for key, data in states.items():
            if not newer(self._versions.get(key), version):
                stale.append(key)
                continue
            self._states[key] = (data, now + ttl_ms / 1000)
            self._versions[key] = version
        return Saved(current=True, stale=tuple(stale))

    async def load_state(self, key: str) -> bytes | None:
        item = self._states.get(key)
        if item is None or item[1] <= self._clock():
            return None
        return item[0]

    def forget_states(self, match: Callable[[str], bool]) -> int:
        """Delete the snapshots whose key (``session/participant``) ``match``es (erasure, opt-out); how many."""
        gone = [k for k in self._states if match(k)]
        for key in gone:
            del self._states[key]
            self._versions.pop(key, None)
        return len(gone)
