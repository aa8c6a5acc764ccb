"""Interaction events on real Kafka: the topic round trip, and gateway -> Kafka -> history -> /live rows.

The gateway runs as its own process (``CLASSPULSE_TRANSPORT=distributed``): a platform posts a
batch over REST, the gateway publishes it to ``classpulse.interactions`` on Kafka, its history
reader consumes it back and the counts show in the live rows (Redis live state) and on the
WebSocket feed. Sessions are unique per run (the brokers are shared).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from shared.contracts.codec import EventCodec
from shared.contracts.interactions import InteractionEvent
from shared.contracts.timing import wall_clock
from shared.contracts.topics import INTERACTIONS, SCORES
from shared.metrics import Metrics
from shared.settings import CommonSettings
from shared.tokens import issue_token
from shared.transport.factory import build_transports
from shared.transport.live import LivePublisher
from shared.transport.typed import EventPublisher

from .classpulse_up import REPO, SECRET, classpulse, free_port
from .test_gateway_distributed import _score

pytestmark = pytest.mark.integration


def _common(redis_url: str, kafka_bootstrap: str) -> CommonSettings:
    return CommonSettings(
        transport="distributed", redis_url=redis_url, kafka_bootstrap=kafka_bootstrap, token_secret=SECRET
    )  # type: ignore[arg-type]


async def test_interaction_events_round_trip_through_kafka_keyed_by_session(
    redis_url: str, kafka_bootstrap: str, unique: str
) -> None:
    session = f"chat-{unique}"
    transports = build_transports(_common(redis_url, kafka_bootstrap), metrics=Metrics(CollectorRegistry()))
    await transports.start()
    try:
        sent = [
            InteractionEvent(event_id=f"{session}/{i}", session=session, participant=f"p{i % 2}", kind="chat",
                             ts=wall_clock(), text="what page are we on" if i == 0 else None).derived(keep_text=False)
            for i in range(5)
        ]
        publisher = EventPublisher(bus=transports.events, topic=INTERACTIONS)
        for event in sent:
            await publisher.publish(event)
        consumer = transports.events.consumer([INTERACTIONS.name], group=f"test-chat-{unique}")
        await consumer.start()
        got, keys, partitions = [], set(), set()
        codec = EventCodec(InteractionEvent)
        deadline = time.monotonic() + 30
        try:
            while len(got) < len(sent) and time.monotonic() < deadline:
                for record in await consumer.poll(max_records=1000, timeout_ms=500):
                    event = codec.decode(record.value)
                    if event.session == session:
                        got.append(event)
                        keys.add(record.key)
                        partitions.add(record.partition)
        finally:
            await consumer.close()
        assert got == sent  # in order: one session, one key, one partition
        assert keys == {session} and len(partitions) == 1
        assert got[0].is_question is True and got[0].words == 5 and got[0].text is None
    finally:
        await transports.close()


async def _wait_http(http: aiohttp.ClientSession, base: str, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            async with http.get(f"{base}/healthz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        assert time.monotonic() < deadline and proc.returncode is None, "gateway did not start"
        await asyncio.sleep(0.2)


async def test_gateway_posts_to_kafka_and_live_rows_count_what_its_history_read(
    redis_url: str, kafka_bootstrap: str, unique: str
) -> None:
    session = f"chat-gw-{unique}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLASSPULSE_")}
    env.update(
        CLASSPULSE_TRANSPORT="distributed",
        CLASSPULSE_REDIS_URL=redis_url,
        CLASSPULSE_KAFKA_BOOTSTRAP=kafka_bootstrap,
        CLASSPULSE_TOKEN_SECRET=SECRET,
        CLASSPULSE_LOG_LEVEL="WARNING",
    )
    proc = await asyncio.create_subprocess_exec(
        *classpulse("gateway", "--host", "127.0.0.1", "--port", str(port)), cwd=REPO, env=env, stderr=subprocess.PIPE
    )
    transports = build_transports(_common(redis_url, kafka_bootstrap), metrics=Metrics(CollectorRegistry()))
    await transports.start()
    base = f"http://127.0.0.1:{port}"
    viewer = issue_token(secret=SECRET, session=session, participant="*", role="viewer")
    platform = issue_token(secret=SECRET, session=session, participant="*", role="platform")
    student = issue_token(secret=SECRET, session=session, participant="alice", role="student")
    url = f"{base}/api/sessions/{session}/interactions"
    now = wall_clock()
    batch = [
        {"event_id": f"{session}/q1", "participant": "alice", "kind": "chat", "ts": now, "text": "is this on the test"},
        {"event_id": f"{session}/c1", "participant": "alice", "kind": "chat", "ts": now, "text": "ok thanks"},
        {"event_id": f"{session}/r1", "participant": "bob", "kind": "reaction", "ts": now, "choice": "thumbs_up"},
    ]
    try:
        async with aiohttp.ClientSession() as http:
            await _wait_http(http, base, proc)
            score = _score(session, 1, wall_clock() - 1.0)
            await EventPublisher(bus=transports.events, topic=SCORES).publish(score)
            await LivePublisher(bus=transports.live).publish(score)
            async with http.ws_connect(f"{base}/api/sessions/{session}/ws", params={"token": viewer}) as ws:
                assert (await ws.receive_json(timeout=10))["kind"] == "snapshot"
                bad = [*batch, {"event_id": "x", "participant": "carol", "kind": "chat", "ts": now}]
                async with http.post(url, json=bad, headers={"Authorization": f"Bearer {student}"}) as r:
                    assert r.status == 403  # a student posting for others: nothing published
                    assert (await r.json())["items"][0].startswith("item 2:")
                async with http.post(url, json=batch, headers={"Authorization": f"Bearer {platform}"}) as r:
                    assert r.status == 202, await r.text()
                    assert (await r.json())["accepted"] == 3
                async with http.post(url, json=batch[:1], headers={"Authorization": f"Bearer {platform}"}) as r:
                    assert r.status == 202  # a retry: counted once downstream
                counts = None
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:  # the history reader joins its group, then reads
                    msg = await ws.receive_json(timeout=30)
                    if msg["kind"] == "interaction" and msg["event"]["participant"] == "alice":
                        counts = msg["counts"]
                        assert msg["event"]["text"] is None
                        if counts["chat_messages"] == 2:
                            break
                assert counts == {"questions": 1, "chat_messages": 2, "words_spoken": 0, "on_topic_ratio": None}
            live_url = f"{base}/api/sessions/{session}/live"
            async with http.get(live_url, headers={"Authorization": f"Bearer {viewer}"}) as r:
                rows = (await r.json())["participants"]
            assert [(p["participant"], p["questions"], p["chat_messages"]) for p in rows] == [("alice", 1, 2)]
    finally:
        await transports.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
