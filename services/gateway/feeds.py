"""Live feeds: WebSocket and Server-Sent Events with the same messages.

Both first send a ``snapshot`` (the live state), then every live message of the session
as ``{"kind": "score"|"aggregate"|"alert"|"lifecycle"|"interaction", "event": {...}}`` with the
gateway stage stamped on its timing trail (interaction messages also carry the participant's
``counts``). Idle feeds get a ping every ``heartbeat_s``.

At most ``max_viewers_per_session`` feeds per session are open (one more: ``429`` with
``Retry-After``). A viewer that stops reading is dropped: a WebSocket one when it misses its
heartbeat (aiohttp closes it), an SSE one when a write has not gone out within
``viewer_write_timeout_s`` (counted as ``classpulse_errors_total{stage="gateway", error="viewer_stalled"}``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from aiohttp import WSCloseCode, WSMsgType, web

from services.gateway.context import GATEWAY, GatewayContext
from services.gateway.hub import END
from services.gateway.live_state import live_state
from shared.analytics.privacy import merged
from shared.log import get_logger

_log = get_logger(__name__)


async def _snapshot(request: web.Request, session: str) -> str:
    ctx = request.app[GATEWAY]
    policy = await ctx.privacy.get(session)
    record = ctx.history.get(session)
    if record is not None:
        policy = merged(policy, record.aggregator.privacy)
    state = await live_state(ctx.live, session, record, policy)
    return json.dumps({"kind": "snapshot", "state": state.model_dump(mode="json")})


class ViewerCapReached(Exception):
    """The session already has its most live viewers."""


@contextmanager
def _viewer_slot(ctx: GatewayContext, session: str, transport: str) -> Iterator[None]:
    """Take one of the session's viewer slots (no await between the check and the take) for the feed's life."""
    if ctx.viewers.get(session, 0) >= ctx.max_viewers_per_session:
        ctx.metrics.rate_limited_total.labels("gateway", "viewers").inc()
        raise ViewerCapReached
    ctx.viewers[session] = ctx.viewers.get(session, 0) + 1
    ctx.metrics.live_viewers.labels(transport).inc()
    try:
        yield
    finally:
        ctx.metrics.live_viewers.labels(transport).dec()
        left = ctx.viewers[session] - 1
        if left:
            ctx.viewers[session] = left
        else:
            del ctx.viewers[session]


def _cap_response(ctx: GatewayContext) -> web.Response:
    return web.json_response(
        {"error": f"this session already has {ctx.max_viewers_per_session} live viewers; retry later or raise "
                  "CLASSPULSE_GATEWAY_MAX_VIEWERS_PER_SESSION"},
        status=429,
        headers={"Retry-After": "10"},
    )


def _not_websocket(request: web.Request) -> web.Response | None:
    """A readable 400 for a request that is no WebSocket handshake (aiohttp's own text is two lines)."""
    if web.WebSocketResponse().can_prepare(request).ok:
        return None
    return web.json_response(
        {"error": "this is a WebSocket endpoint; connect with a WebSocket client (Upgrade: websocket, "
                  "Sec-WebSocket-Version: 13), or use .../sse"},
        status=400,
    )


async def websocket_feed(request: web.Request, session: str) -> web.StreamResponse:
    ctx = request.app[GATEWAY]
    refused = _not_websocket(request)
    if refused is not None:
        return refused
    try:
        with _viewer_slot(ctx, session, "websocket"):
            return await _websocket(request, ctx, session)
    except ViewerCapReached:
        return _cap_response(ctx)


async def _websocket(request: web.Request, ctx: GatewayContext, session: str) -> web.StreamResponse:
    ws = web.WebSocketResponse(heartbeat=ctx.heartbeat_s)
    await ws.prepare(request)
    async with ctx.hub.watch(session) as queue:
        await ws.send_str(await _snapshot(request, session))
        sender = asyncio.create_task(_send_loop(ws, queue))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            sender.cancel()
            with suppress(asyncio.CancelledError, ConnectionResetError):
                await sender
    return ws


async def _send_loop(ws: web.WebSocketResponse, queue: asyncio.Queue[bytes]) -> None:
    while not ws.closed:
        data = await queue.get()
        if data == END:
            await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"live feed unavailable; reconnect")
            return
        await ws.send_str(data.decode())


async def sse_feed(request: web.Request, session: str) -> web.StreamResponse:
    ctx = request.app[GATEWAY]
    try:
        with _viewer_slot(ctx, session, "sse"):
            return await _sse(request, ctx, session)
    except ViewerCapReached:
        return _cap_response(ctx)


async def _sse(request: web.Request, ctx: GatewayContext, session: str) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await resp.prepare(request)

    async def write(data: bytes) -> None:
        await asyncio.wait_for(resp.write(data), ctx.viewer_write_timeout_s)

    try:
        async with ctx.hub.watch(session) as queue:
            await write(f"event: snapshot\ndata: {await _snapshot(request, session)}\n\n".encode())
            while True:
                try:
                    data = await asyncio.wait_for(queue.get(), ctx.heartbeat_s)
                except TimeoutError:
                    await write(b": ping\n\n")
                    continue
                if data == END:
                    break
                await write(b"data: " + data + b"\n\n")
    except TimeoutError:  # a write did not go out: the viewer stopped reading
        ctx.metrics.errors_total.labels("gateway", "viewer_stalled").inc()
        _log.info("sse viewer state %s -> %s", "open", "dropped (stopped reading)")
        if request.transport is not None:
            request.transport.abort()  # what it has not read is dropped with it
    except (ConnectionResetError, asyncio.CancelledError):
        _log.debug("sse viewer state %s -> %s", "open", "closed")
    return resp
