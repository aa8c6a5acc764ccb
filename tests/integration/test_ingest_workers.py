"""`classpulse ingest --workers 2` on real Redis + Kafka with real aiortc publishers.

Publishers reach both workers through the shared port, frames from both land in the
Redis media stream, DELETE works whichever worker receives it, publishing again on the
other worker replaces the older resource, a request aiohttp's parser rejects gets one line
on the shared and on the private ports, and a killed worker is restarted by the supervisor
while the port keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from services.ingest.simulate import EncodedClip, Simulation
from services.ingest.worker import owner_of
from shared.contracts.codec import decode_media
from shared.contracts.media import AudioChunk, VideoFrame
from shared.contracts.topics import media_stream
from shared.settings import CommonSettings
from shared.testkit.clips import write_clip
from shared.testkit.fuzz import raw_requests, send_raw

pytestmark = pytest.mark.integration

SECRET = "workers-secret"
REDIS_DB = 13  # away from the default database other services' tests read


@dataclass
class Cluster:
    url: str
    runtime: Path
    proc: subprocess.Popen[str]
    redis_url: str

    def registry(self, index: int) -> dict[str, int]:
        data: dict[str, int] = json.loads((self.runtime / f"worker-{index}.json").read_text())
        return data


def _start_supervisor(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "services.cli", "ingest", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)


@pytest.fixture
async def cluster(redis_url: str, kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    db_url = f"{redis_url.rsplit('/', 1)[0]}/{REDIS_DB}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLASSPULSE_")}
    env |= {
        "CLASSPULSE_TRANSPORT": "distributed",
        "CLASSPULSE_REDIS_URL": db_url,
        "CLASSPULSE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "CLASSPULSE_TOKEN_SECRET": SECRET,
        "CLASSPULSE_LOG_LEVEL": "WARNING",
    }
    runtime = tmp_path / "run"
    proc = _start_supervisor(["--workers", "2", "--port", "0", "--runtime-dir", str(runtime)], env)
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
    assert "(2 workers)" in line, line
    url = line.split()[3].removesuffix("/join")
    try:
        yield Cluster(url=url, runtime=runtime, proc=proc, redis_url=db_url)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> EncodedClip:
    return EncodedClip.load(write_clip(tmp_path_factory.mktemp("w") / "a.webm", seconds=4, video="vp8"))


def _loaded_torch(pid: int) -> bool:
    return "/torch/" in Path(f"/proc/{pid}/maps").read_text()


async def _worker_info(url: str) -> dict[str, int]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        async with http.get(url + "/ingest/worker") as resp:
            assert resp.status == 200
            data: dict[str, int] = await resp.json()
            return data


async def test_two_workers_share_the_port_route_deletes_and_survive_a_crash(
    cluster: Cluster, clip: EncodedClip, unique: str
) -> None:
    redis: Any = aioredis.from_url(cluster.redis_url)
    shards = [media_stream(k) for k in range(CommonSettings.model_fields["media_shards"].default)]
    start_ids = {}
    for name in shards:
        last = await redis.xrevrange(name, count=1)
        start_ids[name] = last[0][0] if last else b"0-0"
    sims: list[Simulation] = []
    owners: dict[str, int] = {}  # participant -> worker that serves it (from the Location)
    locations: dict[str, str] = {}
    try:
        for k in range(12):  # each publisher opens a new connection; the kernel spreads them
            sim = Simulation(base_url=cluster.url, session=unique, students=1, clip=clip, secret=SECRET, prefix=f"p{k}")
            sims.append(sim)
            assert await sim.start() == 1, sim.errors
            pub = sim.publishers[0]
            assert pub.location is not None
            owner = owner_of(pub.location.rsplit("/", 1)[1])
            assert owner in (0, 1), pub.location
            owners[pub.participant], locations[pub.participant] = owner, pub.location
            if len(owners) >= 3 and set(owners.values()) == {0, 1}:
                break
        assert set(owners.values()) == {0, 1}, f"12 publishers all landed on one worker: {owners}"

        await asyncio.sleep(2.5)
        entries = [
            e for name in shards for e in await redis.xrange(name, min=f"({start_ids[name].decode()}", count=10_000)
        ]
        frames = [m for m in (decode_media(e[1][b"d"]) for e in entries) if m.session == unique]
        video = {m.participant for m in frames if isinstance(m, VideoFrame)}
        assert video == set(owners), f"video from {video}, publishers {owners}"
        audio = {m.participant for m in frames if isinstance(m, AudioChunk)}
        assert audio == set(owners), f"audio from {audio}, publishers {owners}"
        for index in (0, 1):  # the workers decoded and resampled Opus without loading torch
            assert not _loaded_torch(cluster.registry(index)["pid"]), f"ingest worker {index} loaded torch"

        # DELETE: the first through the shared port, the others sent to the NON-owner's private port
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            for i, (participant, location) in enumerate(locations.items()):
                sim = next(s for s in sims if s.publishers and s.publishers[0].participant == participant)
                auth = {"Authorization": f"Bearer {sim.token(participant)}"}
                if i == 0:
                    base = cluster.url
                else:
                    base = f"http://127.0.0.1:{cluster.registry(1 - owners[participant])['port']}"
                async with http.delete(base + location, headers=auth) as resp:
                    assert resp.status == 200, (participant, base, await resp.text())
                async with http.delete(cluster.url + location, headers=auth) as resp:
                    assert resp.status == 404  # gone on its owner, whichever worker answered
            for index in (0, 1):
                port = cluster.registry(index)["port"]
                health = await (await http.get(f"http://127.0.0.1:{port}/healthz")).json()
                assert health["publishers"] == 0

        # publishing again on another worker ends the older resource there
        private = [f"http://127.0.0.1:{cluster.registry(i)['port']}" for i in (0, 1)]
        for base in private:
            sims.append(Simulation(base_url=base, session=unique, students=1, clip=clip, secret=SECRET, prefix="again"))
            assert await sims[-1].start() == 1, sims[-1].errors
        async with aiohttp.ClientSession() as http:
            for _ in range(50):
                counts = [(await (await http.get(base + "/healthz")).json())["publishers"] for base in private]
                if counts == [0, 1]:
                    break
                await asyncio.sleep(0.1)
            assert counts == [0, 1], counts
            async with http.post(cluster.url + f"/ingest/replace/{unique}/again-1") as resp:
                assert resp.status == 404  # the workers' own route is not reachable from the public port
    finally:
        for sim in sims:
            await sim.stop()
        await redis.aclose()

    # requests aiohttp's parser rejects: 400 with one line that does not echo them, on every port
    port = int(cluster.url.rsplit(":", 1)[1])
    for target in (port, cluster.registry(0)["port"], cluster.registry(1)["port"]):
        report = await send_raw("127.0.0.1", target, raw_requests())
        assert report.sent == len(raw_requests()) and set(report.statuses) == {400}, (target, report.statuses)
        assert not report.problems(), (target, report.problems())

    # kill worker 0: worker 1 keeps the port serving, the supervisor starts a new worker 0
    old = cluster.registry(0)["pid"]
    os.kill(old, signal.SIGKILL)
    await asyncio.sleep(0.3)
    seen = [await _worker_info(cluster.url) for _ in range(5)]
    assert all(s["worker"] == 1 for s in seen[1:]), seen
    for _ in range(400):
        await asyncio.sleep(0.1)
        try:
            if cluster.registry(0)["pid"] != old:
                break
        except (OSError, ValueError):
            continue
    new = cluster.registry(0)["pid"]
    assert new != old, "the supervisor did not restart the killed worker"
    found = {(s["worker"], s["pid"]) for s in [await _worker_info(cluster.url) for _ in range(30)]}
    assert (0, new) in found and all(pid != old for _, pid in found), found

    cluster.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(cluster.proc.wait, 30) == 0
    for pid in (new, cluster.registry(1)["pid"]):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
