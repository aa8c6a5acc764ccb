"""A private Redis or Kafka broker for one test, which it may pause (SIGSTOP) and resume (SIGCONT).

The session's shared brokers (``CLASSPULSE_TEST_*``) are never paused: a test that needs a broker
outage starts its own here, on a free loopback port, from the same binaries ``./dev`` uses
(``redis-server``; the Kafka jars under ``.cache/kafka-libs``), and stops it afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KAFKA_LIBS = REPO / ".cache" / "kafka-libs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, within: float, proc: subprocess.Popen[bytes], what: str) -> None:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} within {within} s")


class PausableBroker:
    """A broker process the test owns: :meth:`pause` freezes it, :meth:`resume` lets it run again."""

    def __init__(self, proc: subprocess.Popen[bytes], address: str) -> None:
        self.proc = proc
        self.address = address

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@contextlib.contextmanager
def private_redis() -> Iterator[PausableBroker]:
    """A redis-server on a free port (no persistence); ``address`` is its URL."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed (./dev setup installs it)"
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    broker = PausableBroker(proc, f"redis://127.0.0.1:{port}/0")
    try:
        _wait_port(port, 10, proc, "redis-server")
        yield broker
    finally:
        broker.stop()


@contextlib.contextmanager
def private_kafka(workdir: Path) -> Iterator[PausableBroker]:
    """A single-node KRaft Kafka on free ports, data under ``workdir``; ``address`` is its bootstrap."""
    assert (KAFKA_LIBS / ".complete").exists(), "Kafka jars missing: run ./dev setup (fills .cache/kafka-libs)"
    port, ctrl = free_port(), free_port()
    data = workdir / "kafka-data"
    props = workdir / "server.properties"
    props.write_text(
        "\n".join([
            "process.roles=broker,controller", "node.id=1", f"controller.quorum.voters=1@127.0.0.1:{ctrl}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{ctrl}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}", "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT", f"log.dirs={data}", "num.partitions=1",
            "offsets.topic.replication.factor=1", "offsets.topic.num.partitions=1",
            "transaction.state.log.replication.factor=1", "transaction.state.log.min.isr=1",
            "group.initial.rebalance.delay.ms=0", "auto.create.topics.enable=true",
        ]) + "\n"
    )
    java = ["java", "-Xms128m", "-Xmx512m", f"-Dkafka.logs.dir={workdir}", "-cp", f"{KAFKA_LIBS}/*"]
    subprocess.run(
        [*java, "kafka.tools.StorageTool", "format", "-t", "classpulse-test-cluster", "-c", str(props),
         "--ignore-formatted"],
        check=True, capture_output=True, timeout=120,
    )
    log = (workdir / "kafka.out").open("wb")
    proc = subprocess.Popen([*java, "kafka.Kafka", str(props)], stdout=log, stderr=subprocess.STDOUT)
    broker = PausableBroker(proc, f"127.0.0.1:{port}")
    try:
        _wait_port(port, 120, proc, "kafka")
        yield broker
    finally:
        broker.stop()
        log.close()
