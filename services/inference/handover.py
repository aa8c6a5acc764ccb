"""Participant state that moves with its shard: snapshots to the lease store, restores from it.

The worker's engine holds a :class:`~services.inference.state.ParticipantState` per participant
it scores. :class:`StateHandover` stores those of the worker's shards in the lease store
(fenced by each shard's lease, so a worker that lost a shard cannot overwrite the next owner's
snapshots), restores a participant's stored state before its first message after its shard was
acquired, and forgets the participants of a shard the worker gave up or lost.

Every engine access here holds :attr:`StateHandover.lock`, which the worker also holds for a
whole batch (process, publish, ack): a snapshot never contains half a batch, so the next owner
never scores a step twice into the state. Serialising is small (~20 KB, under 1 ms per
participant) and runs in a thread.

The store write happens after the lock is released, so two snapshot rounds can be in flight
at once (a periodic one slowed by a loaded Redis, and the revoke's). Each round takes the next
``seq`` while it holds the lock, and the store keeps a snapshot only over an older version
(:func:`shared.transport.leases.newer`): a write that lands late never replaces a newer state.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable

from services.inference.engine import InferenceEngine
from services.inference.ownership import ShardOwnership
from services.inference.settings import InferenceSettings
from services.inference.state_snapshot import SnapshotError
from shared.log import get_logger, pii
from shared.metrics import Metrics
from shared.transport.leases import LeaseStore
from shared.transport.shards import participant_key, shard_of

log = get_logger(__name__)
STAGE = "inference"

Participant = tuple[str, str]
"""(session, participant)."""


class StateHandover:
    """Snapshots, restores and drops the participant states of one worker's shards."""

    def __init__(
        self,
        *,
        engine: InferenceEngine,
        store: LeaseStore,
        ownership: ShardOwnership,
        settings: InferenceSettings,
        metrics: Metrics,
    ) -> None:
        self.engine = engine
        self.store = store
        self.ownership = ownership
        self.shards = ownership.shards
        self.ttl_ms = int(settings.snapshot_ttl_s * 1000)
        self._metrics = metrics
        self.lock = asyncio.Lock()
        """Held by a whole batch (process, publish, ack) and by every snapshot, restore and forget."""
        self._ready: set[str] = set()
        """Participants (routing keys) whose stored state was looked up since their shard was acquired."""
        self._dirty: set[str] = set()
        """Participants processed since their last snapshot."""
        self._seq = itertools.count(1)
        """Version of each snapshot round, taken under the lock (later serialisation = larger)."""

    def needs_restore(self, key: str) -> bool:
        return key not in self._ready

    def processed(self, keys: Iterable[str]) -> None:
        """These participants' states changed (a batch ran): snapshot them at the next round."""
        self._dirty.update(keys)

    def discard(self, keys: Iterable[str]) -> None:
        """These participants' states hold a batch that did not finish (failed or cancelled after it
        changed them, its media never acked): forget them unsnapshotted, so the stored snapshot stays
        the last good one and their next media (the batch's, claimed again) restores it.

        Call while holding :attr:`lock` (the batch that failed holds it)."""
        gone = set(keys)
        for session, participant in self.engine.participants():
            if participant_key(session, participant) in gone:
                self.engine.forget(session, participant)
        self._ready.difference_update(gone)
        self._dirty.difference_update(gone)
        if gone:
            self._metrics.errors_total.labels(STAGE, "state_discarded").inc(len(gone))

    def _by_shard(self, shards: Iterable[int]) -> dict[int, list[Participant]]:
        wanted = set(shards)
        out: dict[int, list[Participant]] = {}
        for session, participant in self.engine.participants():
            k = shard_of(participant_key(session, participant), self.shards)
            if k in wanted:
                out.setdefault(k, []).append((session, participant))
        return out

    async def snapshot(self, shards: Iterable[int], *, only_changed: bool, forget: bool = False) -> None:
        """Store the state of the participants of ``shards`` (only the changed ones, if asked); then forget them."""
        async with self.lock:
            started = time.perf_counter()
            groups = self._by_shard(shards)
            if only_changed:
                groups = {k: [p for p in ps if participant_key(*p) in self._dirty] for k, ps in groups.items()}
            keys = [p for ps in groups.values() for p in ps]
            seq = next(self._seq)
            data = await asyncio.to_thread(self._serialise, keys)
            self._dirty.difference_update(participant_key(*p) for p in keys)
            if forget:
                for p in keys:
                    self.engine.forget(*p)
                    self._ready.discard(participant_key(*p))
        for k, ps in groups.items():
            lease = self.ownership.lease(k)
            states = {participant_key(*p): data[p] for p in ps if p in data}
            if lease is None or not states:
                continue
            saved = await self.store.save_states(lease, states, ttl_ms=self.ttl_ms, seq=seq)
            if not saved:
                log.warning("participant snapshots refused: lease no longer current", extra={"shard": k})
                self._metrics.errors_total.labels(STAGE, "snapshot_fenced").inc()
            elif saved.stale:  # a later round's snapshot landed first: it stays
                log.info("participant snapshots %s -> %s", "late", "skipped",
                         extra={"shard": k, "count": len(saved.stale)})  # fmt: skip
                self._metrics.errors_total.labels(STAGE, "snapshot_superseded").inc(len(saved.stale))
        if keys:
            self._metrics.inference_snapshot_seconds.labels("save").observe(time.perf_counter() - started)

    def _serialise(self, keys: list[Participant]) -> dict[Participant, bytes]:
        out = {}
        for session, participant in keys:
            try:
                out[(session, participant)] = self.engine.snapshot(session, participant)
            except KeyError:  # forgotten as idle meanwhile
                continue
        return out

    async def drop(self, shard: int) -> None:
        """Forget a lost (or unsnapshotted) shard's participants; the next owner restores their snapshots."""
        async with self.lock:
            groups = self._by_shard([shard])
            for session, participant in groups.get(shard, []):
                self.engine.forget(session, participant)
            self._ready = {p for p in self._ready if shard_of(p, self.shards) != shard}
            self._dirty = {p for p in self._dirty if shard_of(p, self.shards) != shard}
        if groups:
            log.info("participant states %s -> %s", "tracked", "dropped", extra={"shard": shard})

    async def restore(self, session: str, participant: str) -> None:
        """Before a participant's first message since its shard was acquired: adopt its stored state."""
        key = participant_key(session, participant)
        self._ready.add(key)
        started = time.perf_counter()
        data = await self.store.load_state(key)
        if data is None:
            return
        try:
            async with self.lock:
                await asyncio.to_thread(self.engine.restore, data)
        except SnapshotError as exc:
            log.warning("participant snapshot rejected: %s", exc, extra=pii(participant=participant))
            self._metrics.errors_total.labels(STAGE, "snapshot_restore").inc()
            return
        self._metrics.inference_snapshot_seconds.labels("restore").observe(time.perf_counter() - started)
