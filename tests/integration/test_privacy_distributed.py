"""Privacy controls end to end on real Redis + Kafka: opt-out (no frame reaches inference, no score),
aggregate-only (no per-student row on the live bus, WebSocket or REST, nor out of the aggregator),
retention (TTLs on Redis keys, ``retention.ms`` read back from Kafka) and erasure of a session.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry

from services.aggregator.plain import PlainAggregator
from services.aggregator.scripted import Behaviour, Script, between, lifecycle_event
from services.aggregator.settings import AggregatorSettings
from services.aggregator.topic_retention import read_retention
from services.aggregator.topics_setup import ensure_topics
from services.gateway.app import create_gateway_app
from services.gateway.context import GATEWAY
from services.gateway.settings import GatewaySettings
from services.inference.engine import InferenceEngine
from services.inference.settings import InferenceSettings
from services.inference.worker import InferenceWorker
from services.ingest.publisher import publish_now
from shared.contracts.codec import EventCodec, encode_media
from shared.contracts.events import ClassAggregate, ParticipantWindow, ScoreEvent, WindowRef
from shared.contracts.media import MediaMessage
from shared.contracts.privacy import ErasureReport, PrivacyEvent
from shared.contracts.timing import TimingTrail, wall_clock
from shared.contracts.topics import (
    AGGREGATES,
    ALERTS,
    EVENT_TOPICS,
    INFERENCE_COORDINATION,
    INFERENCE_GROUP,
    INTERACTIONS,
    LIFECYCLE,
    PRIVACY,
    PUBLISH_EPOCHS,
    SCORES,
    EventTopic,
    privacy_key,
    state_key,
    summary_key,
)
from shared.contracts.webhooks import WEBHOOK_KEYS
from shared.metrics import Metrics
from shared.privacy.media import PrivateMediaBus
from shared.privacy.redis_store import RedisPrivacyStore
from shared.privacy.view import PrivacyView
from shared.settings import CommonSettings
from shared.testkit.messages import frames
from shared.tokens import TokenRole, issue_token
from shared.transport.factory import Transports, build_transports
from shared.transport.kafka import KafkaEventBus
from shared.transport.live import LivePublisher
from shared.transport.redis_leases import RedisLeaseStore
from shared.transport.redis_streams import RedisLiveBus, RedisMediaBus
from shared.transport.typed import EventPublisher, EventSubscriber
from tests.perception_fakes import NoFaces

from .test_aggregator_faust import BASE, WINDOWS, Outputs, Worker
from .test_aggregator_faust import publish as faust_publish
from .test_aggregator_faust import script as faust_script

pytestmark = pytest.mark.integration

SECRET = "privacy-integration-secret"
RETENTION_S = 3600


def bearer(session: str, role: TokenRole, participant: str = "t1") -> dict[str, str]:
    pid = "*" if role in ("viewer", "platform") else participant
    return {"Authorization": f"Bearer {issue_token(secret=SECRET, session=session, participant=pid, role=role)}"}




def _process_transports(redis_url: str, kafka: str, stream: str, name: str) -> tuple[Transports, Metrics]:
    """One process's transports (its own Redis/Kafka clients and privacy view), media under ``stream``."""
    metrics = Metrics(CollectorRegistry())
    store = RedisPrivacyStore(url=redis_url, shards=1, retention_s=RETENTION_S, media_prefix=stream)
    view = PrivacyView(store, refresh_s=0.1, metrics=metrics)
    media = RedisMediaBus(url=redis_url, stream=stream, maxlen=1000, metrics=metrics)
    return Transports(
        media=PrivateMediaBus(media, view=view, metrics=metrics),
        events=KafkaEventBus(bootstrap=kafka, client_id=f"test-{name}"),
        live=RedisLiveBus(url=redis_url, state_ttl_s=RETENTION_S),
        leases=RedisLeaseStore(url=redis_url, prefix=f"{stream}:coordination"),
        privacy=store,
        privacy_view=view,
    ), metrics


def _common(redis_url: str, kafka: str, **extra: Any) -> CommonSettings:
    values: dict[str, Any] = {"retention_s": RETENTION_S, **extra}
    return CommonSettings(transport="distributed", redis_url=redis_url, kafka_bootstrap=kafka,  # type: ignore[arg-type]
                          token_secret=SECRET, **values)


@asynccontextmanager
async def _gateway(transports: Transports, common: CommonSettings, metrics: Metrics, unique: str
                   ) -> AsyncIterator[TestClient]:
    app = create_gateway_app(settings=GatewaySettings(history_group=f"gw-{unique}"), common=common,
                             transports=transports, metrics=metrics)
    async with TestClient(TestServer(app)) as client:
        yield client


async def _until(check: Callable[[], Any], within: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {within} s")
        await asyncio.sleep(0.1)


async def _create_topics(bootstrap: str, names: Sequence[str], configs: dict[str, str] | None = None) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(n, 1, 1, topic_configs=configs) for n in names if n not in existing]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()


async def _read_all(bus: KafkaEventBus, topic: EventTopic[Any], group: str, *, want: Callable[[list[Any]], bool],
                    within: float = 30.0) -> list[Any]:
    sub = EventSubscriber(bus=bus, topic=topic, group=group)
    await sub.start()
    got: list[Any] = []
    try:
        deadline = time.monotonic() + within
        while not want(got) and time.monotonic() < deadline:
            got += await sub.poll(timeout_ms=500)
    finally:
        await sub.close()
    return got


def _frames(session: str, participant: str, n: int, start: int = 0) -> list[MediaMessage]:
    image = np.zeros((48, 64, 3), np.uint8)
    return list(frames([image] * n, session=session, participant=participant, start_seq=start))


async def test_opt_out_drops_media_before_inference_and_no_score_is_made(
    redis_url: str, kafka_bootstrap: str, unique: str
) -> None:
    session, stream = f"opt-{unique}", f"test:media:{unique}"
    scores = EventTopic(f"test.scores.{unique}", ScoreEvent)
    await _create_topics(kafka_bootstrap, [scores.name, PRIVACY.name])
    gw_t, gw_m = _process_transports(redis_url, kafka_bootstrap, stream, "gateway")
    ingest_t, ingest_m = _process_transports(redis_url, kafka_bootstrap, stream, "ingest")
    inf_t, inf_m = _process_transports(redis_url, kafka_bootstrap, stream, "inference")
    for t in (ingest_t, inf_t):
        await t.start()
    raw = ingest_t.media.inner  # type: ignore[attr-defined]
    assert isinstance(raw, RedisMediaBus)
    await raw.ensure_group(INFERENCE_GROUP)
    settings = InferenceSettings(batch_max=4, batch_wait_ms=10, read_count=8, read_block_ms=20, max_lag_ms=0)
    engine = InferenceEngine(settings=settings, metrics=inf_m, backend=NoFaces())
    engine.load()
    analysed: list[str] = []
    process = engine.process

    def recording(messages: list[MediaMessage], **kw: Any) -> list[ScoreEvent]:
        analysed.extend(m.participant for m in messages)
        return process(messages, **kw)

    engine.process = recording  # type: ignore[method-assign]
    worker = InferenceWorker(engine=engine, transports=inf_t, settings=settings, metrics=inf_m, consumer="w1",
                             scores_topic=scores)
    common = _common(redis_url, kafka_bootstrap)
    redis = aioredis.Redis.from_url(redis_url)
    try:
        async with _gateway(gw_t, common, gw_m, unique) as gw:
            in_flight = _frames(session, "bob", 3)  # appended before the opt-out, read after it
            for msg in in_flight:
                await raw.append(encode_media(msg), key=f"{session}/bob")
            r = await gw.put(f"/api/sessions/{session}/participants/bob/opt-out", headers=bearer(session, "student",
                                                                                                  "bob"))
            assert r.status == 200, await r.text()
            erased = {i["what"]: i["count"] for i in (await r.json())["erased"]}
            assert erased["media waiting for analysis"] == 3  # the opt-out erased bob's waiting media at once
            for msg in _frames(session, "bob", 3, start=10):  # again in flight (e.g. appended by a slow ingest)
                await raw.append(encode_media(msg), key=f"{session}/bob")
            for msg in [*_frames(session, "alice", 5), *_frames(session, "bob", 5, start=20)]:
                await publish_now(ingest_t.media, msg, ingest_m)  # ingest: bob's never enter the stream
            assert ingest_t.media.dropped == 5  # type: ignore[attr-defined]
            task = asyncio.create_task(worker.run())
            got = await _read_all(inf_t.events, scores, f"check-{unique}",  # type: ignore[arg-type]
                                  want=lambda g: len({e.event_id for e in g}) >= 5)
            await _until(lambda: _empty(raw), what="media stream drained")
            worker.stop()
            await asyncio.wait_for(task, 10)
            assert {e.participant for e in got} == {"alice"} and len({e.event_id for e in got}) == 5
            assert set(analysed) == {"alice"}  # no frame of bob reached the engine
            assert inf_t.media.dropped == 3  # type: ignore[attr-defined]
            dropped = inf_m.registry.get_sample_value("classpulse_media_dropped_total", {"reason": "opted_out"})
            assert dropped == 3
            live = await (await gw.get(f"/api/sessions/{session}/live", headers=bearer(session, "viewer"))).json()
            assert [p["participant"] for p in live["participants"]] == ["alice"] and live["opted_out"] == ["bob"]
            assert not [f async for f in _hkeys(redis, state_key(session)) if "bob" in f]
            ttl = await redis.ttl(privacy_key(session))
            assert 0 < ttl <= RETENTION_S  # the policy expires with the retention
            events = await _read_all(gw_t.events, PRIVACY, f"privacy-{unique}",  # type: ignore[arg-type]
                                     want=lambda g: any(e.session == session for e in g))
            mine = [e for e in events if e.session == session]
            assert [(e.kind, e.participant, e.by) for e in mine] == [("opted_out", "bob", "student")]
    finally:
        await redis.delete(f"{stream}:0", privacy_key(session), state_key(session))
        await redis.aclose()
        for t in (ingest_t, inf_t):
            await t.close()


async def _empty(bus: RedisMediaBus) -> bool:
    return await bus.length() == 0


async def _hkeys(redis: aioredis.Redis, key: str) -> AsyncIterator[str]:
    for field in await redis.hkeys(key):
        yield field.decode()


def _aggregate(session: str, start: float) -> ClassAggregate:
    window = ParticipantWindow(present_ratio=1, attentive_ratio=1, engagement_mean=0.7, talk_time_s=0.6, turns=1)
    return ClassAggregate(
        event_id=f"{session}/tumbling/1/{start}", session=session, window=WindowRef(size_s=1, start=start,
                                                                                    end=start + 1),
        participants_total=1, participants_present=1, attentive_ratio=1, engagement_mean=0.7, engagement_p10=0.7,
        engagement_p90=0.7, teacher_talk_share=0, talk_equity_gini=0, hand_equity_gini=0, hand_queue=["alice"],
        participants={"alice": window}, timing=TimingTrail(capture_ts=wall_clock()))


async def test_aggregate_only_keeps_per_student_rows_off_the_live_bus_ws_rest_and_aggregator_output(
    redis_url: str, kafka_bootstrap: str, unique: str
) -> None:
    session, prefix = f"agg-{unique}", f"t{unique}."
    common = _common(redis_url, kafka_bootstrap, media_shards=2)
    metrics = Metrics(CollectorRegistry())
    transports = build_transports(common, metrics=metrics, client_id="test-gateway")
    producer = build_transports(common, metrics=Metrics(CollectorRegistry()), client_id="test-producer")
    await producer.start()
    agg_settings = AggregatorSettings(topic_prefix=prefix, app_id=f"agg-{unique}", partitions=1, clock="event",
                                      end_grace_s=0.5, tick_s=0.2)
    await ensure_topics(bootstrap=kafka_bootstrap, settings=agg_settings, retention_s=RETENTION_S)
    await _create_topics(kafka_bootstrap, [t.name for t in EVENT_TOPICS])
    aggregator = PlainAggregator(settings=agg_settings, events=producer.events, metrics=Metrics(CollectorRegistry()),
                                 live=None)
    agg_task = asyncio.create_task(aggregator.run())
    redis = aioredis.Redis.from_url(redis_url)
    try:
        async with _gateway(transports, common, metrics, unique) as gw:
            r = await gw.put(f"/api/sessions/{session}/privacy", headers=bearer(session, "teacher"),
                             json={"aggregate_only": True})
            assert r.status == 200, await r.text()
            ws = await gw.ws_connect(f"/api/sessions/{session}/ws",
                                     params={"token": bearer(session, "viewer")["Authorization"][7:]})
            snap = (await ws.receive_json(timeout=5))["state"]
            assert snap["aggregate_only"] and snap["participants"] == []
            # the inference worker's live publisher (privacy-aware): no score row reaches Redis
            s = Script(session=session, base=wall_clock() - 30)
            s.add("alice", between(0, 6, Behaviour(hand_raised=True)), end=6)
            s.add("bob", between(0, 6, Behaviour(speaking=True)), end=6)
            events = s.events()
            inference_live = LivePublisher(bus=producer.live, privacy=producer.policies)
            await _until(lambda: producer.policies.get(session), what="policy read")
            await asyncio.sleep(common.privacy_refresh_s)  # another process's cache: refreshed within this long
            for e in events[:10]:
                await inference_live.publish(e)
            assert not [f async for f in _hkeys(redis, state_key(session)) if f.startswith("score:")]
            # a producer that ignores the policy: the gateway still shows class figures only
            unaware = LivePublisher(bus=producer.live)
            await unaware.publish(events[0])
            await unaware.publish(_aggregate(session, 0.0))
            got = await ws.receive_json(timeout=5)
            await ws.close()
            assert got["kind"] == "aggregate"
            assert got["event"]["participants"] == {} and got["event"]["hand_queue"] == []
            live = await (await gw.get(f"/api/sessions/{session}/live", headers=bearer(session, "viewer"))).json()
            assert live["participants"] == [] and live["aggregate"]["participants"] == {}
            scores = EventPublisher(bus=producer.events, topic=SCORES)
            for e in events[:5]:
                await scores.publish(e)
            await _until(lambda: (rec := gw.app[GATEWAY].history.get(session)) is not None and rec.scores >= 5,
                         what="history read the scores")
            timeline = await gw.get(f"/api/sessions/{session}/timeline", headers=bearer(session, "viewer"))
            assert timeline.status == 403
            report = await (await gw.get(f"/api/sessions/{session}/report", headers=bearer(session, "teacher"))).json()
            assert report["participants"] == [] and report["timeline"] == [] and report["privacy"]["aggregate_only"]
        # the aggregator: the mode arrives on (prefixed) classpulse.privacy, its outputs carry class figures only
        mode = PrivacyEvent(event_id=f"{session}/mode", session=session, kind="aggregate_only", aggregate_only=True,
                            by="teacher", ts=events[0].timing.capture_ts - 1)
        await producer.events.publish(agg_settings.topic(PRIVACY.name), session, EventCodec(PrivacyEvent).encode(mode))
        await asyncio.sleep(0.5)
        agg_scores = EventPublisher(bus=producer.events, topic=EventTopic(agg_settings.topic(SCORES.name), ScoreEvent))
        for e in events:
            await agg_scores.publish(e)
        out_topic = EventTopic(agg_settings.topic(AGGREGATES.name), ClassAggregate)
        outs = await _read_all(producer.events, out_topic, f"out-{unique}",  # type: ignore[arg-type]
                               want=lambda g: len([a for a in g if a.session == session]) >= 3)
        mine = [a for a in outs if a.session == session]
        assert len(mine) >= 3 and all(a.participants == {} and a.hand_queue == [] for a in mine)
        assert any(a.participants_total == 2 for a in mine)
    finally:
        agg_task.cancel()
        await asyncio.gather(agg_task, return_exceptions=True)
        await redis.delete(privacy_key(session), state_key(session))
        await redis.aclose()
        await producer.close()


async def test_retention_sets_ttls_on_redis_keys_and_retention_ms_on_topics(
    redis_url: str, kafka_bootstrap: str, unique: str
) -> None:
    settings = AggregatorSettings(topic_prefix=f"r{unique}.", app_id=f"ret-{unique}", partitions=1)
    wanted = [settings.topic(t.name) for t in (SCORES, LIFECYCLE, AGGREGATES, ALERTS, INTERACTIONS, PRIVACY)]
    old = settings.topic(SCORES.name)
    await _create_topics(kafka_bootstrap, [old], configs={"retention.ms": "86400000"})  # made under another setting
    await ensure_topics(bootstrap=kafka_bootstrap, settings=settings, retention_s=7200)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        found: dict[str, int | None] = {}
        for _ in range(50):  # an altered config reaches the describe answer a moment later
            found = await read_retention(admin, wanted)
            if set(found.values()) == {7_200_000}:
                break
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
    assert found == dict.fromkeys(wanted, 7_200_000)  # created with it, and the existing one altered to it

    common = _common(redis_url, kafka_bootstrap, retention_s=120)
    transports = build_transports(common, metrics=Metrics(CollectorRegistry()))
    await transports.start()
    session = f"ret-{unique}"
    redis = aioredis.Redis.from_url(redis_url)
    try:
        await LivePublisher(bus=transports.live).publish(_aggregate(session, 0.0))
        await transports.publishes.begin(session, "alice")
        await transports.privacy.update(session, lambda p: p or _policy(session))
        for key in (state_key(session), f"{PUBLISH_EPOCHS}:{session}/alice", privacy_key(session)):
            ttl = await redis.ttl(key)
            assert 0 < ttl <= 120, (key, ttl)
    finally:
        await redis.delete(state_key(session), f"{PUBLISH_EPOCHS}:{session}/alice", privacy_key(session))
        await redis.aclose()
        await transports.close()


def _policy(session: str) -> Any:
    from shared.contracts.privacy import SessionPrivacy

    return SessionPrivacy(session=session)


async def test_delete_session_erases_every_store_and_reports_what_kafka_keeps(
    redis_url: str, kafka_bootstrap: str, unique: str
) -> None:
    session, other = f"del-{unique}", f"keep-{unique}"
    common = _common(redis_url, kafka_bootstrap, media_shards=2)
    metrics = Metrics(CollectorRegistry())
    transports = build_transports(common, metrics=metrics, client_id="test-gateway")
    producer = build_transports(common, metrics=Metrics(CollectorRegistry()), client_id="test-producer")
    await producer.start()
    await _create_topics(kafka_bootstrap, [t.name for t in EVENT_TOPICS])
    agg_settings = AggregatorSettings(app_id=f"erase-{unique}", partitions=1, clock="event", tick_s=0.2)
    aggregator = PlainAggregator(settings=agg_settings, events=producer.events, metrics=Metrics(CollectorRegistry()),
                                 live=None)
    agg_task = asyncio.create_task(aggregator.run())
    redis = aioredis.Redis.from_url(redis_url)
    pstate = f"{INFERENCE_COORDINATION}:pstate:{session}/alice"
    try:
        async with _gateway(transports, common, metrics, unique) as gw:
            s = Script(session=session, base=wall_clock() - 30)
            s.add("alice", between(0, 4, Behaviour()), end=4)
            events = s.events()
            scores, live = EventPublisher(bus=producer.events, topic=SCORES), LivePublisher(bus=producer.live)
            for e in events:
                await scores.publish(e)
            await live.publish(events[-1])
            await producer.live.set_state(summary_key(session), "summary", b"{}")
            await producer.publishes.begin(session, "alice")
            await producer.publishes.begin(session, "bob")
            await redis.set(pstate, b"snapshot", ex=600)
            await redis.set(f"{WEBHOOK_KEYS}:session:{session}:endpoints", b"{}", ex=600)
            await redis.set(f"{WEBHOOK_KEYS}:session:{other}:endpoints", b"{}", ex=600)
            media = producer.media
            for msg in [*_frames(session, "alice", 2), *_frames(other, "carol", 1)]:
                await media.append(encode_media(msg), key=f"{msg.session}/{msg.participant}")
            await _until(lambda: (r := gw.app[GATEWAY].history.get(session)) is not None and r.scores == len(events),
                         what="gateway history")
            await _until(lambda: session in aggregator.driver.sessions, what="aggregator state")
            assert (await gw.delete(f"/api/sessions/{session}", headers=bearer(session, "viewer"))).status == 403
            r = await gw.delete(f"/api/sessions/{session}", headers=bearer(session, "platform"))
            assert r.status == 200, await r.text()
            report = ErasureReport.model_validate(await r.json())
            counts = {i.what: i.count for i in report.erased if i.store == "redis"}
            assert counts == {"live state and session summary keys": 2, "publish epochs": 2,
                              "inference state snapshots": 1, "media waiting for analysis": 2,
                              "webhook endpoints, pending deliveries and markers": 1}
            assert {i.store for i in report.requested} == {"aggregator", "gateway"}
            kafka = next(i for i in report.not_erased if i.store == "kafka")
            assert kafka.until is not None and f"retention.ms={RETENTION_S * 1000}" in kafka.until
            for key in (state_key(session), summary_key(session), pstate, f"{PUBLISH_EPOCHS}:{session}/alice"):
                assert not await redis.exists(key), key
            assert await media.length() >= 1  # another session's media stays
            assert await redis.exists(f"{WEBHOOK_KEYS}:session:{other}:endpoints")  # and its webhooks
            assert (await gw.get(f"/api/sessions/{session}", headers=bearer(session, "viewer"))).status == 404
            await _until(lambda: session not in aggregator.driver.sessions, what="aggregator erased the session")
            policy = await (await gw.get(f"/api/sessions/{session}/privacy", headers=bearer(session, "teacher"))).json()
            assert policy["erased_at"] == report.erased_at
            await asyncio.sleep(1.0)  # the history reader read the erased event too: the session stays erased
            assert gw.app[GATEWAY].history.get(session) is None
    finally:
        agg_task.cancel()
        await asyncio.gather(agg_task, return_exceptions=True)
        await redis.delete(privacy_key(session), pstate, *[f"classpulse:media:{k}" for k in range(2)],
                           f"{WEBHOOK_KEYS}:session:{other}:endpoints")
        await redis.aclose()
        await producer.close()


def _faust_env(kafka_bootstrap: str, redis_url: str, unique: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLASSPULSE_")}
    env.update({
        "CLASSPULSE_KAFKA_BOOTSTRAP": kafka_bootstrap, "CLASSPULSE_REDIS_URL": redis_url,
        "CLASSPULSE_AGGREGATOR_APP_ID": f"agg-privacy-{unique}", "CLASSPULSE_AGGREGATOR_TOPIC_PREFIX": f"p{unique}.",
        "CLASSPULSE_AGGREGATOR_PARTITIONS": "2", "CLASSPULSE_AGGREGATOR_DATA_DIR": str(tmp_path / "state"),
        "CLASSPULSE_AGGREGATOR_CLOCK": "event", "CLASSPULSE_AGGREGATOR_METRICS_PORT": "0",
        "CLASSPULSE_AGGREGATOR_END_GRACE_S": "1", "CLASSPULSE_LOG_LEVEL": "INFO", **WINDOWS,
    })
    return env


async def test_faust_aggregator_applies_aggregate_only_and_erasure(
    kafka_bootstrap: str, redis_url: str, unique: str, tmp_path: Path
) -> None:
    session = f"faust-{unique}"
    env = _faust_env(kafka_bootstrap, redis_url, unique, tmp_path)
    prefix = env["CLASSPULSE_AGGREGATOR_TOPIC_PREFIX"]
    events = faust_script(session).events()
    end = lifecycle_event(session=session, participant="teacher", kind="session_ended", t=30.0, base=BASE,
                          role="teacher")
    codec = EventCodec(PrivacyEvent)
    bus = KafkaEventBus(bootstrap=kafka_bootstrap)
    await bus.start()
    worker = Worker(env, tmp_path / "worker.log")
    out = Outputs(kafka_bootstrap, prefix)
    await out.start()
    redis = aioredis.Redis.from_url(redis_url)
    try:
        mode = PrivacyEvent(event_id=f"{session}/mode", session=session, kind="aggregate_only", aggregate_only=True,
                            by="platform", ts=BASE - 1)
        await bus.publish(f"{prefix}{PRIVACY.name}", session, codec.encode(mode))
        await faust_publish(kafka_bootstrap, prefix, events, end)
        await out.until(lambda: len(out.aggregates) >= 30, 90)
        assert len(out.aggregates) >= 30, (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
        assert all(a["participants"] == {} and a["hand_queue"] == [] for a in out.aggregates.values())
        assert all(a["participant"] is None for a in out.alerts.values())
        await _until(lambda: redis.hget(summary_key(session), "summary"), what="session summary")
        summary = await redis.hget(summary_key(session), "summary")
        assert summary is not None and b'"participants":{}' in summary
        erased = PrivacyEvent(event_id=f"{session}/erased", session=session, kind="erased", by="teacher",
                              ts=BASE + 40)
        await bus.publish(f"{prefix}{PRIVACY.name}", session, codec.encode(erased))
        log = tmp_path / "worker.log"
        await _until(lambda: "open -> erased" in log.read_text(errors="replace"), what="faust worker erased it")
        await asyncio.sleep(1.0)
        assert worker.proc.poll() is None  # the table delete ran inside the worker without a crash
    finally:
        await out.close()
        worker.stop()
        await bus.close()
        await redis.delete(summary_key(session), state_key(session))
        await redis.aclose()


def test_replay_from_kafka_keeps_an_opt_out_from_the_privacy_topic(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    import json

    from services.cli import main

    session, topic = f"rk-{unique}", f"test.replay.scores.{unique}"
    s = Script(session=session, base=wall_clock() - 60)
    s.add("ana", between(0, 10, Behaviour(speaking=True)), end=10)
    s.add("ben", between(0, 10, Behaviour(hand_raised=True)), end=10)
    events = s.events()
    opt = PrivacyEvent(event_id=f"{session}/opt", session=session, kind="opted_out", participant="ben",
                       by="student", ts=events[0].timing.capture_ts - 1)

    async def publish() -> None:
        await _create_topics(kafka_bootstrap, [topic, PRIVACY.name])
        bus = KafkaEventBus(bootstrap=kafka_bootstrap)
        await bus.start()
        try:
            pub = EventPublisher(bus=bus, topic=EventTopic(topic, ScoreEvent))
            for e in events:
                await pub.publish(e)
            await bus.publish(PRIVACY.name, session, EventCodec(PrivacyEvent).encode(opt))
        finally:
            await bus.close()

    asyncio.run(publish())
    out = tmp_path / "report"
    argv = ["replay", "--from-kafka", "--session", session, "--bootstrap", kafka_bootstrap, "--topic", topic,
            "--out", str(out)]
    assert main(argv) == 0
    doc = json.loads((out / "report.json").read_text())
    assert [p["id"] for p in doc["participants"]] == ["ana"] and doc["privacy"]["opted_out"] == ["ben"]
    assert {r["participant"] for r in doc["timeline"]} == {"ana"} and "ben" not in doc["summary"]["participants"]


async def test_a_change_taken_by_one_gateway_reaches_the_viewers_of_another(
    redis_url: str, kafka_bootstrap: str, unique: str
) -> None:
    session = f"two-{unique}"
    common = _common(redis_url, kafka_bootstrap, privacy_refresh_s=30.0)  # B must learn it from the log, not Redis
    await _create_topics(kafka_bootstrap, [t.name for t in EVENT_TOPICS])
    a_m, b_m = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    a_t = build_transports(common, metrics=a_m, client_id="test-gw-a")
    b_t = build_transports(common, metrics=b_m, client_id="test-gw-b")
    producer = build_transports(common, metrics=Metrics(CollectorRegistry()), client_id="test-producer")
    await producer.start()
    redis = aioredis.Redis.from_url(redis_url)
    s = Script(session=session, base=wall_clock() - 30)
    s.add("ana", between(0, 4, Behaviour()), end=4)
    s.add("ben", between(0, 4, Behaviour()), end=4)
    events = s.events()
    live = LivePublisher(bus=producer.live)
    try:
        async with _gateway(a_t, common, a_m, f"a{unique}") as a, _gateway(b_t, common, b_m, f"b{unique}") as b:
            token = bearer(session, "teacher")["Authorization"][7:]
            ws = await b.ws_connect(f"/api/sessions/{session}/ws", params={"token": token})
            assert (await ws.receive_json(timeout=10))["state"]["opted_out"] == []  # B has now cached the default
            r = await a.put(f"/api/sessions/{session}/participants/ben/opt-out", headers=bearer(session, "teacher"))
            assert r.status == 200, await r.text()
            notice = await ws.receive_json(timeout=30)  # from B's history reader (classpulse.privacy)
            assert notice["kind"] == "privacy" and notice["event"]["participant"] == "ben"
            for pid in ("ben", "ana"):
                await live.publish(next(e for e in events if e.participant == pid))
            got = await ws.receive_json(timeout=10)
            await ws.close()
            assert got["kind"] == "score" and got["event"]["participant"] == "ana"  # ben's never reached B's viewer
    finally:
        await redis.delete(privacy_key(session), state_key(session))
        await redis.aclose()
        await producer.close()
