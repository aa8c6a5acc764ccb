"""``shared.supervise``: retry with bounded backoff, restart after a crash, health, give up -> exit 3."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.health_http import add_health_routes, health_wsgi
from shared.service import ServiceContext, run_service
from shared.settings import CommonSettings
from shared.supervise import EXIT_UNRECOVERABLE, HealthRegistry, SupervisionPolicy, Supervisor, is_transient

pytestmark = pytest.mark.unit

FAST = SupervisionPolicy(backoff_initial_s=0.01, backoff_max_s=0.04, settle_s=0.1, give_up_s=5.0)


def test_backoff_doubles_up_to_its_bound_with_jitter() -> None:
    policy = SupervisionPolicy(backoff_initial_s=0.1, backoff_max_s=1.0)
    rng = random.Random(1)
    delays = [policy.backoff(n, rng) for n in range(1, 9)]
    ceilings = [min(1.0, 0.1 * 2 ** (n - 1)) for n in range(1, 9)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert max(delays) <= 1.0 and len({round(d, 6) for d in delays}) == len(delays)


def test_broker_errors_are_transient_bugs_are_not() -> None:
    from aiokafka.errors import CommitFailedError, KafkaConnectionError

    assert is_transient(RedisTimeoutError("Timeout reading"))
    assert is_transient(KafkaConnectionError()) and is_transient(CommitFailedError())
    assert is_transient(ConnectionResetError()) and is_transient(TimeoutError())
    assert not is_transient(ValueError("bug")) and not is_transient(KeyError("x"))


async def test_a_transient_error_is_retried_and_the_task_reads_unhealthy_until_it_runs_again() -> None:
    health = HealthRegistry(service="t")
    restarts: list[tuple[str, bool]] = []
    sup = Supervisor(health=health, policy=FAST, count_restart=lambda t, tr: restarts.append((t, tr)))
    failures = 3
    runs = 0
    recovered = asyncio.Event()

    async def reader() -> None:
        nonlocal runs
        runs += 1
        if runs <= failures:
            raise RedisTimeoutError("Timeout reading from redis")
        recovered.set()
        await asyncio.sleep(30)

    task = sup.spawn("reader", reader)
    await asyncio.sleep(0.005)
    assert health.tasks()["reader"].state == "retrying" and not health.healthy()
    await asyncio.wait_for(recovered.wait(), 2)
    assert not health.healthy()  # restarted, not settled yet
    await asyncio.sleep(FAST.settle_s + 0.05)
    assert health.healthy() and health.ready()
    report = health.report()
    assert report["status"] == "ok" and report["tasks"]["reader"] == {"state": "running", "restarts": 3}
    assert restarts == [("reader", True)] * 3
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert health.tasks()["reader"].state == "stopped"


async def test_a_crash_is_logged_with_its_traceback_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    health = HealthRegistry(service="t")
    sup = Supervisor(health=health, policy=FAST)
    runs = 0

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise ValueError("a bug")

    with caplog.at_level(logging.WARNING, logger="shared.supervise"):
        await asyncio.wait_for(sup.spawn("loop", loop), 2)
    assert runs == 2 and health.tasks()["loop"].state == "stopped"
    crash = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert len(crash) == 1 and crash[0].exc_info is not None and crash[0].levelno == logging.ERROR


async def test_a_task_down_past_give_up_calls_on_fatal_once_with_one_clear_message() -> None:
    health = HealthRegistry(service="t")
    fatal: list[str] = []
    policy = SupervisionPolicy(backoff_initial_s=0.01, backoff_max_s=0.02, settle_s=0.05, give_up_s=0.2)
    sup = Supervisor(health=health, policy=policy, on_fatal=fatal.append)

    async def never() -> None:
        raise ConnectionRefusedError("refused")

    await asyncio.wait_for(sup.spawn("history", never), 3)
    assert len(fatal) == 1
    assert fatal[0].startswith("task history could not recover for 0.2 s (last error: ConnectionRefusedError)")
    assert health.tasks()["history"].state == "failed" and health.report()["status"] == "unhealthy"


async def test_a_task_reporting_itself_degraded_counts_as_down_and_gives_up_too() -> None:
    health = HealthRegistry(service="t")
    fatal: list[str] = []
    policy = SupervisionPolicy(backoff_initial_s=0.01, backoff_max_s=0.02, settle_s=0.01, give_up_s=0.3)
    sup = Supervisor(health=health, policy=policy, on_fatal=fatal.append)
    broker_back = asyncio.Event()

    async def leases() -> None:
        entry = health.task("leases")
        while True:
            if broker_back.is_set():
                entry.ok()
            else:
                entry.degraded(RedisTimeoutError("x"))
            await asyncio.sleep(0.01)

    task = sup.spawn("leases", leases)
    watch = sup.watch_loop()
    await asyncio.sleep(0.1)
    assert health.tasks()["leases"].state == "retrying" and not health.healthy()
    broker_back.set()
    await asyncio.sleep(0.05)
    assert health.healthy()
    broker_back.clear()
    for _ in range(40):  # the loop watch notices the bound passing (the task itself never raises)
        await asyncio.sleep(0.05)
        if fatal:
            break
    assert fatal and "task leases could not recover" in fatal[0]
    task.cancel()
    watch.cancel()
    await asyncio.gather(task, watch, return_exceptions=True)


async def test_health_routes_answer_503_with_per_task_json_while_a_task_is_down() -> None:
    health = HealthRegistry(service="gateway")
    app = web.Application()
    add_health_routes(app, health=health, extra=lambda: {"publishers": 2})
    entry = health.task("gateway-history")
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/healthz")
        assert resp.status == 200  # starting: alive, not ready
        ready = await client.get("/readyz")
        assert ready.status == 503 and (await ready.json())["status"] == "starting"
        entry.degraded(ConnectionError())
        resp = await client.get("/healthz")
        body = await resp.json()
        assert resp.status == 503 and body["status"] == "unhealthy" and body["publishers"] == 2
        assert body["tasks"]["gateway-history"]["state"] == "retrying"
        assert body["tasks"]["gateway-history"]["error"] == "ConnectionError"
        entry.ok()
        assert (await client.get("/healthz")).status == 200 and (await client.get("/readyz")).status == 200


def test_the_metrics_server_answers_health_routes_and_passes_the_rest_on() -> None:
    health = HealthRegistry(service="inference")
    health.task("inference-reader").degraded(RedisTimeoutError())
    statuses: list[str] = []

    def metrics_app(environ: dict[str, object], start_response: object) -> list[bytes]:
        return [b"metrics"]

    app = health_wsgi(health, metrics_app)
    body = b"".join(app({"PATH_INFO": "/healthz"}, lambda status, headers: statuses.append(status)))
    assert statuses == ["503 Service Unavailable"] and b'"inference-reader"' in body
    assert b"".join(app({"PATH_INFO": "/metrics"}, lambda s, h: None)) == b"metrics"


def test_a_service_that_cannot_recover_exits_3_with_one_error_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CLASSPULSE_TASK_GIVE_UP_S", "1")
    monkeypatch.setenv("CLASSPULSE_TASK_BACKOFF_INITIAL_MS", "20")
    monkeypatch.setenv("CLASSPULSE_TASK_BACKOFF_MAX_MS", "50")
    cleaned: list[bool] = []

    async def main(_: CommonSettings, service: ServiceContext) -> None:
        async def reader() -> None:
            raise RedisTimeoutError("Timeout reading from 127.0.0.1:6379")

        service.supervisor.spawn("inference-reader", reader)
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.append(True)

    assert run_service("t", settings=lambda c: c, main=main) == EXIT_UNRECOVERABLE
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert errors == [
        "error: task inference-reader could not recover for 1 s (last error: TimeoutError); "
        "exiting so the orchestrator restarts the service"
    ]
    assert "127.0.0.1:6379" not in "\n".join(err)  # the error's text (internals) is never printed
    assert cleaned == [True]


async def test_a_task_with_its_own_give_up_bound_is_held_to_it_and_give_up_ends_once() -> None:
    health = HealthRegistry(service="t")
    fatal: list[str] = []
    sup = Supervisor(health=health, policy=SupervisionPolicy(give_up_s=0.1), on_fatal=fatal.append)
    entry = health.task("aggregator-faust")
    entry.give_up_s = 0.4  # the task watches itself (a stall watchdog) and ends the service on its own terms
    entry.degraded(TimeoutError())
    await asyncio.sleep(0.2)
    assert not sup._check_give_up() and not fatal  # past the policy's bound, inside its own
    await asyncio.sleep(0.3)
    assert sup._check_give_up() and fatal == [sup.fatal] and "could not recover for 0.4 s" in fatal[0]
    sup.give_up("a second reason")
    assert fatal == [sup.fatal] and len(fatal) == 1
