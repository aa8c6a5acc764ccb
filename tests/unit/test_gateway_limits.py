"""Rate limits (per token, per address), the viewer cap, SSE viewers that stop reading, malformed queries."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import pytest

from shared.ratelimit import TokenBuckets

from .gateway_fixtures import auth, gateway, score, token

pytestmark = pytest.mark.unit


def test_token_buckets_refill_at_their_rate_and_forget_the_oldest_keys() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=3.0, max_keys=2, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)  # empty: one token back in 1/rate s
    now[0] = 0.5
    assert buckets.take("a") == 0.0
    buckets.take("b")
    buckets.take("c")
    assert len(buckets) == 2  # "a" forgotten: bounded memory whatever the number of tokens/addresses
    assert TokenBuckets(rate=0.0, burst=1.0).take("x") == 0.0  # 0: no limit


async def test_rest_requests_past_the_token_rate_get_429_with_retry_after() -> None:
    async with gateway(rate_per_token=1.0, rate_per_address=0.0, rate_burst_s=2.0) as h:
        await h.emit(score("s1", "alice", 1))
        statuses = []
        for _ in range(3):
            resp = await h.client.get("/api/sessions/s1/live", headers=auth("s1", "viewer"))
            statuses.append(resp.status)
        assert statuses == [200, 200, 429]
        assert int(resp.headers["Retry-After"]) >= 1
        text = await resp.text()
        assert text.strip() == "too many API requests from this token; retry in 1 s"
        other = await h.client.get(
            "/api/sessions/s1/live", headers={"Authorization": f"Bearer {token('s1', 'teacher', 't1')}"}
        )
        assert other.status == 200  # another token has its own budget
        families = {s.labels["limit"]: s.value for s in _samples(h, "classpulse_rate_limited_total")}
        assert families == {"token": 1.0}


async def test_rest_requests_past_the_address_rate_get_429_whatever_the_token() -> None:
    async with gateway(rate_per_token=0.0, rate_per_address=1.0, rate_burst_s=2.0) as h:
        got = [
            (await h.client.get("/api/sessions/s1/live", params={"token": token("s1", "viewer")})).status
            for _ in range(2)
        ]
        third = await h.client.get("/api/sessions/s1", headers={"Authorization": "Bearer junk"})
        assert got == [200, 200] and third.status == 429
        assert "from this address" in await third.text()
        assert (await h.client.get("/dashboard")).status == 200  # pages are not the API


async def test_viewer_cap_per_session_counts_websocket_and_sse() -> None:
    async with gateway(max_viewers_per_session=1) as h:
        first = await h.client.ws_connect("/api/sessions/s1/ws", params={"token": token("s1", "viewer")})
        await first.receive_json(timeout=3)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await h.client.ws_connect("/api/sessions/s1/ws", params={"token": token("s1", "viewer")})
        assert refused.value.status == 429
        sse = await h.client.get("/api/sessions/s1/sse", params={"token": token("s1", "viewer")})
        assert sse.status == 429 and sse.headers["Retry-After"] == "10"
        assert "live viewers" in (await sse.json())["error"]
        other = await h.client.ws_connect("/api/sessions/s2/ws", params={"token": token("s2", "viewer")})
        await other.close()  # another session has its own slots
        await first.close()
        for _ in range(50):  # the slot is given back when the feed ends
            again = await h.client.get("/api/sessions/s1/sse", params={"token": token("s1", "viewer")})
            if again.status == 200:
                again.close()
                break
            await asyncio.sleep(0.05)
        assert again.status == 200


async def test_a_non_websocket_request_to_the_websocket_feed_gets_one_readable_line() -> None:
    async with gateway() as h:
        resp = await h.client.get("/api/sessions/s1/ws", params={"token": token("s1", "viewer")})
        assert resp.status == 400
        body = await resp.text()
        assert "WebSocket endpoint" in body and "\n" not in body.strip() and "UPGRADE" not in body


async def test_an_sse_viewer_that_stops_reading_is_dropped() -> None:
    async with gateway(viewer_write_timeout_s=1.0, viewer_queue=8) as h:
        port = h.client.server.port
        assert port is not None
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET /api/sessions/s1/sse?token={token('s1', 'viewer')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        try:
            deadline = time.monotonic() + 40
            dropped = 0.0
            for _ in range(400):  # wait until the feed is open (up to 20 s on a loaded box)
                if _value(h, "classpulse_live_viewers", transport="sse") == 1:
                    break
                await asyncio.sleep(0.05)
            assert _value(h, "classpulse_live_viewers", transport="sse") == 1
            seq = 0
            while time.monotonic() < deadline and not dropped:
                for _ in range(50):
                    seq += 1
                    await h.emit(score("s1", f"p{seq % 40}", seq))
                await asyncio.sleep(0.05)
                dropped = _value(h, "classpulse_errors_total", stage="gateway", error="viewer_stalled")
            assert dropped == 1, "the stalled SSE viewer was never dropped"
            for _ in range(200):
                if _value(h, "classpulse_live_viewers", transport="sse") == 0:
                    break
                await asyncio.sleep(0.05)
            assert _value(h, "classpulse_live_viewers", transport="sse") == 0
        finally:
            sock.close()


async def test_malformed_limit_and_since_are_400_with_one_line() -> None:
    async with gateway() as h:
        await h.emit(score("s1", "alice", 1))
        for _ in range(50):
            if (await h.client.get("/api/sessions/s1", headers=auth("s1", "viewer"))).status == 200:
                break
            await asyncio.sleep(0.05)
        for value in ("nan", "inf", "-inf", "1e400", "-1", "0", "abc", "1.5", "١٢"):
            resp = await h.client.get(
                "/api/sessions/s1/aggregates", params={"limit": value}, headers=auth("s1", "viewer")
            )
            assert resp.status == 400, value
            error = (await resp.json())["error"]
            assert error.startswith("query parameter limit must be a whole number") and "seconds" not in error
        for value in ("nan", "inf", "-inf", "1e400", "x"):
            resp = await h.client.get(
                "/api/sessions/s1/timeline", params={"since": value}, headers=auth("s1", "viewer")
            )
            assert resp.status == 400, value
            assert "finite number of seconds" in (await resp.json())["error"]
        ok = await h.client.get("/api/sessions/s1/aggregates", params={"limit": "5"}, headers=auth("s1", "viewer"))
        assert ok.status == 200


def _samples(h: object, name: str) -> list:  # type: ignore[type-arg]
    metrics = h.metrics  # type: ignore[attr-defined]
    return [s for f in metrics.registry.collect() for s in f.samples if s.name == name]


def _value(h: object, name: str, **labels: str) -> float:
    for s in _samples(h, name):
        if all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    return 0.0
