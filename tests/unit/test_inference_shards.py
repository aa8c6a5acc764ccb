"""Participant-affine routing: the shard function, the shard assignment and the lease logic (virtual time)."""

from __future__ import annotations

import collections
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from services.inference.ownership import SAFETY, ShardOwnership
from shared.metrics import Metrics
from shared.transport.leases import MemoryLeaseStore
from shared.transport.shards import assign, entry_id, owner_map, participant_key, shard_of, split_entry_id

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
S = 16
TTL_MS = 3000


class VirtualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- the shard function ------------------------------------------------------------------------


def test_shard_of_is_the_same_in_every_process() -> None:
    keys = [participant_key(f"s{i % 7}", f"student-{i}") for i in range(200)]
    here = [shard_of(k, S) for k in keys]
    code = (
        "import json, sys; from shared.transport.shards import shard_of; "
        "print(json.dumps([shard_of(k, 16) for k in json.loads(sys.stdin.read())]))"
    )
    for seed in ("1", "12345"):  # Python's str hash differs per seed; the shard must not
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run(
            [sys.executable, "-c", code], input=json.dumps(keys), capture_output=True, text=True, env=env, check=True
        )
        assert json.loads(out.stdout) == here
    # pinned: changing the hash would send live participants to other shards (and workers) mid-class
    assert [shard_of(k, S) for k in ("s/p0", "s/p1", "math-101/alice")] == [4, 12, 11]
    assert shard_of("s/p0", 1024) == 836
    assert shard_of("s/p0", 1) == 0
    with pytest.raises(ValueError):
        shard_of("s/p0", 0)


def test_shard_of_spreads_participants_evenly() -> None:
    counts = collections.Counter(shard_of(participant_key("class", f"p{i}"), S) for i in range(16_000))
    assert set(counts) == set(range(S))
    mean = 16_000 / S
    assert all(abs(n - mean) / mean < 0.1 for n in counts.values()), counts


def test_entry_ids_name_their_shard() -> None:
    assert split_entry_id(entry_id(7, "1700000000000-3")) == (7, "1700000000000-3")
    with pytest.raises(ValueError):
        split_entry_id("1700000000000-3")


# -- the assignment ------------------------------------------------------------------------------


def _members(rng: random.Random, n: int) -> list[str]:
    return [f"host-{rng.randrange(10**9)}-{rng.randrange(1 << 16)}" for _ in range(n)]


def test_assignment_is_deterministic_complete_and_balanced() -> None:
    rng = random.Random(7)
    for n in range(1, 8):
        members = _members(rng, n)
        got = assign(S, members)
        assert got == assign(S, list(reversed(members)))  # any order, any process: the same answer
        assert set(got) == set(members)
        owned = [k for shards in got.values() for k in shards]
        assert sorted(owned) == list(range(S))  # every shard exactly once
        loads = [len(v) for v in got.values()]
        assert max(loads) - min(loads) <= 1
    many = _members(rng, 20)  # more workers than shards: some idle, none with two
    assert sorted(len(v) for v in assign(S, many).values()) == [0] * 4 + [1] * 16
    assert assign(S, []) == {}


def _moved(a: dict[int, str], b: dict[int, str]) -> int:
    return sum(a[k] != b[k] for k in range(S))


def _round_robin(members: list[str]) -> dict[int, str]:
    names = sorted(members)
    return {k: names[k % len(names)] for k in range(S)}


def test_a_join_or_leave_moves_few_shards_besides_the_necessary_ones() -> None:
    rng = random.Random(11)
    extra_join, extra_leave, naive = [], [], []
    for _ in range(300):
        n = rng.randrange(1, 6)
        members = _members(rng, n)
        before = owner_map(S, members)
        new = _members(rng, 1)[0]
        after = owner_map(S, [*members, new])
        necessary = sum(owner == new for owner in after.values())  # the newcomer's share must move
        assert _moved(before, after) >= necessary
        extra_join.append(_moved(before, after) - necessary)
        naive.append(_moved(_round_robin(members), _round_robin([*members, new])) - necessary)
        if n > 1:
            gone = members[0]
            survivors = owner_map(S, members[1:])
            necessary = sum(owner == gone for owner in before.values())  # the leaver's shards must move
            extra_leave.append(_moved(before, survivors) - necessary)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert mean(extra_join) <= 1.5 and mean(extra_leave) <= 1.5, (mean(extra_join), mean(extra_leave))
    assert mean(naive) > 3 * mean(extra_join)  # what a sorted round-robin would reshuffle
    two = _members(rng, 2)
    assert _moved(owner_map(S, two[:1]), owner_map(S, two)) == S // 2  # 1 -> 2 workers: exactly half moves


# -- leases on the in-memory store, virtual time ----------------------------------------------------


def _owner(store: MemoryLeaseStore, name: str, clock: VirtualClock) -> tuple[ShardOwnership, Metrics]:
    metrics = Metrics(CollectorRegistry())
    return ShardOwnership(store=store, member=name, shards=S, ttl_ms=TTL_MS, clock=clock, metrics=metrics), metrics


def _events(metrics: Metrics, event: str) -> float:
    return metrics.registry.get_sample_value("classpulse_inference_lease_events_total", {"event": event}) or 0.0


async def test_join_hands_shards_over_and_a_dead_owner_is_taken_over_after_expiry() -> None:
    clock = VirtualClock()
    store = MemoryLeaseStore(clock=clock)
    a, a_metrics = _owner(store, "a", clock)
    b, b_metrics = _owner(store, "b", clock)

    first = await a.tick()  # alone: every shard
    assert sorted(x.shard for x in first.acquired) == list(range(S)) and a.readable() == list(range(S))
    assert a_metrics.registry.get_sample_value("classpulse_inference_owned_shards") == S

    joined = await b.tick()  # b wants half but a still holds them: nothing yet, nobody holds a shard twice
    assert joined.acquired == [] and b.held() == []
    want_b = assign(S, ["a", "b"])["b"]
    handing = await a.tick()
    assert sorted(handing.revoke) == sorted(want_b) and handing.lost == []
    assert set(a.readable()) == set(range(S)) - want_b  # no new reads from shards being handed over
    assert all(a.holds(k) for k in want_b)  # ...but a may still finish (publish) what it read
    for k in handing.revoke:
        await a.release(k)
    got = await b.tick()
    assert {x.shard for x in got.acquired} == want_b
    assert all(x.previous is None for x in got.acquired)  # released, not taken over
    assert _events(b_metrics, "acquired") == len(want_b) and _events(a_metrics, "released") == len(want_b)
    assert set(a.held()) | set(b.held()) == set(range(S)) and not set(a.held()) & set(b.held())

    # a stops renewing (SIGKILL, pause): it stops trusting its leases before they expire in the store
    a_shards = set(a.held())
    clock.advance((1 - SAFETY) * TTL_MS / 1000 + 0.01)
    assert not any(a.holds(k) for k in a_shards) and a.readable() == []
    await b.tick()
    assert set(b.held()) == want_b  # a's leases have not expired yet: no takeover while a might be alive
    clock.advance(SAFETY * TTL_MS / 1000)
    taken = await b.tick()  # a's membership and leases expired: b owns every shard, knowing whose they were
    assert {x.shard for x in taken.acquired} == a_shards
    assert all(x.previous == "a" for x in taken.acquired)
    assert _events(b_metrics, "taken_over") == len(a_shards)
    assert set(b.held()) == set(range(S))

    # a comes back: its renewals fail (the leases have new epochs), it drops those shards
    stale = a.lease(next(iter(a_shards)))
    assert stale is not None
    back = await a.tick()
    assert set(back.lost) == a_shards and _events(a_metrics, "lost") == len(a_shards)
    newer = b.lease(stale.shard)
    assert newer is not None and newer.epoch > stale.epoch
    assert not await store.save_states(stale, {"s/p": b"old"}, ttl_ms=60_000, seq=1)  # fenced: not over b
    assert await store.save_states(newer, {"s/p": b"new"}, ttl_ms=60_000, seq=1)
    assert await store.load_state("s/p") == b"new"
    assert not await store.release(stale) and await store.holder(stale.shard) == "b"


async def test_a_lease_that_lapsed_only_locally_is_confirmed_and_one_taken_over_is_lost() -> None:
    clock = VirtualClock()
    store = MemoryLeaseStore(clock=clock)
    a, a_metrics = _owner(store, "a", clock)
    await a.tick()
    clock.advance((1 - SAFETY) * TTL_MS / 1000 + 0.01)  # a was slow: it stops trusting, the store has not expired
    assert not a.holds(3)
    assert await a.confirm([3, 4]) == []  # still a's in the store: nobody could have acquired them
    assert a.holds(3) and a.holds(4) and not a.holds(5)  # only what was asked about is renewed
    assert _events(a_metrics, "confirmed") == 2
    assert await a.confirm([3]) == []  # valid again: nothing asked
    assert _events(a_metrics, "confirmed") == 2

    clock.advance(TTL_MS / 1000 + 0.01)  # now a's leases expired in the store, and b takes them
    b, _ = _owner(store, "b", clock)
    await b.tick()
    assert 3 in b.held()
    assert await a.confirm([3]) == [3]  # refused: lost, dropped here as a tick would
    assert 3 not in a.held() and _events(a_metrics, "lost") == 1


async def test_renewal_keeps_leases_and_a_clean_leave_frees_them_at_once() -> None:
    clock = VirtualClock()
    store = MemoryLeaseStore(clock=clock)
    a, _ = _owner(store, "a", clock)
    await a.tick()
    for _ in range(10):  # 10 renewal periods, far past one TTL
        clock.advance(1.0)
        changes = await a.tick()
        assert changes.lost == [] and changes.acquired == []
        assert a.readable() == list(range(S))
    b, b_metrics = _owner(store, "b", clock)
    await a.leave()
    assert await store.heartbeat("b", ttl_ms=TTL_MS) == ["b"]
    got = await b.tick()
    assert len(got.acquired) == S and all(x.previous is None for x in got.acquired)
    assert _events(b_metrics, "taken_over") == 0


async def test_snapshots_expire() -> None:
    clock = VirtualClock()
    store = MemoryLeaseStore(clock=clock)
    (lease,) = await store.acquire([3], "a", ttl_ms=TTL_MS)
    assert lease is not None and lease.token == "a/1"
    assert await store.save_states(lease, {"s/p": b"x"}, ttl_ms=5000, seq=1)
    clock.advance(4.0)
    assert await store.load_state("s/p") == b"x"
    clock.advance(1.5)
    assert await store.load_state("s/p") is None
