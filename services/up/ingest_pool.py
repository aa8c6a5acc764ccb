"""``classpulse up``'s WebRTC receive in ingest processes, one event loop per core.

One Python process cannot both receive 20+ WebRTC streams (per-packet SRTP, RTP, jitter
buffer and RTCP work on one asyncio loop) and run inference: past ~15 students the loop
falls behind, the kernel's socket buffers fill and capture->ingest latency grows to seconds.
So ``up`` starts ``CLASSPULSE_UP_INGEST_PROCESSES`` ingest workers (the same worker app as
``classpulse ingest --workers N``: resource ids ``w<i>-...``, private loopback ports in a
runtime folder, restarted when they die). Its own WHIP routes forward each request to a
worker: a participant's first publish to the next worker in turn (round robin keeps them
even), publishing again to the same worker (so the new resource replaces the old one there),
a resource request to the worker its id names. Workers relay their media appends and
lifecycle events through a Unix socket (:mod:`shared.transport.relay`) into the main
process's memory buses, where inference, aggregation and the gateway read them as before.
``/metrics`` of ``up`` sums the workers' samples into its own (:mod:`services.up.metrics_merge`).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from collections import OrderedDict
from contextlib import suppress
from pathlib import Path

import aiohttp
from aiohttp import web

from services.ingest.supervisor import WorkerSupervisor
from services.ingest.worker import WorkerIdentity, forward_request, owner_of
from shared.log import get_logger, spawn
from shared.service import ServiceError
from shared.transport.factory import Transports
from shared.transport.rate import RateRecord
from shared.transport.relay import RelayServer

log = get_logger(__name__)

RELAY_SOCKET = "relay.sock"
_READY_TIMEOUT_S = 120.0
_FORWARD_TIMEOUT = aiohttp.ClientTimeout(total=20.0)
_SCRAPE_TIMEOUT = aiohttp.ClientTimeout(total=2.0)
_REMEMBERED = 100_000  # participants whose worker is remembered (oldest forgotten first)


class IngestPoolError(ServiceError):
    """The ingest processes could not be started (the message says why)."""


class IngestPool:
    """Starts, watches and stops ``processes`` ingest workers and forwards WHIP requests to them."""

    def __init__(self, *, processes: int, cors_origin: str = "*") -> None:
        if processes < 1:
            raise ValueError("an ingest pool needs at least one process")
        self.processes = processes
        self.runtime_dir = Path(tempfile.gettempdir())  # a fresh folder of its own from start()
        self._identity = WorkerIdentity(index=-1, runtime_dir=self.runtime_dir)  # reads the registry only
        self._cors_origin = cors_origin
        self._supervisor: WorkerSupervisor | None = None
        self._relay: RelayServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._assigned: OrderedDict[str, int] = OrderedDict()
        self._turn = 0

    def _command(self, index: int, port: int) -> list[str]:
        return [
            sys.executable, "-m", "services.cli", "up", "--ingest-worker", str(index),
            "--runtime-dir", str(self.runtime_dir), "--port", str(port),
        ]  # fmt: skip

    @property
    def relay_path(self) -> Path:
        return self.runtime_dir / RELAY_SOCKET

    async def start(self, transports: Transports) -> None:
        """Serve the relay into ``transports`` and start the workers (:meth:`wait_ready` waits for them)."""
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="classpulse-up-"))
        self._identity = WorkerIdentity(index=-1, runtime_dir=self.runtime_dir)
        supervisor = WorkerSupervisor(
            workers=self.processes, host="127.0.0.1", port=0, runtime_dir=self.runtime_dir,
            command=lambda index: self._command(index, supervisor.port), banner=False,
        )  # fmt: skip
        self._supervisor = supervisor
        self._relay = RelayServer(
            path=self.relay_path, media=transports.media, events=transports.events, publishes=transports.publishes
        )
        await self._relay.start()
        self._http = aiohttp.ClientSession(timeout=_FORWARD_TIMEOUT)
        self._task = spawn(supervisor.run(), name="up-ingest-workers")

    def send_rate(self, fps: float | None) -> None:
        """Every ingest process samples video at ``fps`` from now (None: at its own rate)."""
        if self._relay is not None:
            self._relay.send_rate(RateRecord(fps=fps))

    async def wait_ready(self) -> None:
        """Return once every worker serves (they start while the main process loads its models)."""
        supervisor, task = self._supervisor, self._task
        assert supervisor is not None and task is not None, "start() first"
        deadline = asyncio.get_running_loop().time() + _READY_TIMEOUT_S
        while not supervisor.ready():
            if task.done():
                raise IngestPoolError("the ingest processes stopped while starting; see their log above")
            if asyncio.get_running_loop().time() > deadline:
                raise IngestPoolError(f"the ingest processes did not start within {_READY_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.05)
        log.info("classpulse up ingest -> %d processes serving", self.processes)

    async def close(self) -> None:
        if self._supervisor is None:
            return
        self._supervisor.stop()
        self._supervisor = None
        if self._task is not None:
            with suppress(asyncio.CancelledError, Exception):
                await self._task  # stops the workers (SIGTERM, then kill after a grace period)
            self._task = None
        if self._relay is not None:
            await self._relay.close()
            self._relay = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def worker_for(self, session: str, participant: str) -> int:
        """The worker a publish of ``session/participant`` goes to: theirs, or the next in turn."""
        key = f"{session}/{participant}"
        index = self._assigned.get(key)
        if index is None:
            index, self._turn = self._turn, (self._turn + 1) % self.processes
            if len(self._assigned) >= _REMEMBERED:
                self._assigned.popitem(last=False)
        self._assigned[key] = index
        self._assigned.move_to_end(key)
        return index

    def worker_ports(self) -> list[int]:
        """Private loopback ports of the workers that are serving now."""
        ports = (self._identity.private_port_of(i) for i in range(self.processes))
        return [p for p in ports if p is not None]

    async def forward(self, request: web.Request) -> web.StreamResponse:
        """Answer a WHIP request (any method) by the worker that owns it."""
        resource = request.match_info.get("resource")
        index = owner_of(resource) if resource else None
        if index is None:
            index = self.worker_for(request.match_info["session"], request.match_info["participant"])
        port = self._identity.private_port_of(index) if 0 <= index < self.processes else None
        if port is None or self._http is None:
            return self._unavailable(resource)
        try:
            return await forward_request(request, client=self._http, port=port, via="up")
        except (aiohttp.ClientError, TimeoutError):
            log.warning("classpulse up ingest -> worker %d unreachable", index)
            return self._unavailable(resource)

    def _unavailable(self, resource: str | None) -> web.Response:
        if resource:
            return self._error(404, "no such WHIP session (its ingest process restarted); publish again with POST")
        return self._error(503, "the ingest process for this participant is restarting; publish again in a few s")

    def _error(self, status: int, message: str) -> web.Response:
        headers = {"Access-Control-Allow-Origin": self._cors_origin, "Retry-After": "2"}
        return web.Response(status=status, text=message + "\n", headers=headers)

    async def scrape(self) -> list[str]:
        """Every serving worker's ``/metrics`` text (a worker that does not answer in time is left out)."""
        if self._http is None:
            return []
        http = self._http

        async def one(port: int) -> str | None:
            try:
                async with http.get(f"http://127.0.0.1:{port}/metrics", timeout=_SCRAPE_TIMEOUT) as resp:
                    return await resp.text() if resp.status == 200 else None
            except (aiohttp.ClientError, TimeoutError):
                return None

        texts = await asyncio.gather(*(one(p) for p in self.worker_ports()))
        return [t for t in texts if t is not None]
