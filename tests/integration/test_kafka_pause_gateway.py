"""A 15 s Kafka pause (SIGSTOP/SIGCONT of a private broker) under the gateway's history reader.

Real Kafka, real gateway app (aiohttp, its history reader under the supervisor). A publisher
like ingest's sends ``left`` while the broker is frozen: the event is kept and delivered after
the pause (retried, never dropped), the history reader is still reading (or was restarted),
``left`` reaches the history and a dashboard viewer, and ``/healthz`` answers 200 again. Also:
``classpulse gateway`` exits 0 on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from services.gateway.app import create_gateway_app
from services.gateway.context import GATEWAY
from services.gateway.settings import GatewaySettings
from shared.contracts.codec import EventCodec
from shared.contracts.events import LifecycleEvent
from shared.contracts.live import decode_live
from shared.contracts.topics import AGGREGATES, ALERTS, INTERACTIONS, LIFECYCLE, SCORES
from shared.metrics import Metrics
from shared.settings import CommonSettings
from shared.supervise import HealthRegistry, SupervisionPolicy, Supervisor
from shared.transport.factory import Transports
from shared.transport.kafka import KafkaEventBus
from shared.transport.leases import MemoryLeaseStore
from shared.transport.memory import MemoryLiveBus, MemoryMediaBus
from tests.integration.private_brokers import REPO, free_port, private_kafka

pytestmark = pytest.mark.integration

PAUSE_S = 15.0
RECOVERY_BOUND_S = 30.0
POLICY = SupervisionPolicy(backoff_initial_s=0.2, backoff_max_s=2.0, settle_s=1.0, give_up_s=120)


async def _create_topics(bootstrap: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t.name for t in (SCORES, AGGREGATES, ALERTS, LIFECYCLE, INTERACTIONS)]
        await admin.create_topics([NewTopic(name=n, num_partitions=2, replication_factor=1) for n in names])
    finally:
        await admin.close()


async def _lifecycle(bootstrap: str) -> list[LifecycleEvent]:
    """Every lifecycle event in the topic, from the beginning."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # fetch metadata, so the topic's partitions are known
        numbers = sorted(consumer.partitions_for_topic(LIFECYCLE.name) or {0})
        parts = [TopicPartition(LIFECYCLE.name, p) for p in numbers]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts)
        out: list[LifecycleEvent] = []
        codec = EventCodec(LifecycleEvent)
        while [tp for tp in parts if await consumer.position(tp) < end[tp]]:
            for records in (await consumer.getmany(*parts, timeout_ms=1000)).values():
                out += [codec.decode(r.value) for r in records if r.value is not None]
        return out
    finally:
        await consumer.stop()


def _life(session: str, participant: str, kind: str, n: int) -> LifecycleEvent:
    return LifecycleEvent(
        event_id=f"{session}/{participant}/life/{n}", session=session, participant=participant,
        kind=kind, ts=time.time(),  # type: ignore[arg-type]
    )


async def _until(check: object, what: str, within: float) -> float:
    start = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - start < within, f"timed out after {within} s waiting for {what}"
        await asyncio.sleep(0.1)
    return time.monotonic() - start


async def test_left_reaches_the_gateway_across_a_15s_kafka_pause(tmp_path: Path) -> None:
    with private_kafka(tmp_path) as kafka:
        await _create_topics(kafka.address)
        metrics = Metrics(CollectorRegistry())
        health = HealthRegistry(service="gateway")
        events = KafkaEventBus(bootstrap=kafka.address, client_id="test-gateway", metrics=metrics, attempt_ms=3000)
        transports = Transports(
            media=MemoryMediaBus(maxlen=64), events=events, live=MemoryLiveBus(), leases=MemoryLeaseStore()
        )
        app = create_gateway_app(
            settings=GatewaySettings(history_group="test-gateway-history"), common=CommonSettings(),
            transports=transports, metrics=metrics, supervisor=Supervisor(health=health, policy=POLICY),
        )
        pub_metrics = Metrics(CollectorRegistry())
        ingest = KafkaEventBus(bootstrap=kafka.address, client_id="test-ingest", metrics=pub_metrics, attempt_ms=3000)
        await ingest.start()
        codec = EventCodec(LifecycleEvent)
        session = "pause-s"
        async with TestClient(TestServer(app)) as client:
            ctx = app[GATEWAY]
            for p in ("p1", "p2"):
                await ingest.publish(LIFECYCLE.name, session, codec.encode(_life(session, p, "joined", 0)))

            def status(p: str) -> str | None:
                record = ctx.history.get(session)
                part = record.participants.get(p) if record else None
                return part.status if part else None

            await _until(lambda: status("p1") == "active" and status("p2") == "active", "joined", 60)
            async with ctx.hub.watch(session) as viewer:
                kafka.pause()
                paused = time.monotonic()
                sending = asyncio.create_task(
                    ingest.publish(LIFECYCLE.name, session, codec.encode(_life(session, "p1", "left", 1)))
                )
                await asyncio.sleep(PAUSE_S)
                assert not sending.done(), "the publish returned while the broker was frozen"
                held = pub_metrics.registry.get_sample_value("classpulse_events_unacked", {})
                assert held == 1, "the unacknowledged event is not kept in the producer's buffer"
                kafka.resume()
                resumed = time.monotonic()
                await asyncio.wait_for(sending, RECOVERY_BOUND_S)
                delivered_s = time.monotonic() - resumed
                left_s = await _until(lambda: status("p1") == "left", "left in the history", RECOVERY_BOUND_S)
                seen: list[str] = []
                while True:
                    msg = decode_live(await asyncio.wait_for(viewer.get(), 5))
                    kind = getattr(getattr(msg, "event", None), "kind", None)
                    if kind is not None:
                        seen.append(str(kind))
                    if "left" in seen:
                        break
            healthy_s = await _until(lambda: health.healthy(), "the gateway healthy again", RECOVERY_BOUND_S)
            resp = await client.get("/healthz")
            body = await resp.json()
            assert resp.status == 200 and body["tasks"]["gateway-history"]["state"] == "running", body
            assert status("p2") == "active"
        await ingest.close()
        retries = pub_metrics.registry.get_sample_value(
            "classpulse_event_publish_retries_total", {"topic": LIFECYCLE.name}
        ) or 0  # aiokafka's own retries may cover a pause shorter than its delivery attempts
        assert pub_metrics.registry.get_sample_value("classpulse_events_unacked", {}) == 0
        lefts = [e for e in await _lifecycle(kafka.address) if e.kind == "left"]
        assert len({e.event_id for e in lefts}) == 1 and all(e == lefts[0] for e in lefts)
        print(
            f"\nkafka pause {PAUSE_S:.0f} s (paused {resumed - paused:.1f} s): 'left' acknowledged "
            f"{delivered_s:.1f} s after SIGCONT, in the history after {left_s:.1f} s, gateway healthy "
            f"{healthy_s:.1f} s later; publish retries {retries:.0f}; history restarts "
            f"{health.tasks()['gateway-history'].restarts}"
        )


def test_the_gateway_exits_0_on_sigterm(redis_url: str, kafka_bootstrap: str) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLASSPULSE_") or k.startswith("CLASSPULSE_TEST_")}
    env.update(
        CLASSPULSE_TRANSPORT="distributed", CLASSPULSE_REDIS_URL=redis_url, CLASSPULSE_KAFKA_BOOTSTRAP=kafka_bootstrap,
        PYTHONPATH=str(REPO),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "gateway", "--port", str(port)], cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        body: dict[str, object] = {}

        async def healthy() -> None:
            nonlocal body
            async with aiohttp.ClientSession() as http:
                for _ in range(300):
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                            body = await resp.json()
                            if resp.status == 200:
                                return
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.1)
            raise AssertionError(f"gateway never ready: {body}")

        asyncio.run(healthy())
        assert body["status"] == "ok" and "gateway-history" in body["tasks"]  # type: ignore[operator]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out.decode()[-2000:]
