"""Inference scale-out on real Redis + Kafka with real ``classpulse inference`` processes.

A class (real photos, espeak speech) is fed live into the media shards, as ingest would. Workers
join, leave cleanly, or are killed with SIGKILL; every ScoreEvent is read back from Kafka and its
``producer`` stamp says which worker scored it. Checked: shard leases split and rebalance (1 -> 2
-> 1 workers), one participant is never scored by two workers at once (ordered by step, each
participant's producer changes only at a hand-over or a takeover), a moved participant's state
continues (the events equal those of one engine that saw everything), and a killed worker's
students resume on the other with their baseline, without losing a step.

The media stream and lease key names are fixed in the worker processes, so this module keeps them
in its own Redis database (``ISOLATED_DB``) and clears it before and after each test.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from services.inference.engine import InferenceEngine
from services.inference.settings import InferenceSettings
from services.inference.state import ParticipantState
from shared.contracts.events import ScoreEvent
from shared.contracts.topics import MEDIA_STREAM
from shared.settings import CommonSettings
from shared.testkit.classroom import LiveClass, Student, active, feed_live, listener
from shared.testkit.scaleout import (
    clear_inference_keys,
    inference_env,
    lease_holders,
    ownership,
    read_scores,
    start_worker,
    stored_state,
)
from shared.transport.redis_streams import RedisMediaBus
from shared.transport.shards import owner_map, participant_key, shard_of

pytestmark = pytest.mark.integration

ISOLATED_DB = 12
SHARDS = CommonSettings.model_fields["media_shards"].default
TTL_S = 2.0
WORKER_SETTINGS: dict[str, str | float] = {
    "inference_lease_ttl_ms": int(TTL_S * 1000),
    "inference_lease_renew_ms": 500,
    "inference_snapshot_interval_s": 1.0,
    "inference_max_lag_ms": 0,  # score every frame, however late (the box is shared): runs are comparable
    "inference_perception_threads": 1,
    "log_level": "INFO",
}
STARTUP_S = 120.0


def _isolated(redis_url: str) -> str:
    base = redis_url.rsplit("/", 1)[0] if redis_url.count("/") > 2 else redis_url
    return f"{base}/{ISOLATED_DB}"


def _worker(url: str, kafka: str, name: str, tmp: Path) -> subprocess.Popen[bytes]:
    return start_worker(inference_env(redis_url=url, kafka=kafka, name=name, **WORKER_SETTINGS), tmp / f"{name}.log")


def _class_for(session: str, workers: list[str], seconds: float) -> tuple[list[Student], dict[str, str]]:
    """A listener and an active student on each worker's shards (so every worker has students to lose)."""
    owners = owner_map(SHARDS, workers)
    students: list[Student] = []
    owner_of: dict[str, str] = {}
    for worker in workers:
        picked = [
            p
            for p in (f"{worker}-student-{i}" for i in range(200))
            if owners[shard_of(participant_key(session, p), SHARDS)] == worker
        ][:2]
        students += [listener(picked[0], seconds), active(picked[1], seconds)]
        owner_of.update(dict.fromkeys(picked, worker))
    return students, owner_of


class Feeder:
    """Feeds the class live in the background, one second at a time, until stopped."""

    def __init__(self, bus: RedisMediaBus, live: LiveClass) -> None:
        self.bus, self.live = bus, live
        self.next_tick = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            self.next_tick = await feed_live(self.bus, self.live, seconds=1.0, first_tick=self.next_tick)

    async def stop(self) -> int:
        self._stop.set()
        assert self._task is not None
        await self._task
        return self.next_tick


async def _until(
    check: Callable[[], Awaitable[bool]], what: str, procs: dict[str, subprocess.Popen[bytes]], within: float
) -> None:
    deadline = time.monotonic() + within
    while True:
        if await check():
            return
        for name, proc in procs.items():
            assert proc.poll() is None or proc.returncode in (0, -signal.SIGKILL), f"{name} exited: {proc.returncode}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def _cluster(redis_url: str, tmp: Path) -> AsyncIterator[tuple[str, dict[str, subprocess.Popen[bytes]]]]:
    url = _isolated(redis_url)
    await clear_inference_keys(url)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        yield url, procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        await clear_inference_keys(url)
        for name in procs:
            log = (tmp / f"{name}.log").read_text(errors="replace").splitlines()
            print(f"--- {name}.log (last 15 lines)", *log[-15:], sep="\n")


def _reference(live: LiveClass, ticks: int) -> dict[str, ScoreEvent]:
    """What one engine that saw all the media in order scores (the single-worker truth)."""
    settings = InferenceSettings(perception_threads=1)
    engine = InferenceEngine(settings=settings)
    engine.load()
    out: dict[str, ScoreEvent] = {}
    for tick in range(ticks):
        for ev in engine.process(live.messages(tick, capture_ts=time.time())):
            out[ev.event_id] = ev
    engine.close()
    return out


async def _all_scores(kafka: str, session: str, want: int, within: float) -> list[ScoreEvent]:
    """Every score of the session once ``want`` distinct steps arrived (or the time is up)."""
    deadline = time.monotonic() + within
    while True:
        events = await read_scores(kafka, session)
        if len({e.event_id for e in events}) >= want or time.monotonic() > deadline:
            return events
        await asyncio.sleep(1.0)


def _holders_are(url: str, want: dict[int, str]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await lease_holders(url, SHARDS) == want

    return check


async def test_workers_join_and_leave_without_splitting_a_student(
    redis_url: str, kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    session = f"scale-{unique}"
    students, owner_of = _class_for(session, ["w1", "w2"], 60.0)
    live = LiveClass(session=session, students=students)
    async with _cluster(redis_url, tmp_path) as (url, procs):
        bus = RedisMediaBus(url=url, stream=MEDIA_STREAM, maxlen=5000, shards=SHARDS)
        await bus.start()
        procs["w1"] = _worker(url, kafka_bootstrap, "w1", tmp_path)
        await _until(_holders_are(url, dict.fromkeys(range(SHARDS), "w1")), "w1 to own every shard", procs, STARTUP_S)
        feeder = Feeder(bus, live)
        feeder.start()
        await asyncio.sleep(4.0)  # w1 alone: every student calibrates on w1

        procs["w2"] = _worker(url, kafka_bootstrap, "w2", tmp_path)
        split = owner_map(SHARDS, ["w1", "w2"])
        await _until(_holders_are(url, split), "the shards to split between w1 and w2", procs, STARTUP_S)
        joined_tick = feeder.next_tick
        await asyncio.sleep(4.0)

        leave_tick = feeder.next_tick
        procs["w2"].send_signal(signal.SIGTERM)  # a clean leave: w2 snapshots, releases, exits
        assert await asyncio.to_thread(procs["w2"].wait, 30) == 0
        await _until(_holders_are(url, dict.fromkeys(range(SHARDS), "w1")), "w1 to own every shard again", procs, 30)
        left_tick = feeder.next_tick
        await asyncio.sleep(3.0)
        ticks = await feeder.stop()
        await bus.close()

        want = ticks * len(students)  # one step per frame (cameras stay on; audio rides with the frames)
        events = await _all_scores(kafka_bootstrap, session, want, within=120)
        procs["w1"].send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(procs["w1"].wait, 30) == 0

    reference = await asyncio.to_thread(_reference, live, ticks)
    scores = {e.event_id: e for e in events}
    assert set(scores) == set(reference), "every frame scored once, with the ids one worker would give"
    owners = ownership(events)
    moved = [s.participant for s in students if owner_of[s.participant] == "w2"]
    for student in students:
        own = owners[student.participant]
        assert own.shared_steps == [], f"{student.participant}: steps scored by two workers"
        if student.participant in moved:
            assert own.owners == ["w1", "w2", "w1"], own.runs
            (_, w2_first, w2_last) = own.runs[1]
            assert joined_tick - 30 <= w2_first // 2 <= joined_tick + 5  # changed owner only at the join...
            # ...and at the leave: from a little before the SIGTERM (w2 may be behind the feed) until w1 owned
            # every shard again (the claim can come seconds after the SIGTERM under a full suite's load)
            assert leave_tick - 30 <= w2_last // 2 <= left_tick + 5, (leave_tick, w2_last // 2, left_tick)
        else:
            assert own.owners == ["w1"], own.runs
    differ = [
        eid
        for eid, ev in scores.items()
        if (ev.present, ev.attentive, ev.speaking, ev.hand_raised)
        != (reference[eid].present, reference[eid].attentive, reference[eid].speaking, reference[eid].hand_raised)
        or abs(ev.engagement - reference[eid].engagement) > 1e-3
    ]
    # The bar: the same behaviour on >= 99 % of steps. On a quiet box every step matches; on a loaded
    # one a hand-over has once restored a snapshot a few frames old (5 of 580 steps differed, then converged).
    assert len(differ) <= 0.01 * len(scores), (
        f"{len(differ)} of {len(scores)} steps differ from one engine's, e.g. {differ[:5]}"
    )


async def test_a_killed_workers_students_resume_on_the_other_with_their_baseline(
    redis_url: str, kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    session = f"kill-{unique}"
    students, owner_of = _class_for(session, ["w1", "w2"], 60.0)
    live = LiveClass(session=session, students=students)
    async with _cluster(redis_url, tmp_path) as (url, procs):
        bus = RedisMediaBus(url=url, stream=MEDIA_STREAM, maxlen=5000, shards=SHARDS)
        await bus.start()
        for name in ("w1", "w2"):
            procs[name] = _worker(url, kafka_bootstrap, name, tmp_path)
        split = owner_map(SHARDS, ["w1", "w2"])
        await _until(_holders_are(url, split), "the shards to split between w1 and w2", procs, STARTUP_S)
        feeder = Feeder(bus, live)
        feeder.start()
        await asyncio.sleep(5.0)  # every student calibrated (3 s of face), snapshots stored

        procs["w1"].kill()  # SIGKILL mid-class: no hand-over, its leases just expire
        killed_at = time.time()
        await asyncio.to_thread(procs["w1"].wait, 10)
        await _until(_holders_are(url, dict.fromkeys(range(SHARDS), "w2")), "w2 to take every shard", procs, 30)
        taken_after = time.time() - killed_at
        await asyncio.sleep(5.0)
        ticks = await feeder.stop()
        await bus.close()
        events = await _all_scores(kafka_bootstrap, session, ticks * len(students), within=120)
        states = {s.participant: await stored_state(url, session, s.participant) for s in students}

    assert taken_after <= TTL_S + 3.0, f"takeover took {taken_after:.1f} s"
    owners = ownership(events)
    orphans = [s for s in students if owner_of[s.participant] == "w1"]
    for student in students:
        own = owners[student.participant]
        assert sorted(own.producers) == [2 * t for t in range(ticks)], "no step lost: w2 claimed w1's pending media"
        if student not in orphans:
            assert own.owners == ["w2"], own.runs
            continue
        # w1's steps all come before w2's; only media w1 scored but had not acked when it was killed is
        # scored again by w2, right at the takeover
        order = {seq: i for i, seq in enumerate(own.steps())}  # media order
        only_w1 = [order[seq] for seq, who in own.producers.items() if who == {"w1"}]
        only_w2 = [order[seq] for seq, who in own.producers.items() if who == {"w2"}]
        assert only_w1 and only_w2 and max(only_w1) < min(only_w2), own.runs
        assert all(max(only_w1) < order[seq] < min(only_w2) for seq in own.shared_steps), own.runs
        after = [e for e in events if e.participant == student.participant and e.producer == "w2"]
        resumed = min(e.timing.stage("inference").emitted for e in after) - killed_at  # type: ignore[union-attr]
        assert resumed <= TTL_S + 4.0, f"{student.participant} resumed {resumed:.1f} s after the kill"
        data = states[student.participant]
        assert data is not None
        state = ParticipantState.restore(data)  # written by w2 now
        assert state.calibrated and state.first_face_time is not None and state.first_face_time < 1.0, (
            "w2 kept the baseline w1 calibrated in the first seconds (a new one would start after the kill)"
        )
        if student.script.speech == ():  # the frontal listener stays attentive on the new worker
            fresh = [e for e in after if e.seq // 2 >= 5 * 5]
            assert fresh and sum(e.present and e.attentive for e in fresh) >= 0.95 * len(fresh)
