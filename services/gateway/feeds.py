"""Live feeds: WebSocket and Server-Sent Events with the same messages.

Both first send a ``snapshot`` (the live state), then every live message of the session
as ``{"kind": "score"|"aggregate"|"alert"|"lifecycle"|"interaction", "event": {...}}`` with the
gateway stage stamped on its timing trail (interaction messages also carry the participant's
``counts``). Idle feeds get a ping every ``heartbeat_s``.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import suppress

from aiohttp import WSCloseCode, WSMsgType, web

from services.gateway.context import GATEWAY
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


async def websocket_feed(request: web.Request, session: str) -> web.StreamResponse:
    ctx = request.app[GATEWAY]
    ws = web.WebSocketResponse(heartbeat=ctx.heartbeat_s)
    await ws.prepare(request)
    ctx.metrics.live_viewers.labels("websocket").inc()
    try:
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
    finally:
        ctx.metrics.live_viewers.labels("websocket").dec()
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
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await resp.prepare(request)
    ctx.metrics.live_viewers.labels("sse").inc()
    try:
        async with ctx.hub.watch(session) as queue:
            await resp.write(f"event: snapshot\ndata: {await _snapshot(request, session)}\n\n".encode())
            while True:
                try:
                    data = await asyncio.wait_for(queue.get(), ctx.heartbeat_s)
                except TimeoutError:
                    await resp.write(b": ping\n\n")
                    continue
                if data == END:
                    break
                await resp.write(b"data: " + data + b"\n\n")
    except (ConnectionResetError, asyncio.CancelledError):
        _log.debug("sse viewer state %s -> %s", "open", "closed")
    finally:
        ctx.metrics.live_viewers.labels("sse").dec()
    return resp
