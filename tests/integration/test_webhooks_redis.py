"""End-of-session webhooks against a real HTTP receiver and a real Redis store.

The receiver (an aiohttp server in the test) fails, times out, then succeeds; the signature is checked
with the documented algorithm (HMAC-SHA256 over ``"{timestamp}.{body}"``, written out here, not imported),
the idempotency key stays the same across attempts, a receiver that never answers 2xx is dead-lettered,
and a pending delivery survives a gateway restart (it lives in Redis).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from services.gateway.app import create_gateway_app
from services.gateway.context import GATEWAY
from services.gateway.settings import GatewaySettings
from services.gateway.webhooks.redis_store import RedisWebhookStore
from shared.contracts.events import LifecycleEvent
from shared.contracts.topics import ALERTS, LIFECYCLE, SCORES
from shared.contracts.webhooks import WebhookPayload
from shared.metrics import Metrics
from shared.settings import CommonSettings
from shared.testkit.web import served
from shared.transport.factory import build_transports
from shared.transport.typed import EventPublisher
from tests.unit.gateway_fixtures import SECRET, START, alert, score, token

pytestmark = pytest.mark.integration

FAST = {"webhook_timeout_s": 0.5, "webhook_backoff_s": 0.2, "webhook_backoff_max_s": 1.0, "webhook_settle_s": 0.2}


@dataclass
class Receiver:
    """Answers from a script: an int status, or 'hang' (longer than the gateway's timeout); then 200."""

    script: list[int | str]
    seen: list[tuple[float, dict[str, str], bytes, int | str]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        action: int | str = self.script.pop(0) if self.script else 200
        self.seen.append((time.time(), dict(request.headers), body, action))
        if action == "hang":
            await asyncio.sleep(3.0)
            return web.Response(status=200)
        return web.Response(status=int(action))

    def delivered(self) -> list[tuple[float, dict[str, str], bytes, int | str]]:
        return [s for s in self.seen if s[3] == 200]


@asynccontextmanager
async def receiver(script: list[int | str]) -> AsyncIterator[Receiver]:
    rec = Receiver(script=script)
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    async with served(app) as base:
        rec.url = f"{base}/hook"
        yield rec


@asynccontextmanager
async def gateway(redis_url: str, prefix: str, **settings: object) -> AsyncIterator[tuple[TestClient, Metrics]]:
    common = CommonSettings(token_secret=SECRET)  # type: ignore[arg-type]
    metrics = Metrics(CollectorRegistry())
    app = create_gateway_app(
        settings=GatewaySettings(**{**FAST, **settings}),  # type: ignore[arg-type]
        common=common, transports=build_transports(common, metrics=metrics), metrics=metrics,
        webhook_store=RedisWebhookStore(url=redis_url, prefix=prefix),
    )
    async with TestClient(TestServer(app)) as client:
        yield client, metrics


def _bearer(session: str, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(session, role)}"}  # type: ignore[arg-type]


def _documented_signature(secret: str, timestamp: str, body: bytes) -> str:
    return "v1=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


async def _until(check: object, what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _class(client: TestClient, session: str) -> None:
    """Two students' scores, one joins late; then the platform ends the session."""
    bus = client.server.app[GATEWAY].events
    assert bus is not None
    pub = EventPublisher(bus=bus, topic=LIFECYCLE)  # ingest's 'joined'
    await pub.publish(LifecycleEvent(event_id=f"{session}/a/joined", session=session, participant="a",
                                     kind="joined", ts=START))
    scores = EventPublisher(bus=bus, topic=SCORES)
    for seq in range(50):
        await scores.publish(score(session, "a", seq))
        if seq >= 25:
            await scores.publish(score(session, "b", seq))
    resp = await client.post(f"/api/sessions/{session}/end", headers=_bearer(session, "platform"))
    assert resp.status == 202, await resp.text()


async def test_session_end_webhook_retries_a_failing_then_slow_receiver_and_verifies(
    redis_url: str, unique: str
) -> None:
    session = f"wh-{unique}"
    async with receiver([500, "hang", 200]) as rec, gateway(redis_url, f"test:wh:{unique}") as (client, metrics):
        resp = await client.post(f"/api/sessions/{session}/webhooks", headers=_bearer(session, "teacher"),
                                 json={"url": rec.url, "events": ["session.ended", "alert.raised"]})
        assert resp.status == 201, await resp.text()
        created = await resp.json()
        secret = created["secret"]
        listed = await (await client.get(f"/api/sessions/{session}/webhooks", headers=_bearer(session, "teacher")))\
            .json()
        assert [e["id"] for e in listed["endpoints"]] == [created["id"]] and "secret" not in listed["endpoints"][0]
        student = await client.post(f"/api/sessions/{session}/webhooks", headers=_bearer(session, "student"),
                                    json={"url": rec.url})
        assert student.status == 403
        bad = await client.post(f"/api/sessions/{session}/webhooks", headers=_bearer(session, "teacher"),
                                json={"url": "ftp://example.org/x"})
        assert bad.status == 400 and "http(s)" in (await bad.json())["error"]

        ended = time.time()
        await _class(client, session)
        await _until(lambda: rec.delivered(), "the session.ended delivery")
        attempts = [s for s in rec.seen if s[1].get("ClassPulse-Webhook-Event") == "session.ended"]
        assert [a[3] for a in attempts] == [500, "hang", 200]
        ids = {a[1]["ClassPulse-Webhook-Id"] for a in attempts}
        assert len(ids) == 1  # one idempotency key across the retries
        for _, headers, body, _ in attempts:  # every attempt is signed afresh with its own timestamp
            stamp = headers["ClassPulse-Webhook-Timestamp"]
            assert abs(time.time() - int(stamp)) < 300
            assert hmac.compare_digest(headers["ClassPulse-Webhook-Signature"],
                                       _documented_signature(secret, stamp, body))
            assert headers["ClassPulse-Webhook-Signature"] != _documented_signature("wrong", stamp, body)
        assert attempts[1][0] - attempts[0][0] >= 0.09  # backoff: half of 0.2 s at least
        payload = WebhookPayload.model_validate_json(attempts[-1][2])
        assert payload.id in ids and payload.event == "session.ended" and payload.session == session
        report = payload.report
        assert report is not None and report.timeline == []  # the timeline is fetched with /export
        assert report.attendance is not None
        assert set(report.attendance.participants) == {"a", "b"}
        assert report.attendance.participants["b"].first_joined == pytest.approx(5.0, abs=0.3)
        assert set(report.summary.participants) == {"a", "b"}
        print(f"\nsession.ended delivered {attempts[-1][0] - ended:.2f} s after the end request "
              f"(attempts: 500, timeout 0.5 s, 200)")

        def sample(name: str, **labels: str) -> float:
            return metrics.registry.get_sample_value(name, labels) or 0.0

        # the receiver records the 200 before the sender reads it: wait for the sender to count it
        await _until(lambda: sample("classpulse_webhook_deliveries_total", event="session.ended",
                                    outcome="delivered") == 1, "the delivered count")
        assert sample("classpulse_webhook_deliveries_total", event="session.ended", outcome="retried") == 2
        assert sample("classpulse_webhook_attempts_total", result="timeout") == 1
        assert sample("classpulse_webhook_attempts_total", result="http") == 1
        assert sample("classpulse_webhook_delivery_seconds_count", event="session.ended") == 1

        # an alert of the session: the same endpoint takes alert.raised
        bus = client.server.app[GATEWAY].events
        assert bus is not None
        await EventPublisher(bus=bus, topic=ALERTS).publish(alert(session, "a"))
        await _until(lambda: any(s[1].get("ClassPulse-Webhook-Event") == "alert.raised" for s in rec.seen),
                     "the alert.raised delivery")
        raised = next(s for s in rec.seen if s[1].get("ClassPulse-Webhook-Event") == "alert.raised")
        assert json.loads(raised[2])["alert"]["kind"] == "away"

        # the same end again (a retried POST /end, another gateway): no second delivery
        again = await client.post(f"/api/sessions/{session}/end", headers=_bearer(session, "platform"))
        assert again.status == 202
        await asyncio.sleep(1.0)
        assert len([s for s in rec.seen if s[1].get("ClassPulse-Webhook-Event") == "session.ended"]) == 3
        store = RedisWebhookStore(url=redis_url, prefix=f"test:wh:{unique}")
        await store.start()
        try:
            assert await store.pending() == 0
        finally:
            await store.close()


async def test_a_receiver_that_never_succeeds_is_dead_lettered(redis_url: str, unique: str) -> None:
    session = f"dl-{unique}"
    async with receiver([503] * 10) as rec, gateway(redis_url, f"test:wh:{unique}", webhook_max_attempts=3,
                                                  webhook_dead_letters=5) as (client, metrics):
        resp = await client.post("/api/webhooks", headers=_bearer("*", "platform"), json={"url": rec.url})
        assert resp.status == 201, await resp.text()
        denied = await client.post("/api/webhooks", headers=_bearer(session, "platform"), json={"url": rec.url})
        assert denied.status == 403  # deployment-wide needs a deployment token
        await _class(client, session)
        await _until(lambda: len(rec.seen) >= 3, "three attempts")
        await asyncio.sleep(0.5)
        assert len(rec.seen) == 3
        page = await (await client.get("/api/webhooks/dead-letters", headers=_bearer("*", "platform"))).json()
        letter = page["dead_letters"][0]
        assert letter["session"] == session and letter["attempts"] == 3 and letter["last_error"] == "http 503"
        assert metrics.registry.get_sample_value(
            "classpulse_webhook_deliveries_total", {"event": "session.ended", "outcome": "dead_lettered"}) == 1


async def test_a_pending_delivery_survives_a_gateway_restart(redis_url: str, unique: str) -> None:
    session = f"rs-{unique}"
    prefix = f"test:wh:{unique}"
    async with receiver([500]) as rec:
        async with gateway(redis_url, prefix, webhook_backoff_s=2.0, webhook_backoff_max_s=2.0) as (client, _):
            resp = await client.post(f"/api/sessions/{session}/webhooks", headers=_bearer(session, "platform"),
                                     json={"url": rec.url})
            assert resp.status == 201
            await _class(client, session)
            await _until(lambda: len(rec.seen) == 1, "the first (failing) attempt")
        # the first gateway is gone; the retry is in Redis. A new gateway (empty history) delivers it.
        async with gateway(redis_url, prefix) as (client, _):
            await _until(lambda: len(rec.delivered()) == 1, "the retry by the restarted gateway")
        first, second = rec.seen
        assert first[1]["ClassPulse-Webhook-Id"] == second[1]["ClassPulse-Webhook-Id"]
        assert first[2] == second[2]  # the very payload that was stored
