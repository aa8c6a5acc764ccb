"""Inference scale-out under test: real ``classpulse inference`` processes, their scores read back, ownership checked.

* :func:`inference_env` / :func:`start_worker`: a worker process on Redis + Kafka with a fixed
  consumer name (so the shard assignment is known in advance);
* :func:`lease_holders`: which worker holds each shard right now (from the lease keys);
* :func:`read_scores`: every ScoreEvent of a session on ``classpulse.scores``, read to the end;
* :func:`ownership`: per participant, which worker produced each step and where the producer
  changed, the evidence that one participant is never scored by two workers at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer

from shared.contracts.events import ScoreEvent
from shared.contracts.topics import INFERENCE_COORDINATION, MEDIA_STREAM, SCORES
from shared.testkit.fault_report import read_topic

REPO = Path(__file__).resolve().parents[2]


def inference_env(*, redis_url: str, kafka: str, name: str, **settings: str | float) -> dict[str, str]:
    """The environment of one worker: distributed transports, consumer ``name``, then ``CLASSPULSE_<KEY>`` settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLASSPULSE_")}
    env.update(
        CLASSPULSE_TRANSPORT="distributed",
        CLASSPULSE_REDIS_URL=redis_url,
        CLASSPULSE_KAFKA_BOOTSTRAP=kafka,
        CLASSPULSE_INFERENCE_CONSUMER_NAME=name,
        CLASSPULSE_LOG_LEVEL="INFO",
    )
    env.update({f"CLASSPULSE_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def start_worker(env: Mapping[str, str], log: Path, *, metrics_port: int | None = None) -> subprocess.Popen[bytes]:
    """``classpulse inference`` as a child process (this interpreter, this checkout), output to ``log``."""
    cmd = [sys.executable, "-m", "services.cli", "inference"]
    if metrics_port is not None:
        cmd += ["--metrics-port", str(metrics_port)]
    with log.open("ab") as out:
        return subprocess.Popen(cmd, cwd=REPO, env=dict(env), stdout=out, stderr=subprocess.STDOUT)


async def clear_inference_keys(redis_url: str) -> None:
    """Delete the media shard streams and the coordination keys (a Redis database kept for one test)."""
    r: Any = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k async for k in r.scan_iter(match=f"{MEDIA_STREAM}:*")]
        keys += [k async for k in r.scan_iter(match=f"{INFERENCE_COORDINATION}:*")]
        if keys:
            await r.delete(*keys)
    finally:
        await r.aclose()


async def lease_holders(redis_url: str, shards: int) -> dict[int, str | None]:
    """Shard -> the worker holding its lease now (None: free)."""
    r: Any = aioredis.Redis.from_url(redis_url)
    try:
        raw = await r.mget([f"{INFERENCE_COORDINATION}:lease:{k}" for k in range(shards)])
    finally:
        await r.aclose()
    return {k: (v.decode().rpartition("/")[0] if v is not None else None) for k, v in enumerate(raw)}


async def stored_state(redis_url: str, session: str, participant: str) -> bytes | None:
    """The latest stored snapshot of a participant's inference state."""
    r: Any = aioredis.Redis.from_url(redis_url)
    try:
        data = await r.get(f"{INFERENCE_COORDINATION}:pstate:{session}/{participant}")
    finally:
        await r.aclose()
    return bytes(data) if data is not None else None


async def read_scores(bootstrap: str, session: str, *, topic: str = SCORES.name) -> list[ScoreEvent]:
    """Every ScoreEvent of ``session`` in ``topic``, from the beginning to the current end of each partition."""
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await probe.start()
    try:
        if topic not in await probe.topics():
            return []
    finally:
        await probe.stop()
    return await read_topic(bootstrap, topic, session, ScoreEvent, need_partitions=True)


@dataclass
class Ownership:
    """Who scored one participant's steps, in media order."""

    producers: dict[int, set[str]] = field(default_factory=dict)
    """seq -> every worker that published an event for it (one, unless redelivered at a takeover)."""
    media_time: dict[int, float] = field(default_factory=dict)
    """seq -> the step's media time (video and audio-only steps interleave in media time, not in seq)."""

    def steps(self) -> list[int]:
        """The seqs in media order."""
        return sorted(self.producers, key=lambda seq: (self.media_time[seq], seq))

    @property
    def runs(self) -> list[tuple[str, int, int]]:
        """(producer, first seq, last seq) of consecutive steps (media order) with the same producer(s); steps
        published by two workers make a run named ``"a+b"``."""
        out: list[tuple[str, int, int]] = []
        for seq in self.steps():
            who = "+".join(sorted(self.producers[seq]))
            if out and out[-1][0] == who:
                out[-1] = (who, out[-1][1], seq)
            else:
                out.append((who, seq, seq))
        return out

    @property
    def owners(self) -> list[str]:
        """The producers of :attr:`runs`, in media order (e.g. ``["w1", "w1+w2", "w2"]`` for a takeover)."""
        return [run[0] for run in self.runs]

    @property
    def shared_steps(self) -> list[int]:
        """Steps published by more than one worker (only media a dead worker left unacked may repeat)."""
        return sorted(seq for seq, who in self.producers.items() if len(who) > 1)


def ownership(events: Iterable[ScoreEvent]) -> dict[str, Ownership]:
    """Per participant: which worker produced each step."""
    out: dict[str, Ownership] = {}
    for ev in events:
        own = out.setdefault(ev.participant, Ownership())
        own.producers.setdefault(ev.seq, set()).add(ev.producer or "?")
        own.media_time[ev.seq] = ev.media_time
    return out
