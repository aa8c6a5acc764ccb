"""Ingest workers: owner routing between two in-process workers (memory transport) and CLI errors."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from services.cli import main
from services.ingest.settings import IngestSettings
from services.ingest.supervisor import SupervisorError, reserve_port
from services.ingest.worker import WorkerIdentity, create_worker_app, owner_of
from shared.metrics import Metrics
from shared.settings import CommonSettings
from shared.tokens import issue_token
from shared.transport.factory import Transports
from shared.transport.memory import MemoryEventBus, MemoryLiveBus, MemoryMediaBus

pytestmark = pytest.mark.unit

SECRET = "unit-secret"


async def _worker(index: int, runtime: Path) -> tuple[web.AppRunner, int]:
    """One worker app on its private port only, registered like a real worker."""
    identity = WorkerIdentity(index=index, runtime_dir=runtime)
    transports = Transports(media=MemoryMediaBus(maxlen=8), events=MemoryEventBus(), live=MemoryLiveBus())
    app = create_worker_app(
        identity=identity,
        settings=IngestSettings(),
        common=CommonSettings(token_secret=SECRET),  # type: ignore[arg-type]
        transports=transports,
        metrics=Metrics(CollectorRegistry()),
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    identity.register(private_port=port)
    return runner, port


@pytest.fixture
async def two_workers(tmp_path: Path) -> AsyncIterator[tuple[int, int]]:
    first, port0 = await _worker(0, tmp_path)
    second, port1 = await _worker(1, tmp_path)
    try:
        yield port0, port1
    finally:
        await first.cleanup()
        await second.cleanup()


def test_owner_is_read_from_the_resource_id() -> None:
    assert owner_of("w1-abcdef") == 1
    assert owner_of("w12-abcdef") == 12
    assert owner_of("abcdef0123") is None
    assert owner_of(None) is None


async def test_a_request_on_another_workers_resource_is_answered_by_the_owner(two_workers: tuple[int, int]) -> None:
    port0, port1 = two_workers
    token = issue_token(secret=SECRET, session="s", participant="p", role="student")
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        info = await (await http.get(f"http://127.0.0.1:{port0}/ingest/worker")).json()
        assert info["worker"] == 0 and info["private_port"] == port0
        # worker 0 forwards to worker 1, whose WhipService answers (its own 404 text, with CORS)
        async with http.delete(f"http://127.0.0.1:{port0}/whip/s/p/w1-0123456789abcdef", headers=auth) as resp:
            assert resp.status == 404 and "already ended" in await resp.text()
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
        # the owner's auth check applies through the proxy
        async with http.delete(f"http://127.0.0.1:{port0}/whip/s/p/w1-0123456789abcdef") as resp:
            assert resp.status == 401 and "WWW-Authenticate" in resp.headers
        # a resource of a worker that is not registered: a clear 404 from the receiving worker
        async with http.delete(f"http://127.0.0.1:{port1}/whip/s/p/w7-0123456789abcdef", headers=auth) as resp:
            assert resp.status == 404 and "worker is gone" in await resp.text()


def test_several_workers_need_the_distributed_transport(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLASSPULSE_TRANSPORT", "memory")
    assert main(["ingest", "--port", "0", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "CLASSPULSE_TRANSPORT=distributed" in err and "--workers 1" in err and "Traceback" not in err


@pytest.mark.parametrize("value", ["0", "many", "65"])
def test_a_bad_worker_count_is_rejected(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", "--port", "0", "--workers", value]) == 2
    assert "--workers must be a number from 1 to 64 or 'auto'" in capsys.readouterr().err


def test_a_busy_port_is_reported_before_any_worker_starts() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SupervisorError, match="choose another --port"):
            reserve_port("127.0.0.1", port)


def test_the_reserved_port_is_shared_by_reuse_port_listeners() -> None:
    reserved = reserve_port("127.0.0.1", 0)
    port = reserved.getsockname()[1]
    try:
        workers = []
        for _ in range(2):  # what each worker's TCPSite(reuse_port=True) does
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen()
            workers.append(sock)
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        for sock in workers:
            sock.close()
    finally:
        reserved.close()
