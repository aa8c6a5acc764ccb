"""Run a real ``classpulse up`` subprocess on an ephemeral port for integration tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SECRET = "integration-test-secret"
REPO = Path(__file__).resolve().parents[2]
_URL = re.compile(r"ClassPulse is up: (http://\S+?)/ ")


@dataclass
class UpProcess:
    url: str
    proc: subprocess.Popen[str]
    log: Path

    def env(self) -> dict[str, str]:
        return up_env()


def up_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLASSPULSE_")}
    env["CLASSPULSE_TOKEN_SECRET"] = SECRET
    env["CLASSPULSE_LOG_LEVEL"] = "WARNING"
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def classpulse(*args: str) -> list[str]:
    return [sys.executable, "-m", "services.cli", *args]


@contextmanager
def classpulse_up(
    tmp: Path, *, startup_s: float = 90.0, env: dict[str, str] | None = None
) -> Iterator[UpProcess]:
    """Start ``classpulse up --port 0`` with extra settings ``env``; yields once it prints its URL; stops it
    with SIGINT."""
    log = tmp / "up.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            classpulse("up", "--host", "127.0.0.1", "--port", "0"),
            cwd=REPO,
            env={**up_env(), **(env or {})},
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + startup_s
            url = None
            while url is None:
                line = proc.stdout.readline()
                if not line:
                    raise AssertionError(f"classpulse up exited ({proc.poll()}): {log.read_text()[-2000:]}")
                match = _URL.search(line)
                url = match.group(1) if match else None
                if time.monotonic() > deadline:
                    raise AssertionError("classpulse up did not start in time")
            yield UpProcess(url=url, proc=proc, log=log)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
