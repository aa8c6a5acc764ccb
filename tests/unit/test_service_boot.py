"""``shared.service.run_service``: one boot path (settings check, clean stop on a signal, exit codes)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shared.service import Runtime, ServiceContext, ServiceError, run_service
from shared.settings import CommonSettings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def _common(common: CommonSettings) -> CommonSettings:
    return common


def test_an_unknown_variable_exits_2_before_the_service_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started: list[bool] = []

    async def main(_: CommonSettings, __: ServiceContext) -> None:
        started.append(True)

    monkeypatch.setenv("CLASSPULSE_LOG_LEVL", "DEBUG")
    assert run_service("t", settings=_common, main=main) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "did you mean CLASSPULSE_LOG_LEVEL" in err and not started


def test_a_service_error_is_one_line_with_its_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    async def main(_: CommonSettings, __: ServiceContext) -> None:
        raise ServiceError("cannot serve on 127.0.0.1:1 (Permission denied)", code=3)

    assert run_service("t", settings=_common, main=main, runtime=lambda _: Runtime()) == 3
    assert capsys.readouterr().err == "error: cannot serve on 127.0.0.1:1 (Permission denied)\n"


def test_sigterm_cancels_the_service_which_cleans_up_and_exits_0() -> None:
    closed: list[str] = []

    async def main(_: CommonSettings, __: ServiceContext) -> None:
        asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
        try:
            await asyncio.sleep(30)
        finally:
            closed.append("transports")

    assert run_service("t", settings=_common, main=main) == 0
    assert closed == ["transports"]


def test_a_registered_stop_callback_stops_gracefully_instead() -> None:
    async def main(_: CommonSettings, service: ServiceContext) -> int:
        stop = asyncio.Event()
        service.on_stop(stop.set)
        asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGINT)
        await stop.wait()
        return 0

    assert run_service("t", settings=_common, main=main) == 0


def test_one_env_file_serves_every_service() -> None:
    """`classpulse ingest` accepts another service's variable (the root CLI registers them all)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLASSPULSE_")}
    env.update(CLASSPULSE_INFERENCE_TORCH_THREADS="1", CLASSPULSE_AGGREGATOR_ENGINE="plain")
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "ingest", "--workers", "0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "--workers must be a number" in done.stderr and "unknown" not in done.stderr


@pytest.mark.parametrize("service", ["ingest", "inference", "aggregator", "gateway"])
def test_services_need_no_composition_root_to_check_settings(service: str) -> None:
    """The all-settings check lives in shared/; no service imports the CLI's composition roots."""
    import ast

    for path in (REPO / "services" / service).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not {"services.cli", "services.core_commands"} & set(names), f"{path} imports {names}"


_HANGING_STOP = """
import asyncio, os, signal, sys, threading, time
from shared.service import run_service

async def main(_, service):
    asyncio.get_running_loop().call_later(0.2, os.kill, os.getpid(), signal.SIGTERM)
    if sys.argv[1] == "thread":  # the service stops, but a thread it started never ends
        threading.Thread(target=time.sleep, args=(3600,), name="stuck-close").start()
        stop = asyncio.Event()
        service.on_stop(stop.set)
        await stop.wait()
        return
    while True:  # a close that never returns: it even swallows the cancellation
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass

sys.exit(run_service("t", settings=lambda c: c, main=main))
"""


@pytest.mark.parametrize("hang", ["loop", "thread"])
def test_a_stop_that_never_finishes_still_ends_the_process_within_the_stop_timeout(hang: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLASSPULSE_")}
    env.update(CLASSPULSE_STOP_TIMEOUT_S="2", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", _HANGING_STOP, hang], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "stop timed out" in line]
    assert warnings and "CLASSPULSE_STOP_TIMEOUT_S=2" in warnings[-1], done.stderr
    assert "error:" not in done.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_redis_down_at_start_up_is_one_line_naming_it_without_its_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _free_port()  # nothing listens there: a real refused connection
    monkeypatch.setenv("CLASSPULSE_REDIS_URL", f"redis://:hunter2@127.0.0.1:{port}/0")

    async def main(common: CommonSettings, __: ServiceContext) -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(common.redis_url.get_secret_value())
        try:
            try:
                await client.ping()
            except Exception as exc:
                raise RuntimeError("transports failed to start") from exc  # wrapped, as a start-up would
        finally:
            await client.aclose()

    assert run_service("t", settings=_common, main=main) == 3
    err = capsys.readouterr().err
    assert err == (
        f"error: cannot reach Redis at redis://127.0.0.1:{port}/0; start it (for a local try: "
        "deploy/local/services.sh start) or point CLASSPULSE_REDIS_URL at it\n"
    )


def test_kafka_down_at_start_up_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bootstrap = f"127.0.0.1:{_free_port()}"
    monkeypatch.setenv("CLASSPULSE_KAFKA_BOOTSTRAP", bootstrap)

    async def main(common: CommonSettings, __: ServiceContext) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=common.kafka_bootstrap)
        try:
            await producer.start()
        finally:
            await producer.stop()

    assert run_service("t", settings=_common, main=main) == 3
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (
        f"error: cannot reach Kafka at {bootstrap}; start it (for a local try: deploy/local/services.sh start) "
        "or point CLASSPULSE_KAFKA_BOOTSTRAP at it"
    )


def test_other_errors_are_not_read_as_a_broker_down() -> None:
    async def main(_: CommonSettings, __: ServiceContext) -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        run_service("t", settings=_common, main=main)
