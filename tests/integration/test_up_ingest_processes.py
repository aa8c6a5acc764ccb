"""`classpulse up` with its WebRTC receive in 2 ingest processes, on real aiortc publishers.

Publishers are spread over both processes (the Location names the owner), their media is
relayed into the main process and scored, DELETE reaches the owner through `up`'s port,
`/metrics` sums the processes, a killed ingest process is restarted and a student can publish
again, and SIGINT stops everything.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.ingest.simulate import EncodedClip, Simulation
from services.ingest.worker import owner_of
from shared.testkit.clips import write_clip
from shared.tokens import issue_token
from tests.integration.classpulse_up import SECRET, classpulse_up

pytestmark = pytest.mark.integration


def _children(pid: int) -> dict[int, int]:
    """Ingest worker index -> pid among the children of ``pid``."""
    out = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid=,args="], capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        child, _, args = line.strip().partition(" ")
        parts = args.split()
        if "--ingest-worker" in parts:
            found[int(parts[parts.index("--ingest-worker") + 1])] = int(child)
    return found


def _sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


async def test_publishers_spread_over_two_ingest_processes_scored_deleted_and_restarted(tmp_path: Path) -> None:
    clip = EncodedClip.load(write_clip(tmp_path / "a.webm", seconds=4, video="vp8"))
    session = "procs"
    with classpulse_up(tmp_path, env={"CLASSPULSE_UP_INGEST_PROCESSES": "2"}) as up:
        workers = _children(up.proc.pid)
        assert set(workers) == {0, 1}, workers
        sim = Simulation(base_url=up.url, session=session, students=4, clip=clip, secret=SECRET)
        try:
            assert await sim.start() == 4, sim.errors
            owners = {p.participant: owner_of((p.location or "").rsplit("/", 1)[-1]) for p in sim.publishers}
            assert sorted(owners.values()) == [0, 0, 1, 1], owners  # round robin over the processes
            viewer = issue_token(secret=SECRET, session=session, participant="*", role="viewer")
            async with aiohttp.ClientSession() as http:
                rows: dict[str, object] = {}
                deadline = time.monotonic() + 45
                while len(rows) < 4 and time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
                    async with http.get(
                        f"{up.url}/api/sessions/{session}/live", headers={"Authorization": f"Bearer {viewer}"}
                    ) as resp:
                        if resp.status == 200:
                            rows = {r["participant"]: r for r in (await resp.json())["participants"]}
                assert set(rows) == set(owners), f"scored: {sorted(rows)}; publishers: {sorted(owners)}"
                metrics = await (await http.get(f"{up.url}/metrics")).text()
                assert _sample(metrics, "classpulse_active_streams", kind="publisher") == 4
                assert _sample(metrics, "classpulse_inference_analysed_frames_total", session=session) > 0

                first = sim.publishers[0]
                auth = {"Authorization": f"Bearer {sim.token(first.participant)}"}
                async with http.delete(up.url + (first.location or ""), headers=auth) as resp:
                    assert resp.status == 200, await resp.text()
                async with http.delete(up.url + (first.location or ""), headers=auth) as resp:
                    assert resp.status == 404
                first.location = None
                metrics = await (await http.get(f"{up.url}/metrics")).text()
                assert _sample(metrics, "classpulse_active_streams", kind="publisher") == 3
        finally:
            await sim.stop()

        # SIGKILL one ingest process: up restarts it and a student publishes again through it
        os.kill(workers[1], signal.SIGKILL)
        again = Simulation(base_url=up.url, session=session, students=2, clip=clip, secret=SECRET, prefix="again")
        try:
            deadline = time.monotonic() + 60
            while True:
                restarted = _children(up.proc.pid)
                if restarted.get(1) not in (None, workers[1]):
                    break
                assert time.monotonic() < deadline, "the killed ingest process was not restarted"
                await asyncio.sleep(0.2)
            deadline = time.monotonic() + 60
            while await again.start() != 2:
                assert time.monotonic() < deadline, again.errors
                await again.stop()
                again = Simulation(base_url=up.url, session=session, students=2, clip=clip, secret=SECRET,
                                   prefix="again")
                await asyncio.sleep(1.0)
        finally:
            await again.stop()
        assert up.proc.poll() is None, "classpulse up died with its ingest process"
        up.proc.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(up.proc.wait, 30) == 0
    for pid in _children(up.proc.pid).values():
        pytest.fail(f"ingest process {pid} outlived classpulse up")
    for pid in restarted.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
