"""Token scopes on every gateway route, HTTP and live feeds (WebSocket, SSE).

Teacher and viewer tokens of the session read; student tokens (publish only), tokens of
another session, forged, expired or missing tokens are refused with 401/403.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from services.gateway.routes import API_ROUTES, SESSION_PREFIX
from shared.tokens import issue_token

from .gateway_fixtures import SECRET, gateway, score, token

pytestmark = pytest.mark.unit

PATHS = ["/api/sessions", *(SESSION_PREFIX.format(session="s1") + r.path for r in API_ROUTES)]
HTTP_PATHS = [p for p in PATHS if not p.endswith(("/ws", "/sse"))]

REFUSED = {
    "missing": (None, 401),
    "forged": (token("s1", "viewer", secret="another-secret"), 401),
    "expired": (issue_token(secret=SECRET, session="s1", participant="*", role="viewer", ttl_s=-1), 401),
    "garbage": ("not-a-token", 401),
    "student": (token("s1", "student", participant="alice"), 403),
    "other session": (token("s2", "viewer"), 403),
}


def test_every_api_route_is_covered() -> None:
    assert len(PATHS) == len(API_ROUTES) + 1 and any(p.endswith("/ws") for p in PATHS)


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_http_routes_refuse(case: str) -> None:
    tok, status = REFUSED[case]
    async with gateway() as h:
        for path in PATHS:
            if path == "/api/sessions" and case == "other session":
                continue  # listing is not session-scoped: another session's viewer lists its own session
            headers = {"Authorization": f"Bearer {tok}"} if tok else {}
            resp = await h.client.get(path, headers=headers)
            assert resp.status == status, (case, path, resp.status)
            assert "error" in await resp.json()
            if tok:
                resp = await h.client.get(path, params={"token": tok})
                assert resp.status == status, (case, path, "query")


@pytest.mark.parametrize("role", ["viewer", "teacher"])
async def test_http_routes_accept_viewer_and_teacher(role: str) -> None:
    async with gateway() as h:
        await h.emit(score("s1", "alice", 1))
        tok = token("s1", role)  # type: ignore[arg-type]
        for path in HTTP_PATHS:
            for kwargs in ({"headers": {"Authorization": f"Bearer {tok}"}}, {"params": {"token": tok}}):
                for _ in range(50):
                    resp = await h.client.get(path, **kwargs)  # type: ignore[arg-type]
                    if resp.status != 404:  # history reader may lag a few ms behind the publish
                        break
                    await asyncio.sleep(0.02)
                assert resp.status == 200, (role, path, resp.status)


async def test_websocket_scopes() -> None:
    async with gateway() as h:
        for case, (tok, status) in REFUSED.items():
            params = {"token": tok} if tok else {}
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await h.client.ws_connect("/api/sessions/s1/ws", params=params)
            assert err.value.status == status, case
        ws = await h.client.ws_connect("/api/sessions/s1/ws", params={"token": token("s1", "viewer")})
        assert (await ws.receive_json(timeout=3))["kind"] == "snapshot"
        await ws.close()
        ws = await h.client.ws_connect(
            "/api/sessions/s1/ws", headers={"Authorization": f"Bearer {token('s1', 'teacher')}"}
        )
        assert (await ws.receive_json(timeout=3))["kind"] == "snapshot"
        await ws.close()


async def test_sse_scopes() -> None:
    async with gateway() as h:
        for case, (tok, status) in REFUSED.items():
            resp = await h.client.get("/api/sessions/s1/sse", params={"token": tok} if tok else {})
            assert resp.status == status, case
        resp = await h.client.get("/api/sessions/s1/sse", params={"token": token("s1", "viewer")})
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        first = await resp.content.readuntil(b"\n\n")
        assert first.startswith(b"event: snapshot\n")
        resp.close()


async def test_public_routes_need_no_token() -> None:
    async with gateway() as h:
        for path in ("/metrics", "/api/openapi.json", "/dashboard", "/healthz", "/static/gateway/dashboard.js"):
            assert (await h.client.get(path)).status == 200, path
