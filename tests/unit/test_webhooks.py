"""Webhooks without Redis: the signature, the backoff, the once-only trigger and the in-memory store of
``classpulse up`` delivering to a local receiver."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import time

import pytest
from aiohttp import web

from services.gateway.webhooks.delivery import DeliveryPolicy
from services.gateway.webhooks.signing import signature, verify
from services.gateway.webhooks.store import MemoryWebhookStore, PendingDelivery
from shared.contracts.webhooks import DeadLetter, WebhookPayload
from shared.testkit.web import served

from .gateway_fixtures import gateway, score, token

pytestmark = pytest.mark.unit


def test_signature_is_hmac_sha256_over_timestamp_dot_body_and_rejects_replays_and_tampering() -> None:
    body, ts = b'{"a":1}', 1_764_650_000
    expected = "v1=" + hmac.new(b"k", b"1764650000." + body, hashlib.sha256).hexdigest()
    assert signature("k", ts, body) == expected
    assert verify("k", timestamp=str(ts), signature_header=expected, body=body, now=ts + 10)
    assert not verify("k", timestamp=str(ts), signature_header=expected, body=body, now=ts + 301)  # replayed late
    assert not verify("k", timestamp=str(ts), signature_header=expected, body=b'{"a":2}', now=ts)
    assert not verify("other", timestamp=str(ts), signature_header=expected, body=body, now=ts)
    assert not verify("k", timestamp="soon", signature_header=expected, body=body, now=ts)


def test_backoff_doubles_with_equal_jitter_and_a_cap() -> None:
    policy = DeliveryPolicy(backoff_s=2.0, backoff_max_s=60.0)
    rng = random.Random(1)
    for attempts, base in ((1, 2.0), (2, 4.0), (3, 8.0), (6, 60.0), (20, 60.0)):
        delays = [policy.delay(attempts, rng) for _ in range(200)]
        assert base / 2 <= min(delays) and max(delays) <= base
        assert max(delays) - min(delays) > base / 4  # jittered, not one fixed value


async def test_memory_store_claims_with_a_lease_and_caps_dead_letters() -> None:
    store = MemoryWebhookStore()
    d = PendingDelivery(id="whd_1", endpoint="whe_1", session="s", event="session.ended", created=0.0, body="{}")
    await store.enqueue(d, due=10.0)
    assert await store.claim(9.0, lease_s=5.0, limit=10) == []
    assert [x.id for x in await store.claim(10.0, lease_s=5.0, limit=10)] == ["whd_1"]
    assert await store.claim(12.0, lease_s=5.0, limit=10) == []  # leased
    assert [x.id for x in await store.claim(15.0, lease_s=5.0, limit=10)] == ["whd_1"]  # lease ran out
    assert await store.mark_fired("s", "k", 60) and not await store.mark_fired("s", "k", 60)
    for i in range(5):
        await store.dead_letter(DeadLetter(id=f"whd_{i}", endpoint="e", url="http://x", session="s",
                                           event="session.ended", attempts=8, last_error="timeout", created=0.0,
                                           failed_at=float(i)), cap=3)
    assert [d.id for d in await store.dead_letters(10)] == ["whd_4", "whd_3", "whd_2"]  # newest kept


async def test_classpulse_up_store_delivers_and_unknown_scopes_are_refused() -> None:
    got: list[tuple[dict[str, str], bytes]] = []
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        got.append((dict(request.headers), await request.read()))
        arrived.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with served(app) as base:
        url = f"{base}/hook"
        async with gateway(webhook_settle_s=0.0) as h:
            teacher = {"Authorization": f"Bearer {token('s1', 'teacher')}"}
            created = await (await h.client.post("/api/sessions/s1/webhooks", headers=teacher,
                                                 json={"url": url})).json()
            viewer = {"Authorization": f"Bearer {token('s1', 'viewer')}"}
            assert (await h.client.post("/api/sessions/s1/webhooks", headers=viewer, json={"url": url})).status == 403
            assert (await h.client.post("/api/sessions/s1/end", headers=viewer)).status == 403
            other = {"Authorization": f"Bearer {token('s2', 'platform')}"}
            assert (await h.client.get("/api/sessions/s1/webhooks", headers=other)).status == 403
            junk = await h.client.post("/api/sessions/s1/webhooks", headers=teacher, data=b"url=x")
            assert junk.status == 400 and "not JSON" in (await junk.json())["error"]
            wrong = await h.client.post("/api/sessions/s1/webhooks", headers=teacher,
                                        json={"url": url, "events": ["session.started"]})
            assert wrong.status == 400 and wrong.content_type == "application/json"
            for seq in range(10):
                await h.emit(score("s1", "alice", seq))
            assert (await h.client.post("/api/sessions/s1/end", headers=teacher)).status == 202
            await asyncio.wait_for(arrived.wait(), 10.0)
            headers, body = got[0]
            stamp = headers["ClassPulse-Webhook-Timestamp"]
            assert verify(created["secret"], timestamp=stamp, signature_header=headers["ClassPulse-Webhook-Signature"],
                          body=body, now=time.time())
            payload = WebhookPayload.model_validate_json(body)
            assert payload.report is not None and "alice" in payload.report.summary.participants
            gone = await h.client.delete(f"/api/sessions/s1/webhooks/{created['id']}", headers=teacher)
            assert gone.status == 204
            assert (await h.client.delete(f"/api/sessions/s1/webhooks/{created['id']}", headers=teacher)).status == 404
