"""The faults of issue 13, each run on a fresh :class:`~shared.testkit.fault_stack.Stack` with 3 students.

One run (:func:`run_fault`)::

    reset brokers -> start the 5 services -> 3 students publish (classpulse simulate, pre-encoded clip)
      -> every student scored -> STEADY_S -> the fault -> the class goes on AFTER_S (longer while a service
      is still unhealthy, up to RECOVERY_BOUND_S) -> publishers DELETE -> DRAIN_S -> metrics scraped
      -> SIGTERM every service -> scores, class windows and alerts read back from the start

and returns a :class:`~shared.testkit.fault_report.FaultReport`. ``tests/faults`` asserts on it;
``bench/faults.py`` prints the reports as a table. :data:`FAULTS` names every fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from aiortc import RTCConfiguration, RTCPeerConnection

from shared.contracts.events import Alert, ClassAggregate, LifecycleEvent, ScoreEvent
from shared.contracts.topics import AGGREGATES, ALERTS, INFERENCE_COORDINATION, LIFECYCLE, SCORES
from shared.settings import CommonSettings
from shared.testkit.clips import write_clip
from shared.testkit.fault_report import (
    FaultReport,
    aggregator_resumed,
    alert_figures,
    inference_resumed,
    metric_sum,
    read_topic,
    score_figures,
    window_figures,
)
from shared.testkit.fault_stack import SECRET, Brokers, Stack, forced_stops, healthy, stop_publisher
from shared.tokens import issue_token
from shared.transport.shards import participant_key, shard_of

STUDENTS = 3
STEADY_S = 4.0
AFTER_S = 15.0
DRAIN_S = 6.0
RECOVERY_BOUND_S = 30.0
"""Every service must answer its health URL again within this many seconds after the fault ends."""
REDIS_PAUSE_S = 10.0
KAFKA_PAUSE_S = 15.0
RESTART_DELAY_S = 1.0  # an orchestrator restarting a killed container
DOUBLE_PUBLISHES = 20
DOUBLE_PARTICIPANT = "double-1"


def make_media(folder: Path) -> Path:
    """The pre-encoded clip every publisher relays (VP8 + Opus, 640x480 at 15 fps, looping)."""
    path = folder / "fault-class.webm"
    if not path.exists():
        write_clip(path, seconds=10.0, video="vp8", audio=True)
    return path


@dataclass
class Run:
    """State of one fault run that the fault actions and the monitor share."""

    name: str
    stack: Stack
    brokers: Brokers
    session: str
    media: Path
    publisher: Any
    fault_start: float = 0.0
    fault_end: float = 0.0
    notes: list[str] = field(default_factory=list)
    extra: dict[str, int] = field(default_factory=dict)
    drops_at_kill: dict[tuple[str, int], float] = field(default_factory=dict)
    """(worker, start) -> its drop counter read just before a kill (the monitor may have polled earlier)."""

    def note(self, text: str) -> None:
        self.notes.append(text)


async def _pause(run: Run, broker: str, seconds: float) -> None:
    run.brokers.pause(broker)
    try:
        await asyncio.sleep(seconds)
    finally:
        run.brokers.resume(broker)


async def _redis_pause(run: Run) -> None:
    await _pause(run, "redis", REDIS_PAUSE_S)


async def _kafka_pause(run: Run) -> None:
    await _pause(run, "kafka", KAFKA_PAUSE_S)


async def _kafka_restart(run: Run) -> None:
    t0 = time.monotonic()
    await asyncio.to_thread(run.brokers.restart_kafka)
    run.note(f"broker down and up again in {time.monotonic() - t0:.1f} s")


async def _owner_of_first_student(run: Run) -> str:
    """The inference worker holding the shard of student-1 (the one to kill)."""
    shards = CommonSettings.model_fields["media_shards"].default
    shard = shard_of(participant_key(run.session, "student-1"), shards)
    r: Any = aioredis.Redis.from_url(run.brokers.redis_url)
    try:
        raw = await r.get(f"{INFERENCE_COORDINATION}:lease:{shard}")
    finally:
        await r.aclose()
    owner = raw.decode().rpartition("/")[0] if raw else ""
    return owner if owner in ("w1", "w2") else "w1"


async def _count_drops_and_kill(run: Run, name: str) -> None:
    """Read an inference worker's drop counter, then SIGKILL it at once: media it thinned or dropped as
    stale after the monitor's last poll (every 0.5 s) would otherwise look lost."""
    service = run.stack[name]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        try:
            async with http.get(service.base_url + "/metrics") as resp:
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError):
            text = None
        service.kill()  # no await between the read and the kill
    if text is not None:
        run.drops_at_kill[(name, service.starts)] = metric_sum(text, "classpulse_media_dropped_total")


def _kill_and_restart(name: str) -> Callable[[Run], Awaitable[None]]:
    async def fault(run: Run) -> None:
        target = await _owner_of_first_student(run) if name == "inference" else name
        run.note(f"killed {target}")
        if name == "inference":
            await _count_drops_and_kill(run, target)
        else:
            run.stack[target].kill()
        await asyncio.sleep(RESTART_DELAY_S)
        run.stack[target].start()

    return fault


async def _reconnect(run: Run) -> None:
    """Every student's publisher DELETEs and publishes again (same participants, new WHIP resources)."""
    await asyncio.to_thread(stop_publisher, run.publisher)
    run.publisher = run.stack.simulate(session=run.session, students=STUDENTS, media=run.media, log="simulate-2")


async def _post_offer(http: aiohttp.ClientSession, run: Run, participant: str) -> tuple[RTCPeerConnection, int, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="sendonly")
    pc.addTransceiver("audio", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    token = issue_token(secret=SECRET, session=run.session, participant=participant, role="student")
    url = f"{run.stack['ingest'].base_url}/whip/{run.session}/{participant}"
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
    async with http.post(url, data=pc.localDescription.sdp, headers=headers) as resp:
        await resp.read()
        return pc, resp.status, resp.headers.get("Location", "")


async def _ingest_publishers(http: aiohttp.ClientSession, run: Run) -> int:
    async with http.get(run.stack["ingest"].base_url + "/healthz") as resp:
        return int((await resp.json()).get("publishers", -1))


async def _double_publish(run: Run) -> None:
    """DOUBLE_PUBLISHES concurrent WHIP POSTs for one participant (offers that never connect), then a new
    student publishes; counted: 201s, the ingest's resources a few seconds later, the new student's answer."""
    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(*(_post_offer(http, run, DOUBLE_PARTICIPANT) for _ in range(DOUBLE_PUBLISHES)))
        created = sum(1 for _, status, _ in results if status == 201)
        await asyncio.sleep(3.0)
        resources = await _ingest_publishers(http, run)
        late_pc, late_status, late_location = await _post_offer(http, run, "late-1")
        run.note(f"{created}x201 of {DOUBLE_PUBLISHES} concurrent publishes; ingest holds {resources} resources "
                 f"for {STUDENTS} students + 1 double-published participant; a new student got {late_status}")
        run.extra.update(double_created=created, ingest_resources=resources, late_status=late_status)
        token = issue_token(secret=SECRET, session=run.session, participant=DOUBLE_PARTICIPANT, role="student")
        for pc, _status, location in [*results, (late_pc, late_status, late_location)]:
            if location:
                url = run.stack["ingest"].base_url + location if location.startswith("/") else location
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.delete(url, headers={"Authorization": f"Bearer {token}"}):
                        pass
            await pc.close()


FAULTS: dict[str, Callable[[Run], Awaitable[None]]] = {
    "redis_pause": _redis_pause,
    "kafka_pause": _kafka_pause,
    "kafka_restart": _kafka_restart,
    "kill_inference": _kill_and_restart("inference"),
    "kill_aggregator": _kill_and_restart("aggregator"),
    "kill_gateway": _kill_and_restart("gateway"),
    "reconnect": _reconnect,
    "double_publish": _double_publish,
}
DESCRIPTIONS = {
    "baseline": "no fault (control)",
    "redis_pause": f"Redis SIGSTOP {REDIS_PAUSE_S:.0f} s",
    "kafka_pause": f"Kafka SIGSTOP {KAFKA_PAUSE_S:.0f} s",
    "kafka_restart": "Kafka stop + start (same data)",
    "kill_inference": "SIGKILL inference worker, restart",
    "kill_aggregator": "SIGKILL aggregator, restart",
    "kill_gateway": "SIGKILL gateway, restart",
    "reconnect": "every publisher DELETE + publish again",
    "double_publish": f"{DOUBLE_PUBLISHES} concurrent publishes, one participant",
}


async def _no_fault(run: Run) -> None:
    return None


class Monitor:
    """Polls health of every service, the gateway's score count and the workers' drop counters."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.healthy_since: dict[str, float | None] = dict.fromkeys(run.stack.services)
        self.gateway_counts: list[tuple[float, int]] = []
        self.drops: dict[tuple[str, int], float] = {}
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._loop(), name="fault-monitor")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _loop(self) -> None:
        viewer = issue_token(secret=SECRET, session=self.run.session, participant="*", role="viewer")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while True:
                now = time.time()
                for name, service in self.run.stack.services.items():
                    ok = service.alive() and await healthy(http, service.health_url)
                    if not ok:
                        self.healthy_since[name] = None
                    elif self.healthy_since[name] is None:
                        self.healthy_since[name] = now
                    if ok and service.kind == "inference":
                        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                            async with http.get(service.base_url + "/metrics") as resp:
                                text = await resp.text()
                            self.drops[(name, service.starts)] = metric_sum(text, "classpulse_media_dropped_total")
                gateway = self.run.stack["gateway"]
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                    async with http.get(f"{gateway.base_url}/api/sessions/{self.run.session}",
                                        params={"token": viewer}) as resp:
                        if resp.status == 200:
                            self.gateway_counts.append((now, int((await resp.json())["scores"])))
                await asyncio.sleep(0.5)

    async def wait_all_healthy(self, *, until: float) -> None:
        """Return once every service is healthy, or at wall time ``until``."""
        while time.time() < until:
            if all(t is not None for t in self.healthy_since.values()):
                return
            await asyncio.sleep(0.5)

    def healthy_after(self, fault_end: float) -> dict[str, float | None]:
        return {name: (max(0.0, t - fault_end) if t is not None else None) for name, t in self.healthy_since.items()}

    def gateway_resumed(self, fault_end: float) -> float | None:
        before = [c for t, c in self.gateway_counts if t <= fault_end]
        base = before[-1] if before else 0
        return next((t - fault_end for t, c in self.gateway_counts if t > fault_end and c > base), None)


async def _wait_scored(run: Run, within: float = 180.0) -> None:
    viewer = issue_token(secret=SECRET, session=run.session, participant="*", role="viewer")
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while time.monotonic() < deadline:
            if run.publisher.poll() is not None:
                raise RuntimeError(f"classpulse simulate exited ({run.publisher.returncode}); see {run.stack.folder}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                url = f"{run.stack['gateway'].base_url}/api/sessions/{run.session}/participants"
                async with http.get(url, params={"token": viewer}) as resp:
                    if resp.status == 200:
                        rows = (await resp.json())["participants"]
                        if len(rows) >= STUDENTS and all(p["media_time"] > 0 for p in rows):
                            return
            await asyncio.sleep(0.5)
    raise RuntimeError(f"the {STUDENTS} students were not all scored within {within:.0f} s; see {run.stack.folder}")


async def _final_figures(run: Run, report: FaultReport) -> None:
    viewer = issue_token(secret=SECRET, session=run.session, participant="*", role="viewer")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        for name, service in run.stack.services.items():  # kept beside the logs, for a failure's diagnosis
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                async with http.get(service.base_url + "/metrics") as resp:
                    (run.stack.folder / f"{name}.metrics").write_text(await resp.text())
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.get(run.stack["ingest"].base_url + "/metrics") as resp:
                report.frames_in = int(metric_sum(await resp.text(), "classpulse_messages_total",
                                                  {"stage": "ingest", "kind": "video"}))
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, KeyError, ValueError):
            url = f"{run.stack['gateway'].base_url}/api/sessions/{run.session}"
            async with http.get(url, params={"token": viewer}) as resp:
                if resp.status == 200:
                    info = await resp.json()
                    report.gateway_scores = int(info["scores"])
                    students = [p for p in info["participants"] if p["id"].startswith("student-")]
                    left = sum(1 for p in students if p["status"] == "left")
                    report.gateway_left = f"{left}/{len(students)}"


async def run_fault(name: str, *, brokers: Brokers, folder: Path, media: Path) -> FaultReport:
    """Run fault ``name`` (a key of :data:`FAULTS`, or ``baseline``) on a fresh stack; its report."""
    fault = _no_fault if name == "baseline" else FAULTS[name]
    await brokers.reset()
    stamp = f"{name.replace('_', '-')}-{int(time.time())}"
    stack = Stack(brokers=brokers, folder=folder / name, app_id=f"faults-{stamp}")
    report = FaultReport(fault=name)
    run = Run(name=name, stack=stack, brokers=brokers, session=f"faults-{stamp}", media=media, publisher=None)
    monitor = Monitor(run)
    try:
        await stack.start()
        run.publisher = stack.simulate(session=run.session, students=STUDENTS, media=media)
        await _wait_scored(run)
        monitor.start()
        await asyncio.sleep(STEADY_S)
        run.fault_start = time.time()
        await fault(run)
        run.fault_end = time.time()
        await asyncio.sleep(AFTER_S)
        await monitor.wait_all_healthy(until=run.fault_end + RECOVERY_BOUND_S)
        stopped = await asyncio.to_thread(stop_publisher, run.publisher)
        if stopped != 0:
            run.note(f"classpulse simulate did not stop cleanly on SIGINT (exit {stopped}; None = killed after 20 s)")
        await asyncio.sleep(DRAIN_S)
        await monitor.stop()
        await _final_figures(run, report)
        report.died = [n for n, s in stack.services.items() if not s.alive()]
    finally:
        await monitor.stop()
        if run.publisher is not None:
            await asyncio.to_thread(stop_publisher, run.publisher)
        report.exit_codes = await asyncio.to_thread(stack.stop)
        report.forced_stops = forced_stops(stack)
        brokers.resume("redis")
        brokers.resume("kafka")
    report.healthy_after_s = monitor.healthy_after(run.fault_end)
    for key, value in run.drops_at_kill.items():  # counters only grow within one start: the later read wins
        monitor.drops[key] = max(monitor.drops.get(key, 0.0), value)
    report.dropped_counted = int(sum(monitor.drops.values()))
    scores = await read_topic(brokers.bootstrap, SCORES.name, run.session, ScoreEvent)
    aggregates = await read_topic(brokers.bootstrap, AGGREGATES.name, run.session, ClassAggregate)
    alerts = await read_topic(brokers.bootstrap, ALERTS.name, run.session, Alert)
    lifecycle = await read_topic(brokers.bootstrap, LIFECYCLE.name, run.session, LifecycleEvent)
    score_figures(report, scores)
    window_figures(report, aggregates)
    alert_figures(report, [a for a in alerts if a.participant != DOUBLE_PARTICIPANT])
    origin = min([e.ts for e in lifecycle] + [s.timing.capture_ts for s in scores], default=run.fault_end)
    report.resumed_after_s = {
        "inference": inference_resumed(scores, run.fault_end),
        "aggregator": aggregator_resumed(aggregates, run.fault_end, origin),
        "gateway": monitor.gateway_resumed(run.fault_end),
    }
    report.notes = run.notes
    report.extra = run.extra
    return report
