"""Live feeds deliver every live message with the gateway stage stamped and measured."""

from __future__ import annotations

import json

import pytest

from shared.contracts.live import decode_live

from .gateway_fixtures import aggregate, alert, gateway, score, token

pytestmark = pytest.mark.unit


async def test_websocket_snapshot_then_live_messages_with_gateway_stamp() -> None:
    async with gateway() as h:
        await h.emit(score("s1", "alice", 1))
        ws = await h.client.ws_connect("/api/sessions/s1/ws", params={"token": token("s1", "viewer")})
        snap = await ws.receive_json(timeout=3)
        assert snap["kind"] == "snapshot" and [p["participant"] for p in snap["state"]["participants"]] == ["alice"]
        await h.emit(score("s1", "bob", 1, hand=True))
        await h.emit(score("s2", "carol", 1))  # another session: never delivered here
        await h.emit(aggregate("s1", 0.0))
        await h.emit(alert("s1", "bob"))
        got = [decode_live((await ws.receive_str(timeout=3)).encode()) for _ in range(3)]
        await ws.close()
    assert [m.kind for m in got] == ["score", "aggregate", "alert"]
    first = got[0].event
    assert first.participant == "bob" and first.hand_raised  # type: ignore[union-attr]
    stages = [s.stage for s in first.timing.stages]
    assert stages == ["ingest", "inference", "gateway"]
    gw = first.timing.stage("gateway")
    assert gw is not None and gw.emitted >= gw.received >= first.timing.stages[1].emitted
    reg = h.metrics.registry
    assert reg.get_sample_value("classpulse_since_capture_seconds_count", {"stage": "gateway"}) == 3
    assert (
        reg.get_sample_value("classpulse_transport_hop_seconds_count", {"transport": "live"}) == 2
    )  # the alert has no stage to hop from
    assert reg.get_sample_value("classpulse_live_viewers", {"transport": "websocket"}) == 0


async def test_sse_delivers_the_same_messages() -> None:
    async with gateway() as h:
        resp = await h.client.get("/api/sessions/s1/sse", params={"token": token("s1", "teacher")})
        assert (await resp.content.readuntil(b"\n\n")).startswith(b"event: snapshot")
        await h.emit(score("s1", "alice", 7))
        chunk = await resp.content.readuntil(b"\n\n")
        resp.close()
    assert chunk.startswith(b"data: ")
    msg = json.loads(chunk[len(b"data: ") :])
    assert msg["kind"] == "score" and msg["event"]["seq"] == 7
    assert msg["event"]["timing"]["stages"][-1]["stage"] == "gateway"


async def test_two_viewers_share_one_subscription_and_both_receive() -> None:
    async with gateway() as h:
        a = await h.client.ws_connect("/api/sessions/s1/ws", params={"token": token("s1", "viewer")})
        b = await h.client.ws_connect("/api/sessions/s1/ws", params={"token": token("s1", "teacher")})
        for ws in (a, b):
            await ws.receive_json(timeout=3)
        await h.emit(score("s1", "alice", 1))
        for ws in (a, b):
            assert (await ws.receive_json(timeout=3))["event"]["participant"] == "alice"
        await a.close()
        await h.emit(score("s1", "alice", 2))
        assert (await b.receive_json(timeout=3))["event"]["seq"] == 2
        await b.close()
