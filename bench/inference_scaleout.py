"""Inference scale-out: 2 workers against 1 on the same media, and a worker killed with SIGKILL mid-class.

    python -m bench.inference_scaleout --redis redis://127.0.0.1:6379/11 --kafka 127.0.0.1:9092 \\
        [--students 8] [--seconds 40] [--scenario compare kill]

Real ``classpulse inference`` processes on Redis + Kafka; a live class (real photos, espeak speech:
``shared.testkit.classroom.mixed_class``, 320x240 at 5 fps, 0.5 s audio chunks) is fed into the media
shards in real time, as ingest would, and every ScoreEvent is read back from Kafka.

* **compare**: the same class once through 1 worker and once through 2 (their shards split before
  the media starts; ``MAX_LAG_MS=0`` so that no frame is dropped for lateness on a loaded box and
  the runs are comparable). Reported per participant: event ids only one run has, and the share of
  common steps with the same present / attentive / speaking (target: the same ids, >= 99 %).
* **kill**: 2 workers with the default overload guard (``MAX_LAG_MS=1000``); halfway through,
  ``kill -9`` the first. Reported for its students: seconds from the kill to the first score of
  media captured after the kill (target <= 5 s), whether the stored state kept the baseline
  calibrated before the kill, the attentive share of frontal students after the takeover (the first
  steps after the gap refill the fusion window), frames without a score (video steps; while frames
  are missing, audio makes camera-off steps) and the drops the workers counted
  (``classpulse_media_dropped_total``; a killed worker's last scraped values).

The Redis database given is cleared of ClassPulse media and coordination keys: use a spare one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from services.inference.state import ParticipantState
from shared.contracts.events import ScoreEvent
from shared.contracts.topics import MEDIA_STREAM
from shared.settings import CommonSettings
from shared.testkit.classroom import LiveClass, feed_live, mixed_class
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

SHARDS = CommonSettings.model_fields["media_shards"].default
FLAGS = ("present", "attentive", "speaking")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Run:
    """Workers of one run, their metrics ports and logs."""

    def __init__(self, args: argparse.Namespace, tmp: Path, **settings: str | float) -> None:
        self.args, self.tmp, self.settings = args, tmp, settings
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        self.dropped: dict[str, dict[str, float]] = {}

    def start(self, name: str) -> None:
        env = inference_env(redis_url=self.args.redis, kafka=self.args.kafka, name=name, **self.settings)
        self.ports[name] = _free_port()
        self.procs[name] = start_worker(env, self.tmp / f"{name}.log", metrics_port=self.ports[name])

    async def wait_split(self, names: Sequence[str], within: float = 180.0) -> None:
        want = owner_map(SHARDS, names)
        deadline = time.monotonic() + within
        while await lease_holders(self.args.redis, SHARDS) != want:
            for name, proc in self.procs.items():
                if proc.poll() is not None and name in names:
                    raise SystemExit(f"worker {name} exited ({proc.returncode}); see {self.tmp / (name + '.log')}")
            if time.monotonic() > deadline:
                raise SystemExit(f"the shards never split over {list(names)}")
            await asyncio.sleep(0.2)

    async def scrape(self) -> None:
        """Remember each live worker's drop counters (a killed worker keeps its last values)."""
        async with aiohttp.ClientSession() as http:
            for name, port in self.ports.items():
                if self.procs[name].poll() is not None:
                    continue
                try:
                    async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                        text = await resp.text()
                except aiohttp.ClientError:
                    continue
                counts: dict[str, float] = {}
                for line in text.splitlines():
                    if line.startswith("classpulse_media_dropped_total{"):
                        reason = line.split('reason="', 1)[1].split('"', 1)[0]
                        counts[reason] = float(line.rsplit(" ", 1)[1])
                self.dropped[name] = counts

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


async def _feed(args: argparse.Namespace, live: LiveClass, seconds: float, first_tick: int = 0) -> int:
    bus = RedisMediaBus(url=args.redis, stream=MEDIA_STREAM, maxlen=5000, shards=SHARDS)
    await bus.start()
    try:
        return await feed_live(bus, live, seconds=seconds, first_tick=first_tick)
    finally:
        await bus.close()


async def _scores(args: argparse.Namespace, session: str, want: int, within: float = 180.0) -> list[ScoreEvent]:
    deadline = time.monotonic() + within
    while True:
        events = await read_scores(args.kafka, session)
        if len({e.event_id for e in events}) >= want or time.monotonic() > deadline:
            return events
        await asyncio.sleep(1.0)


async def _one_run(args: argparse.Namespace, workers: list[str], session: str, tmp: Path) -> list[ScoreEvent]:
    await clear_inference_keys(args.redis)
    students = mixed_class(args.students, args.seconds)
    live = LiveClass(session=session, students=students)
    run = Run(args, tmp / session, inference_max_lag_ms=0, inference_perception_threads=1)
    (tmp / session).mkdir()
    try:
        for name in workers:
            run.start(name)
        await run.wait_split(workers)
        ticks = await _feed(args, live, args.seconds)
        return await _scores(args, session, ticks * len(students))
    finally:
        run.stop()


async def compare(args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    stamp = int(time.time())
    one = await _one_run(args, ["solo"], f"cmp1-{stamp}", tmp)
    two = await _one_run(args, ["w1", "w2"], f"cmp2-{stamp}", tmp)
    key = lambda e: (e.participant, e.seq)  # noqa: E731  (sessions differ between the runs)
    a, b = {key(e): e for e in one}, {key(e): e for e in two}
    rows = {}
    for participant in sorted({p for p, _ in a} | {p for p, _ in b}):
        mine_a = {k for k in a if k[0] == participant}
        mine_b = {k for k in b if k[0] == participant}
        common = mine_a & mine_b
        same = sum(all(getattr(a[k], f) == getattr(b[k], f) for f in FLAGS) for k in common)
        rows[participant] = {
            "steps_1_worker": len(mine_a),
            "steps_2_workers": len(mine_b),
            "ids_only_in_one_run": len(mine_a ^ mine_b),
            "same_flags_share": round(same / len(common), 4) if common else None,
            "owner": sorted({e.producer or "?" for e in two if e.participant == participant}),
        }
    common_all = set(a) & set(b)
    same_all = sum(all(getattr(a[k], f) == getattr(b[k], f) for f in FLAGS) for k in common_all)
    return {
        "scenario": "compare",
        "students": args.students,
        "seconds": args.seconds,
        "ids_only_in_one_run": len(set(a) ^ set(b)),
        "same_flags_share": round(same_all / max(1, len(common_all)), 4),
        "double_scored_steps": sum(len(o.shared_steps) for o in ownership(two).values()),
        "participants": rows,
    }


async def kill(args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    await clear_inference_keys(args.redis)
    session = f"kill-{int(time.time())}"
    students = mixed_class(args.students, args.seconds)
    live = LiveClass(session=session, students=students)
    owners = owner_map(SHARDS, ["w1", "w2"])
    orphans = [s for s in students if owners[shard_of(participant_key(session, s.participant), SHARDS)] == "w1"]
    run = Run(args, tmp / session, inference_perception_threads=1)
    (tmp / session).mkdir()
    try:
        for name in ("w1", "w2"):
            run.start(name)
        await run.wait_split(["w1", "w2"])
        half = args.seconds / 2
        tick = await _feed(args, live, half)
        await run.scrape()
        run.procs["w1"].kill()
        killed = time.time()
        ticks = await _feed(args, live, args.seconds - half, first_tick=tick)
        events = await _scores(args, session, ticks * len(students), within=30)
        await run.scrape()
        states = {s.participant: await stored_state(args.redis, session, s.participant) for s in orphans}
    finally:
        run.stop()
    per: dict[str, object] = {}
    for s in orphans:
        mine = [e for e in events if e.participant == s.participant]
        fresh = [e for e in mine if e.producer == "w2" and e.timing.capture_ts >= killed]
        resumed = min((e.timing.stage("inference").emitted for e in fresh), default=None)  # type: ignore[union-attr]
        data = states[s.participant]
        state = ParticipantState.restore(data) if data is not None else None
        frontal_after = [e for e in fresh if s.script.visual_at(e.media_time) == "frontal"]
        per[s.participant] = {
            "resumed_after_s": round(resumed - killed, 2) if resumed is not None else None,
            "baseline_from_before_the_kill": bool(state and state.calibrated and (state.first_face_time or 0) < half),
            "attentive_share_frontal_after": (
                round(sum(e.attentive for e in frontal_after) / len(frontal_after), 3) if frontal_after else None
            ),
            "frames_without_score": ticks - len({e.seq for e in mine if e.seq % 2 == 0}),
            "audio_only_steps": len({e.seq for e in mine if e.seq % 2 == 1}),
        }
    resumes = [v["resumed_after_s"] for v in per.values() if isinstance(v, dict) and v["resumed_after_s"] is not None]
    missing = ticks * len(students) - len({(e.participant, e.seq) for e in events if e.seq % 2 == 0})
    return {
        "scenario": "kill",
        "students": args.students,
        "orphans": len(orphans),
        "seconds": args.seconds,
        "max_resume_s": max(resumes) if resumes else None,
        "frames_without_score": missing,
        "drops_counted": run.dropped,
        "orphan_students": per,
    }


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="classpulse-scaleout-") as tmp:
        for scenario in args.scenario:
            started = time.perf_counter()
            result = await (compare if scenario == "compare" else kill)(args, Path(tmp))
            result["wall_s"] = round(time.perf_counter() - started, 1)
            print(json.dumps(result, indent=2), flush=True)
        await clear_inference_keys(args.redis)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/11", help="a spare Redis database (cleared)")
    parser.add_argument("--kafka", default="127.0.0.1:9092")
    parser.add_argument("--students", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--scenario", nargs="+", choices=("compare", "kill"), default=["compare", "kill"])
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
