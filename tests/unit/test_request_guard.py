"""The request guard: aiohttp parser errors and handler failures become one line (counted, bounded logs);
WHIP publishes are rate limited per token and per address."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from services.ingest.app import create_ingest_app
from services.ingest.settings import IngestSettings
from shared.http_guard import BoundedLog, GuardedAppRunner, access_logger, add_request_guard
from shared.metrics import Metrics
from shared.settings import CommonSettings
from shared.testkit.fuzz import INTERNAL, raw_requests, send_raw
from shared.tokens import issue_token
from shared.transport.factory import build_transports

pytestmark = pytest.mark.unit
SECRET = "unit-test-secret"


def _count(metrics: Metrics, name: str, **labels: str) -> float:
    return sum(
        s.value
        for f in metrics.registry.collect()
        for s in f.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_bounded_log_allows_one_line_per_reason_per_interval() -> None:
    now = [0.0]
    log = BoundedLog(every_s=60, clock=lambda: now[0])
    assert log.allow("a") == 0 and log.allow("b") == 0
    assert [log.allow("a") for _ in range(5)] == [None] * 5
    now[0] = 61
    assert log.allow("a") == 5  # the next line says how many were left out


async def test_parser_errors_are_one_line_without_the_input_counted_and_logged_boundedly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics(CollectorRegistry())
    app = web.Application()
    add_request_guard(app, service="gateway", metrics=metrics)
    runner = GuardedAppRunner(app, access_log_class=access_logger(redact_pii=True), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        with caplog.at_level(logging.INFO):
            first = await send_raw("127.0.0.1", port, raw_requests())
            again = await send_raw("127.0.0.1", port, raw_requests())
    finally:
        await runner.cleanup()
    for report in (first, again):
        assert report.sent == len(raw_requests()) and set(report.statuses) == {400}, report.statuses
        assert not report.problems(), report.problems()  # one line, no echo, no internal text
    counted = _count(metrics, "classpulse_malformed_requests_total", service="gateway")
    assert counted == 2 * len(raw_requests())
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    lines = [r for r in caplog.records if r.getMessage().startswith("malformed request")]
    assert 1 <= len(lines) <= len(raw_requests())  # the second round is counted, not logged again


async def test_a_handler_failure_is_one_line_500_without_its_text_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics(CollectorRegistry())
    app = web.Application()
    add_request_guard(app, service="gateway", metrics=metrics)

    async def broken(_: web.Request) -> web.Response:
        raise AttributeError("'NoneType' object has no attribute 'role'")

    app.router.add_get("/broken", broken)
    async with TestClient(TestServer(app)) as client:
        with caplog.at_level(logging.ERROR):
            bodies = []
            for _ in range(5):
                resp = await client.get("/broken")
                assert resp.status == 500
                bodies.append(await resp.text())
    assert all(b.strip().count("\n") == 0 and not INTERNAL.search(b) for b in bodies), bodies
    assert _count(metrics, "classpulse_malformed_requests_total", reason="internal") == 5
    logged = [r for r in caplog.records if "request handler" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None


async def test_whip_publishes_past_the_token_rate_get_429_with_retry_after() -> None:
    common = CommonSettings(token_secret=SECRET)  # type: ignore[arg-type]
    metrics = Metrics(CollectorRegistry())
    settings = IngestSettings(whip_rate_per_token=1.0, whip_rate_burst_s=2.0, whip_rate_per_address=0.0)
    app = create_ingest_app(
        settings=settings, common=common, transports=build_transports(common, metrics=metrics), metrics=metrics
    )
    token = issue_token(secret=SECRET, session="s1", participant="p1", role="student")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
    async with TestClient(TestServer(app)) as client:
        statuses = [(await client.post("/whip/s1/p1", data="v=1", headers=headers)).status for _ in range(3)]
        assert statuses == [400, 400, 429]  # the first two reach validation (a bad offer), the third is limited
        resp = await client.post("/whip/s1/p1", data="v=1", headers=headers)
        assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
        assert resp.headers["Access-Control-Allow-Origin"] == settings.cors_origin
        assert (await resp.text()).strip().startswith("too many WHIP publish requests from this token")
        assert (await client.options("/whip/s1/p1")).status == 204  # preflights are not publishes
        other = issue_token(secret=SECRET, session="s1", participant="p2", role="student")
        fresh = await client.post("/whip/s1/p2", data="v=1", headers={**headers, "Authorization": f"Bearer {other}"})
        assert fresh.status == 400
    assert _count(metrics, "classpulse_rate_limited_total", service="ingest", limit="token") == 2


async def test_whip_publishes_past_the_address_rate_get_429() -> None:
    common = CommonSettings(token_secret=SECRET)  # type: ignore[arg-type]
    metrics = Metrics(CollectorRegistry())
    settings = IngestSettings(whip_rate_per_token=0.0, whip_rate_per_address=1.0, whip_rate_burst_s=1.0)
    app = create_ingest_app(
        settings=settings, common=common, transports=build_transports(common, metrics=metrics), metrics=metrics
    )
    async with TestClient(TestServer(app)) as client:
        first = await client.post("/whip/s1/p1", data="v=0")
        second = await client.post("/whip/s1/p2", data="v=0")
        assert first.status == 401 and second.status == 429
        assert "from this address" in await second.text()
