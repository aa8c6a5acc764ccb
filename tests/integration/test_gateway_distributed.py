"""``classpulse gateway`` distributed by settings alone: real Kafka (history) and Redis (live).

Scores are published the way the inference worker publishes them (Kafka topic + Redis
live bus); the gateway process serves them on the live API, the WebSocket feed and the
timeline, with token scopes enforced.
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

from shared.contracts.events import ScoreEvent
from shared.contracts.timing import TimingTrail, wall_clock
from shared.contracts.topics import SCORES
from shared.metrics import Metrics
from shared.settings import CommonSettings
from shared.tokens import issue_token
from shared.transport.factory import build_transports
from shared.transport.live import LivePublisher
from shared.transport.typed import EventPublisher

from .classpulse_up import REPO, SECRET, classpulse, free_port

pytestmark = pytest.mark.integration


def _score(session: str, seq: int, t0: float) -> ScoreEvent:
    capture = t0 + seq * 0.2
    trail = TimingTrail(capture_ts=capture).stamped("inference", received=capture + 0.01, emitted=capture + 0.02)
    return ScoreEvent(
        event_id=ScoreEvent.make_id(session, "alice", seq),
        session=session,
        participant="alice",
        seq=seq,
        media_time=seq * 0.2,
        present=True,
        attentive=seq % 2 == 0,
        speaking=False,
        hand_raised=seq >= 5,
        engagement=0.7,
        confidence=0.9,
        timing=trail,
    )


async def _get_json(http: aiohttp.ClientSession, url: str, token: str, *, until_s: float = 30.0) -> object:
    deadline = time.monotonic() + until_s
    while True:
        async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
            if r.status == 200:
                return await r.json()
            assert r.status == 404, (url, r.status, await r.text())
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} never had data")
        await asyncio.sleep(0.2)


async def test_gateway_serves_kafka_history_and_redis_live(redis_url: str, kafka_bootstrap: str, unique: str) -> None:
    session = f"dist-{unique}"
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
        *classpulse("gateway", "--host", "127.0.0.1", "--port", str(port)),
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
    )
    common = CommonSettings(
        transport="distributed", redis_url=redis_url, kafka_bootstrap=kafka_bootstrap, token_secret=SECRET
    )  # type: ignore[arg-type]
    transports = build_transports(common, metrics=Metrics(CollectorRegistry()), client_id="test-producer")
    await transports.start()
    base = f"http://127.0.0.1:{port}"
    viewer = issue_token(secret=SECRET, session=session, participant="*", role="viewer")
    student = issue_token(secret=SECRET, session=session, participant="alice", role="student")
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with http.get(f"{base}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline and proc.returncode is None, "gateway did not start"
                await asyncio.sleep(0.2)

            async with http.ws_connect(f"{base}/api/sessions/{session}/ws", params={"token": viewer}) as ws:
                assert (await ws.receive_json(timeout=10))["kind"] == "snapshot"
                scores = EventPublisher(bus=transports.events, topic=SCORES)
                live = LivePublisher(bus=transports.live)
                t0 = wall_clock() - 5.0
                for seq in range(10):
                    event = _score(session, seq, t0)
                    await scores.publish(event)
                    await live.publish(event)
                got = [await ws.receive_json(timeout=10) for _ in range(10)]
            assert [m["event"]["seq"] for m in got] == list(range(10))
            assert got[0]["event"]["timing"]["stages"][-1]["stage"] == "gateway"

            state = await _get_json(http, f"{base}/api/sessions/{session}/live", viewer)
            assert [(p["participant"], p["seq"], p["hand_raised"]) for p in state["participants"]] == [  # type: ignore[index]
                ("alice", 9, True)
            ]
            deadline = time.monotonic() + 30
            while True:  # the history reader joins its Kafka group and reads from the beginning
                timeline = await _get_json(http, f"{base}/api/sessions/{session}/timeline", viewer)
                rows = timeline["rows"]  # type: ignore[index]
                if len(rows) == 2 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.3)
            assert [(r["t"], r["hand_raised"]) for r in rows] == [(0.0, False), (1.0, True)]

            async with http.get(
                f"{base}/api/sessions/{session}/live", headers={"Authorization": f"Bearer {student}"}
            ) as r:
                assert r.status == 403
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
            assert 'classpulse_since_capture_seconds_count{stage="gateway"}' in text
    finally:
        await transports.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
