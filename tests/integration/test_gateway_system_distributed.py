"""The whole system distributed by settings alone: four processes on real Redis + Kafka.

``classpulse ingest``, ``inference``, ``aggregator`` (plain engine) and ``gateway`` run as
separate processes with ``CLASSPULSE_TRANSPORT=distributed`` (the docker-compose shape); one
simulated student publishes over WHIP to ingest; the gateway's live API and WebSocket then
show that student's signals (timing trail ingest -> inference -> gateway) and the class
aggregate computed by the aggregator.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from shared.contracts.topics import media_stream
from shared.settings import CommonSettings
from shared.tokens import issue_token

from .classpulse_up import REPO, SECRET, classpulse, free_port

pytestmark = pytest.mark.integration

ISOLATED_DB = 13  # the media stream names are fixed, so this test keeps it in its own Redis database


async def _healthy(http: aiohttp.ClientSession, url: str, procs: list[asyncio.subprocess.Process]) -> None:
    deadline = time.monotonic() + 90
    while True:
        for proc in procs:
            assert proc.returncode is None, f"a service exited with {proc.returncode}"
        try:
            async with http.get(url) as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        assert time.monotonic() < deadline, f"{url} never became healthy"
        await asyncio.sleep(0.5)


async def test_four_services_serve_a_student_end_to_end(
    redis_url: str, kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    base_url = redis_url.rsplit("/", 1)[0] if redis_url.count("/") > 2 else redis_url
    isolated = f"{base_url}/{ISOLATED_DB}"
    r = aioredis.Redis.from_url(isolated)
    await r.delete(*(media_stream(k) for k in range(CommonSettings.model_fields["media_shards"].default)))
    await r.aclose()
    session = f"system-{unique}"
    ingest_port, gateway_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLASSPULSE_")}
    env.update(
        CLASSPULSE_TRANSPORT="distributed",
        CLASSPULSE_REDIS_URL=isolated,
        CLASSPULSE_KAFKA_BOOTSTRAP=kafka_bootstrap,
        CLASSPULSE_TOKEN_SECRET=SECRET,
        CLASSPULSE_LOG_LEVEL="WARNING",
    )
    aggregator_env = {
        **env,
        "CLASSPULSE_AGGREGATOR_APP_ID": f"system-test-{unique}",
        "CLASSPULSE_AGGREGATOR_ENGINE": "plain",
        "CLASSPULSE_AGGREGATOR_METRICS_PORT": "0",
    }
    commands = {
        "ingest": ("ingest", "--host", "127.0.0.1", "--port", str(ingest_port)),
        "inference": ("inference",),
        "aggregator": ("aggregator",),
        "gateway": ("gateway", "--host", "127.0.0.1", "--port", str(gateway_port)),
    }
    procs: dict[str, asyncio.subprocess.Process] = {}
    logs = {name: (tmp_path / f"{name}.log").open("wb") for name in commands}
    for name, argv in commands.items():
        procs[name] = await asyncio.create_subprocess_exec(
            *classpulse(*argv),
            cwd=REPO,
            env=aggregator_env if name == "aggregator" else env,  # per service, as in docker-compose
            stdout=logs[name],
            stderr=logs[name],
        )
    ingest, gateway = f"http://127.0.0.1:{ingest_port}", f"http://127.0.0.1:{gateway_port}"
    viewer = issue_token(secret=SECRET, session=session, participant="*", role="viewer")
    sim = None
    try:
        async with aiohttp.ClientSession() as http:
            await _healthy(http, f"{ingest}/healthz", list(procs.values()))
            await _healthy(http, f"{gateway}/healthz", list(procs.values()))
            started = time.monotonic()
            async with http.ws_connect(f"{gateway}/api/sessions/{session}/ws", params={"token": viewer}) as ws:
                assert (await ws.receive_json(timeout=10))["kind"] == "snapshot"
                sim = await asyncio.create_subprocess_exec(
                    *classpulse(
                        "simulate", "--session", session, "--students", "1", "--url", ingest, "--duration", "40"
                    ),
                    cwd=REPO,
                    env=env,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                kinds: set[str] = set()
                score = None
                deadline = time.monotonic() + 75
                while not {"score", "aggregate"} <= kinds and time.monotonic() < deadline:
                    try:
                        msg = await ws.receive_json(timeout=5)
                    except TimeoutError:
                        continue
                    if msg["kind"] not in kinds:
                        print(f"first {msg['kind']} {time.monotonic() - started:.1f} s after the services were up")
                    kinds.add(msg["kind"])
                    if msg["kind"] == "score":
                        score = msg["event"]
            assert {"score", "aggregate"} <= kinds, f"live feed delivered only {kinds}; logs in {tmp_path}"
            assert score is not None and score["participant"] == "student-1"
            assert [s["stage"] for s in score["timing"]["stages"]] == ["ingest", "inference", "gateway"]

            async with http.get(f"{gateway}/api/sessions/{session}/live", params={"token": viewer}) as resp:
                state = await resp.json()
            assert [p["participant"] for p in state["participants"]] == ["student-1"]
            assert state["aggregate"] is not None and state["aggregate"]["participants_total"] >= 1
    finally:
        for proc in ([sim] if sim else []) + list(procs.values()):
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
        for proc in ([sim] if sim else []) + list(procs.values()):
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for log in logs.values():
            log.close()
