"""The faust aggregator worker on real Kafka and Redis: scripted scores in, aggregates and alerts out,
and a worker killed mid-session restores its state from the changelog without losing an aggregate."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import patch

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.aggregator.scripted import Behaviour, Script, between, lifecycle_event
from services.aggregator.settings import AggregatorSettings
from shared.analytics.session import SessionAggregator
from shared.contracts.codec import EventCodec
from shared.contracts.events import Alert, ClassAggregate, LifecycleEvent, ScoreEvent
from shared.contracts.report import SessionSummary
from shared.contracts.topics import state_key, summary_key
from shared.transport.kafka import KafkaEventBus

pytestmark = pytest.mark.integration

BASE = 1_700_000_000.0
ROOT = Path(__file__).resolve().parents[2]
WINDOWS = {"CLASSPULSE_AGGREGATOR_TUMBLING_SIZES_S": "[1, 5]", "CLASSPULSE_AGGREGATOR_HOPPING_SIZE_S": "10",
           "CLASSPULSE_AGGREGATOR_HOPPING_STEP_S": "5", "CLASSPULSE_AGGREGATOR_AWAY_AFTER_S": "4",
           "CLASSPULSE_AGGREGATOR_ATTENTION_DIP_S": "5", "CLASSPULSE_AGGREGATOR_SILENCE_AFTER_S": "8"}


def settings_from(env: dict[str, str]) -> AggregatorSettings:
    """The settings the worker reads from ``env`` (parsed the same way, from the environment)."""
    with patch.dict(os.environ, {k: v for k, v in env.items() if k.startswith("CLASSPULSE_AGGREGATOR_")}):
        return AggregatorSettings()


def script(session: str) -> Script:
    s = Script(session=session, base=BASE)
    s.add("teacher", between(0, 3, Behaviour(speaking=True)), role="teacher", end=30)
    s.add("a", between(4, 6, Behaviour(speaking=True, hand_raised=True)), end=30)
    s.add("b", between(8, 16, Behaviour(present=False, attentive=False)), end=30)
    s.add("c", between(10, 20, Behaviour(attentive=False)), end=30)
    return s


class Worker:
    """``classpulse aggregator`` as a child process."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "aggregator"], cwd=ROOT, env=env,
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


@pytest.fixture
def worker_env(kafka_bootstrap: str, redis_url: str, unique: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLASSPULSE_")}
    env.update({
        "CLASSPULSE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "CLASSPULSE_REDIS_URL": redis_url,
        "CLASSPULSE_AGGREGATOR_APP_ID": f"agg-test-{unique}",
        "CLASSPULSE_AGGREGATOR_TOPIC_PREFIX": f"t{unique}.",
        "CLASSPULSE_AGGREGATOR_PARTITIONS": "2",
        "CLASSPULSE_AGGREGATOR_DATA_DIR": str(tmp_path / "state-1"),
        "CLASSPULSE_AGGREGATOR_CLOCK": "event",
        "CLASSPULSE_AGGREGATOR_METRICS_PORT": "0",
        "CLASSPULSE_AGGREGATOR_END_GRACE_S": "1",
        # faust in tests: a killed member must leave the group quickly
        "CLASSPULSE_AGGREGATOR_BROKER_SESSION_TIMEOUT_S": "6",
        "CLASSPULSE_AGGREGATOR_BROKER_REBALANCE_TIMEOUT_S": "6",
        "CLASSPULSE_AGGREGATOR_BROKER_HEARTBEAT_INTERVAL_S": "0.5",
        **WINDOWS,
    })
    yield env


def expected(events: list[ScoreEvent], end: LifecycleEvent, env: dict[str, str]) -> tuple[dict, dict]:  # type: ignore[type-arg]
    agg = SessionAggregator(session=end.session, config=settings_from(env).aggregation_config())
    for ev in events:
        agg.add_score(ev)
    agg.add_lifecycle(end)
    aggregates, alerts = agg.flush()
    return ({a.event_id: a.model_dump(exclude={"timing"}) for a in aggregates},
            {a.event_id: a.model_dump(exclude={"timing"}) for a in alerts})


async def publish(bootstrap: str, prefix: str, events: list[ScoreEvent], end: LifecycleEvent | None) -> None:
    bus = KafkaEventBus(bootstrap=bootstrap)
    await bus.start()
    codec = EventCodec(ScoreEvent)
    try:
        for ev in events:
            await bus.publish(f"{prefix}classpulse.scores", ev.session, codec.encode(ev))
        if end is not None:
            await bus.publish(f"{prefix}classpulse.lifecycle", end.session, EventCodec(LifecycleEvent).encode(end))
    finally:
        await bus.close()


async def committed(bootstrap: str, group: str, topic: str, *, partitions: int, timeout_s: float) -> int:
    """Sum of the group's committed offsets on ``topic``, once positive (0 after ``timeout_s``)."""
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await probe.start()
    try:
        parts = range(partitions)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            total = 0
            for p in parts:
                total += await probe.committed(TopicPartition(topic, p)) or 0
            if total > 0:
                return total
            await asyncio.sleep(0.3)
        return 0
    finally:
        await probe.stop()


def differences(got: dict[str, dict], want: dict[str, dict]) -> dict[str, object]:  # type: ignore[type-arg]
    """Per differing window: the fields that differ (got, want), or which side misses it."""
    out: dict[str, object] = {}
    for key in sorted(set(got) | set(want)):
        g, w = got.get(key), want.get(key)
        if g is None or w is None:
            out[key] = "missing" if g is None else "unexpected"
        elif g != w:
            out[key] = {f: (g[f], w[f]) for f in w if g.get(f) != w[f]}
    return out


class Outputs:
    """Collects the worker's aggregates and alerts (deduplicated by event id, repeats counted)."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self._consumer = AIOKafkaConsumer(
            f"{prefix}classpulse.aggregates", f"{prefix}classpulse.alerts", bootstrap_servers=bootstrap,
            auto_offset_reset="earliest", group_id=None,
        )
        self._prefix = prefix
        self.aggregates: dict[str, dict] = {}  # type: ignore[type-arg]
        self.alerts: dict[str, dict] = {}  # type: ignore[type-arg]
        self.keys: set[bytes] = set()
        self.received = 0
        self.repeats: list[str] = []
        """Ids emitted twice with different content (must stay empty)."""

    async def start(self) -> None:
        await self._consumer.start()

    async def close(self) -> None:
        await self._consumer.stop()

    async def until(self, done: object, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not done():  # type: ignore[operator]
            batches = await self._consumer.getmany(timeout_ms=500)
            for tp, messages in batches.items():
                for m in messages:
                    self.received += 1
                    self.keys.add(m.key or b"")
                    if tp.topic.endswith("aggregates"):
                        a = ClassAggregate.model_validate_json(m.value or b"")
                        assert a.timing.stage("aggregator") is not None
                        dumped = a.model_dump(exclude={"timing"})
                        if a.event_id in self.aggregates and self.aggregates[a.event_id] != dumped:
                            self.repeats.append(a.event_id)
                        self.aggregates[a.event_id] = dumped
                    else:
                        al = Alert.model_validate_json(m.value or b"")
                        self.alerts[al.event_id] = al.model_dump(exclude={"timing"})


async def test_scripted_scores_give_the_expected_aggregates_and_alerts(
    worker_env: dict[str, str], kafka_bootstrap: str, redis_url: str, unique: str, tmp_path: Path
) -> None:
    session = f"class-{unique}"
    prefix = worker_env["CLASSPULSE_AGGREGATOR_TOPIC_PREFIX"]
    events = script(session).events()
    end = lifecycle_event(session=session, participant="teacher", kind="session_ended", t=30.0, base=BASE,
                          role="teacher")
    want_aggs, want_alerts = expected(events, end, worker_env)
    assert {a["kind"] for a in want_alerts.values()} >= {"away", "attention_dip", "silence"}
    worker = Worker(worker_env, tmp_path / "worker.log")
    out = Outputs(kafka_bootstrap, prefix)
    await out.start()
    try:
        await publish(kafka_bootstrap, prefix, events, end)
        await out.until(lambda: len(out.aggregates) >= len(want_aggs) and len(out.alerts) >= len(want_alerts), 60)
    finally:
        await out.close()
        worker.stop()
    log = (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
    assert out.aggregates == want_aggs, log
    assert out.alerts == want_alerts, log
    assert out.keys == {session.encode()}
    client = aioredis.from_url(redis_url)
    try:
        state = await client.hgetall(state_key(session))
        summary = await client.hget(summary_key(session), "summary")
    finally:
        await client.aclose()
    assert b"aggregate:tumbling:1" in state and b"alert:b:away" in state
    assert summary is not None
    assert SessionSummary.model_validate_json(summary).participants["a"].talk_time_s == pytest.approx(2.0)


async def test_restarted_worker_restores_state_from_the_changelog(
    worker_env: dict[str, str], kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    session = f"restart-{unique}"
    prefix = worker_env["CLASSPULSE_AGGREGATOR_TOPIC_PREFIX"]
    events = script(session).events()
    end = lifecycle_event(session=session, participant="teacher", kind="session_ended", t=30.0, base=BASE,
                          role="teacher")
    want_aggs, want_alerts = expected(events, end, worker_env)
    half = len(events) // 2
    midway = events[half].timing.capture_ts - BASE
    out = Outputs(kafka_bootstrap, prefix)
    await out.start()
    first = Worker(worker_env, tmp_path / "worker-1.log")
    try:
        await publish(kafka_bootstrap, prefix, events[:half], None)
        # wait until the first worker has closed windows well into the session, then crash it
        await out.until(lambda: f"{session}/tumbling/1/{int(midway) - 4}" in out.aggregates, 60)
        assert f"{session}/tumbling/1/{int(midway) - 4}" in out.aggregates
        # a next batch makes faust ack the first one (take_events acks a batch when the next is
        # requested); then wait for the commit: the restart must resume mid-stream, from its state
        await publish(kafka_bootstrap, prefix, events[half:half + 40], None)
        resumed_mid_stream = await committed(kafka_bootstrap, worker_env["CLASSPULSE_AGGREGATOR_APP_ID"],
                                             f"{prefix}classpulse.scores", partitions=2, timeout_s=20) > 0
    finally:
        first.kill()
    before = dict(out.aggregates)
    # Let the killed member's group session expire first (joining while it is still a member
    # is test_aggregator_rebalance's subject).
    await asyncio.sleep(float(worker_env["CLASSPULSE_AGGREGATOR_BROKER_SESSION_TIMEOUT_S"]) + 1.0)
    # a fresh local store: everything the new worker knows comes from the changelog
    env = {**worker_env, "CLASSPULSE_AGGREGATOR_DATA_DIR": str(tmp_path / "state-2")}
    second = Worker(env, tmp_path / "worker-2.log")
    try:
        await publish(kafka_bootstrap, prefix, events[half + 40:], end)
        await out.until(lambda: len(out.aggregates) >= len(want_aggs) and len(out.alerts) >= len(want_alerts), 90)
    finally:
        await out.close()
        second.stop()
    log = (tmp_path / "worker-2.log").read_text(errors="replace")[-3000:]
    assert before, "the first worker emitted nothing before the crash"
    # Nothing lost, nothing counted twice: the same figures as one uninterrupted run.
    assert out.aggregates == want_aggs, f"{differences(out.aggregates, want_aggs)} repeats={out.repeats}\n{log}"
    assert out.alerts == want_alerts, log
    assert not out.repeats, "a window was emitted twice with different figures"
    # faust's committed offsets may run ahead of the state (records it skipped and acked);
    # the worker then reads again from the state's own offsets ("input gap -> rewound").
    if resumed_mid_stream:
        # offsets were committed mid-session: the new worker can only be right by restoring the state
        assert "snapshot -> restored" in log
