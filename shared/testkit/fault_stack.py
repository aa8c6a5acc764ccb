"""The system under fault: private Redis + Kafka and every ClassPulse service as its own process.

* :class:`Brokers`: a private Redis and Kafka (``deploy/local/services.sh`` with its own run dir and
  ports); pause/resume by SIGSTOP/SIGCONT of the pids it writes (``redis.pid``, ``kafka.pid``),
  a Kafka restart on the same data dir (``services.sh restart-kafka``), and :meth:`Brokers.reset`
  (empty Redis, every ClassPulse topic deleted and created again) between scenarios.
* :class:`Stack`: ``classpulse ingest``, two ``classpulse inference`` workers (``w1``, ``w2``),
  ``classpulse aggregator`` (faust, rocksdb on disk) and ``classpulse gateway``, started as an
  orchestrator would (same command, same env, same ports on a restart), each with a health URL;
  plus ``classpulse simulate`` publishers.

Everything runs under ``nice -n 10`` so a fault run leaves the box usable.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from shared.contracts.topics import EVENT_TOPICS
from shared.service import STOP_FORCED

REPO = Path(__file__).resolve().parents[2]
SECRET = "fault-tier-secret"
PARTITIONS = 8  # what the aggregator creates (CLASSPULSE_AGGREGATOR_PARTITIONS' default)
NICE = ("nice", "-n", "10")
ANALYSIS_FPS = 2.5  # frames per student sent to inference (default 5): 3 students stay well inside 2 busy cores

# Health URLs: /healthz on every service (ingest and gateway on their own port, inference and aggregator
# on their /metrics port); it turns 503 while a supervised background task is down.
HEALTH_PATH: Mapping[str, str] = dict.fromkeys(("ingest", "gateway", "inference", "aggregator"), "/healthz")


def free_port(*, pair: bool = False) -> int:
    """A free loopback port (``pair``: the next one is free too, for Kafka's controller listener)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not pair or port >= 65535:
            return port
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair on 127.0.0.1")


class Brokers:
    """A private Redis + Kafka pair in ``run_dir``, driven through ``deploy/local/services.sh``."""

    def __init__(self, *, run_dir: Path, redis_port: int = 0, kafka_port: int = 0) -> None:
        self.run_dir = run_dir
        self.redis_port = redis_port or free_port()
        self.kafka_port = kafka_port or free_port(pair=True)

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def _sh(self, verb: str) -> None:
        env = {**os.environ, "CLASSPULSE_LOCAL_RUN_DIR": str(self.run_dir),
               "CLASSPULSE_LOCAL_REDIS_PORT": str(self.redis_port), "CLASSPULSE_LOCAL_KAFKA_PORT": str(self.kafka_port)}
        done = subprocess.run([str(REPO / "deploy/local/services.sh"), verb], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"services.sh {verb} failed: {done.stderr.strip()[-500:]}")

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._sh("start")

    def stop(self) -> None:
        self.resume("redis")  # a stopped process would ignore the shutdown
        self.resume("kafka")
        self._sh("stop")

    def restart_kafka(self) -> None:
        self._sh("restart-kafka")

    def pid(self, name: str) -> int | None:
        path = self.run_dir / f"{name}.pid"
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def pause(self, name: str) -> None:
        """SIGSTOP ``redis`` or ``kafka``: the process keeps its sockets but answers nothing."""
        pid = self.pid(name)
        if pid is None:
            raise RuntimeError(f"no pid file for {name} in {self.run_dir}")
        os.kill(pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        pid = self.pid(name)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    async def reset(self) -> None:
        """Empty Redis; delete every ClassPulse topic and create it again with the aggregator's layout."""
        r: Any = aioredis.Redis.from_url(self.redis_url)
        try:
            await r.flushall()
        finally:
            await r.aclose()
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            names = [t.name for t in EVENT_TOPICS]
            existing = [t for t in await admin.list_topics() if not t.startswith("__")]
            if existing:
                await admin.delete_topics(existing)
            deadline = time.monotonic() + 30
            while set(await admin.list_topics()) & set(existing):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"topics {existing} were not deleted within 30 s")
                await asyncio.sleep(0.2)
            while True:
                try:
                    await admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
                    break
                except KafkaError:  # a deleted topic can linger a moment
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.5)
        finally:
            await admin.close()


def classpulse(*args: str) -> list[str]:
    return [*NICE, sys.executable, "-m", "services.cli", *args]


@dataclass
class Service:
    """One service process; :meth:`start` again is a restart with the same command, env and ports."""

    name: str
    kind: str  # ingest | inference | aggregator | gateway
    argv: list[str]
    env: dict[str, str]
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def health_url(self) -> str:
        return self.base_url + HEALTH_PATH[self.kind]

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(f"---- start {self.starts + 1} at {time.time():.3f}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(self.argv, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait_stopped(self, deadline: float) -> int | None:
        """Wait until monotonic ``deadline`` for the exit status (None: still running, then killed)."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


async def healthy(http: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


@dataclass
class Stack:
    """ingest, inference w1 + w2, aggregator, gateway on ``brokers``; logs and aggregator state in ``folder``."""

    brokers: Brokers
    folder: Path
    app_id: str
    services: dict[str, Service] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.folder / "aggregator-data", ignore_errors=True)  # a fresh stack: no table state
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLASSPULSE_")}
        env.update(CLASSPULSE_TRANSPORT="distributed", CLASSPULSE_REDIS_URL=self.brokers.redis_url,
                   CLASSPULSE_KAFKA_BOOTSTRAP=self.brokers.bootstrap, CLASSPULSE_TOKEN_SECRET=SECRET,
                   CLASSPULSE_LOG_LEVEL="INFO")
        self.env = env

        def add(name: str, kind: str, argv: list[str], port: int, **settings: str) -> None:
            extra = {f"CLASSPULSE_{k.upper()}": v for k, v in settings.items()}
            self.services[name] = Service(name=name, kind=kind, argv=argv, env={**env, **extra}, port=port,
                                          log=self.folder / f"{name}.log")

        port = free_port()
        add("ingest", "ingest", classpulse("ingest", "--host", "127.0.0.1", "--port", str(port)), port,
            ingest_analysis_fps=str(ANALYSIS_FPS))
        for name in ("w1", "w2"):
            port = free_port()
            add(name, "inference", classpulse("inference", "--metrics-port", str(port)), port,
                inference_consumer_name=name, inference_perception_threads="1")
        port = free_port()
        add("aggregator", "aggregator", classpulse("aggregator"), port, aggregator_app_id=self.app_id,
            aggregator_metrics_port=str(port), aggregator_data_dir=str(self.folder / "aggregator-data"))
        port = free_port()
        add("gateway", "gateway", classpulse("gateway", "--host", "127.0.0.1", "--port", str(port)), port)

    def __getitem__(self, name: str) -> Service:
        return self.services[name]

    async def start(self, *, within: float = 180.0) -> None:
        for service in self.services.values():
            service.start()
        async with aiohttp.ClientSession() as http:
            for service in self.services.values():
                if await self.wait_healthy(http, service, within=within) is None:
                    raise RuntimeError(f"{service.name} not healthy within {within:.0f} s; see {service.log}")

    async def wait_healthy(self, http: aiohttp.ClientSession, service: Service, *, within: float) -> float | None:
        """Seconds until ``service`` answers its health URL (None: not within ``within``, or it exited)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < within:
            if not service.alive():
                return None
            if await healthy(http, service.health_url):
                return time.monotonic() - t0
            await asyncio.sleep(0.25)
        return None

    def simulate(self, *, session: str, students: int, media: Path, log: str = "simulate") -> subprocess.Popen[bytes]:
        """``classpulse simulate`` publishing until SIGINT (which DELETEs its WHIP resources)."""
        argv = classpulse("simulate", "--session", session, "--students", str(students), "--media", str(media),
                          "--url", self["ingest"].base_url, "--duration", "3600")
        with (self.folder / f"{log}.log").open("ab") as out:
            return subprocess.Popen(argv, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def stop(self, within: float = 25.0) -> dict[str, int | None]:
        """SIGTERM every service at once, as an orchestrator stops a deployment; their exit statuses
        (None: not stopped within ``within`` s, then killed; longer than ``CLASSPULSE_STOP_TIMEOUT_S``, 20 s)."""
        for service in self.services.values():
            service.signal_stop()
        deadline = time.monotonic() + within
        return {name: service.wait_stopped(deadline) for name, service in self.services.items()}


def forced_stops(stack: Stack) -> list[str]:
    """Services whose log says their stop ran past ``CLASSPULSE_STOP_TIMEOUT_S`` (and was forced)."""
    out = []
    for name, service in stack.services.items():
        try:
            text = service.log.read_text(errors="replace")
        except OSError:
            continue
        if STOP_FORCED in text:
            out.append(name)
    return out


def stop_publisher(proc: subprocess.Popen[bytes], within: float = 20.0) -> int | None:
    """SIGINT a ``classpulse simulate`` (it DELETEs its resources); its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(within)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None
