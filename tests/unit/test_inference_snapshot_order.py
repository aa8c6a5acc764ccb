"""A late snapshot write never replaces a newer one (the hand-over race under load).

Under heavy load a hand-over once restored a participant's state a few frames old: a periodic
snapshot round serialised its states, its store write stalled (a loaded Redis), the revoke's
snapshot round serialised the newer state and wrote it, and then the stalled periodic write
landed over it. The rounds are versioned now: the store keeps the newer one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.inference.engine import InferenceEngine
from services.inference.handover import StateHandover
from services.inference.ownership import ShardOwnership
from services.inference.state import ParticipantState
from shared.metrics import Metrics
from shared.testkit.messages import frames
from shared.transport.leases import Lease, LeaseStore, MemoryLeaseStore, newer
from shared.transport.shards import participant_key, shard_of
from tests.unit.test_inference_worker_leases import SETTINGS, NoFaces

pytestmark = pytest.mark.unit

SHARDS = 4


class StallingStore(MemoryLeaseStore):
    """The lease store, with the first snapshot write held until :attr:`go` is set (a stalled Redis)."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()
        self.stalled = asyncio.Event()
        self.writes = 0

    async def save_states(self, lease: Lease, states: Mapping[str, bytes], **kwargs: Any) -> Any:
        self.writes += 1
        if self.writes == 1:
            self.stalled.set()
            await self.go.wait()
        return await super().save_states(lease, states, **kwargs)


async def test_a_stalled_periodic_snapshot_does_not_overwrite_the_revoke_snapshot() -> None:
    metrics = Metrics(CollectorRegistry())
    store = StallingStore()
    engine = InferenceEngine(settings=SETTINGS, metrics=metrics, backend=NoFaces())
    engine.load()
    ownership = ShardOwnership(
        store=cast(LeaseStore, store), member="a", shards=SHARDS, ttl_ms=60_000, clock=lambda: 0.0, metrics=metrics
    )
    await ownership.tick()
    k = shard_of(participant_key("s", "p"), SHARDS)
    assert ownership.holds(k)
    states = StateHandover(
        engine=engine, store=cast(LeaseStore, store), ownership=ownership, settings=SETTINGS, metrics=metrics
    )
    image = np.zeros((48, 64, 3), np.uint8)
    engine.process(list(frames([image] * 5, session="s", participant="p")))
    states.processed(["s/p"])
    periodic = asyncio.create_task(states.snapshot([k], only_changed=True))  # serialises 5 frames, then stalls
    await asyncio.wait_for(store.stalled.wait(), 5)

    engine.process(list(frames([image] * 3, session="s", participant="p", start_seq=5)))
    states.processed(["s/p"])
    await states.snapshot([k], only_changed=False, forget=True)  # the revoke: 8 frames, written
    store.go.set()
    await asyncio.wait_for(periodic, 5)  # the stalled write lands last

    data = await store.load_state("s/p")
    assert data is not None
    assert ParticipantState.restore(data).frames == 8  # what the next owner restores: the newest state
    superseded = metrics.registry.get_sample_value(
        "classpulse_errors_total", {"stage": "inference", "error": "snapshot_superseded"}
    )
    assert superseded == 1


def test_which_version_replaces_which() -> None:
    assert newer(None, (0, 1, 1))
    assert newer((0, 1, 5), (0, 1, 6)) and not newer((0, 1, 6), (0, 1, 6)) and not newer((0, 1, 7), (0, 1, 6))
    assert newer((0, 1, 99), (0, 2, 1))  # a later owner of the shard, whatever seq the earlier one reached
    assert not newer((0, 3, 1), (0, 2, 50))
    assert newer((5, 9, 9), (0, 1, 1))  # another shard count: another numbering, the write wins
