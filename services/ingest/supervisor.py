"""The parent of ``classpulse ingest --workers N``: start, watch and stop N worker processes.

The supervisor reserves the public port (bound with ``SO_REUSEPORT``, never listening,
so ``--port 0`` gives every worker the same port), creates the runtime directory that
holds the workers' registry, restarts a worker that dies, and on SIGTERM/SIGINT (handled by
``shared.service.run_service``, which calls :meth:`WorkerSupervisor.stop`) stops all workers
and returns once they have stopped. A worker that keeps dying right after start
(``CRASH_LOOP`` times in a row) stops the whole service with an error.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shared.log import get_logger
from shared.service import ServiceError

log = get_logger(__name__)

CRASH_LOOP = 5
_QUICK_EXIT_S = 10.0
_READY_TIMEOUT_S = 120.0
_STOP_TIMEOUT_S = 15.0


class SupervisorError(ServiceError):
    """The workers could not be started or kept running; the message says why (exit status 1)."""


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]
    started: float
    quick_exits: int = 0
    restarts: int = field(default=0)


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) ``host:port`` with SO_REUSEPORT; port 0 picks a free port."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SupervisorError(f"cannot serve on {host}:{port} ({exc.strerror}); choose another --port") from exc
    return sock


class WorkerSupervisor:
    """Run ``workers`` ingest worker processes on one shared port until a signal arrives."""

    def __init__(
        self,
        *,
        workers: int,
        host: str,
        port: int,
        runtime_dir: Path | None = None,
        command: Callable[[int], list[str]] | None = None,
        banner: bool = True,
    ) -> None:
        """``command(index)`` starts worker ``index`` (default: ``classpulse ingest --worker-index``);
        ``banner``: print the listening line once every worker is up."""
        self.workers = workers
        self._custom_command = command
        self._banner = banner
        self.host = host
        self._reserved = reserve_port(host, port)
        self.port: int = self._reserved.getsockname()[1]
        self._own_dir = runtime_dir is None
        self.runtime_dir = runtime_dir or Path(tempfile.mkdtemp(prefix="classpulse-ingest-"))
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.runtime_dir.glob("worker-*.json"):  # a previous run's workers are gone
            stale.unlink()
        self._children: dict[int, _Worker] = {}
        self._stopping = False

    def _command(self, index: int) -> list[str]:
        if self._custom_command is not None:
            return self._custom_command(index)
        return [
            sys.executable, "-m", "services.cli", "ingest", "--host", self.host, "--port", str(self.port),
            "--worker-index", str(index), "--runtime-dir", str(self.runtime_dir),
        ]  # fmt: skip

    def _start(self, index: int, *, quick_exits: int = 0, restarts: int = 0) -> None:
        self.registry(index).unlink(missing_ok=True)
        proc = subprocess.Popen(self._command(index), start_new_session=True)  # signals come from us only
        self._children[index] = _Worker(index, proc, time.monotonic(), quick_exits, restarts)
        log.info("ingest worker %d -> started (pid %d)", index, proc.pid)

    def registry(self, index: int) -> Path:
        return self.runtime_dir / f"worker-{index}.json"

    def _ready(self) -> bool:
        for index, worker in self._children.items():
            try:
                if json.loads(self.registry(index).read_text())["pid"] != worker.proc.pid:
                    return False
            except (OSError, ValueError, KeyError):
                return False
        return True

    def ready(self) -> bool:
        """Every worker has registered its private port (after :meth:`run` started them)."""
        return bool(self._children) and self._ready()

    def stop(self) -> None:
        """Ask :meth:`run` to stop the workers and return (safe to call from a signal handler)."""
        self._stopping = True

    async def run(self) -> None:
        """Supervise until :meth:`stop`; raises :class:`SupervisorError` when workers cannot run."""
        try:
            for index in range(self.workers):
                self._start(index)
            deadline = time.monotonic() + _READY_TIMEOUT_S
            while not self._ready() and not self._stopping:
                self._check()
                if time.monotonic() > deadline:
                    raise SupervisorError(f"workers did not start within {_READY_TIMEOUT_S:.0f} s; see their log")
                await asyncio.sleep(0.1)
            if not self._stopping and self._banner:
                print(f"ingest listening on http://{self.host}:{self.port}/join ({self.workers} workers)", flush=True)
            while not self._stopping:
                self._check()
                await asyncio.sleep(0.2)
        finally:
            await asyncio.to_thread(self._stop_all)  # up to _STOP_TIMEOUT_S; the loop keeps serving meanwhile
            self._reserved.close()
            if self._own_dir:
                shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def _check(self) -> None:
        """Restart every worker that has exited (unless it keeps dying at once)."""
        for index, worker in list(self._children.items()):
            code = worker.proc.poll()
            if code is None or self._stopping:
                continue
            quick = time.monotonic() - worker.started < _QUICK_EXIT_S
            quick_exits = worker.quick_exits + 1 if quick else 0
            log.warning("ingest worker %d -> exited (status %d), restarting", index, code)
            if quick_exits >= CRASH_LOOP:
                raise SupervisorError(
                    f"ingest worker {index} exited {CRASH_LOOP} times right after starting; see its log above"
                )
            self._start(index, quick_exits=quick_exits, restarts=worker.restarts + 1)

    def _stop_all(self) -> None:
        for worker in self._children.values():
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        for worker in self._children.values():
            try:
                worker.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("ingest worker %d -> killed (did not stop in time)", worker.index)
                worker.proc.kill()
                worker.proc.wait()
        log.info("ingest workers -> stopped")
