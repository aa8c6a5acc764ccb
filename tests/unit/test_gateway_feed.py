"""Live feeds deliver every live message with the gateway stage stamped and measured."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from services.gateway.hub import END, LiveHub
from shared.contracts.live import decode_live
from shared.metrics import Metrics
from shared.transport.live import LivePublisher
from shared.transport.memory import MemoryLiveBus

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
    # capture -> delivery of student signals, kept apart from window-delayed aggregates and alerts
    assert reg.get_sample_value("classpulse_since_capture_seconds_count", {"stage": "gateway"}) == 1
    assert reg.get_sample_value("classpulse_since_capture_seconds_count", {"stage": "gateway_aggregate"}) == 1
    assert reg.get_sample_value("classpulse_since_capture_seconds_count", {"stage": "gateway_alert"}) == 1
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


class _FailingLiveBus(MemoryLiveBus):
    """A live bus whose subscriptions break after ``after`` messages (like a Redis restart)."""

    def __init__(self, *, after: int) -> None:
        super().__init__()
        self.after = after
        self.subscriptions = 0

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[bytes]]:
        self.subscriptions += 1
        async with super().subscribe(channel) as inner:

            async def broken() -> AsyncIterator[bytes]:
                for _ in range(self.after):
                    yield await inner.__anext__()
                await inner.__anext__()  # the next message never arrives: the connection drops
                raise ConnectionError("live bus connection lost")

            yield broken()


async def test_a_failed_live_feed_closes_viewers_and_the_next_viewer_resubscribes() -> None:
    bus = _FailingLiveBus(after=1)
    hub = LiveHub(bus=bus, metrics=Metrics(CollectorRegistry()), queue_size=8)
    publisher = LivePublisher(bus=bus)
    async with hub.watch("s1") as queue:
        await publisher.publish(score("s1", "alice", 1))
        first = await asyncio.wait_for(queue.get(), 3)
        assert decode_live(first).kind == "score"
        await publisher.publish(score("s1", "alice", 2))  # the subscription breaks before this one
        assert await asyncio.wait_for(queue.get(), 3) == END
    async with hub.watch("s1") as queue:
        await publisher.publish(score("s1", "alice", 3))
        assert decode_live(await asyncio.wait_for(queue.get(), 3)).event.seq == 3  # type: ignore[union-attr]
    assert bus.subscriptions == 2
    await hub.close()


async def test_websocket_viewer_is_closed_when_the_live_feed_fails() -> None:
    async with gateway(live=_FailingLiveBus(after=1)) as h:
        ws = await h.client.ws_connect("/api/sessions/s1/ws", params={"token": token("s1", "viewer")})
        assert (await ws.receive_json(timeout=3))["kind"] == "snapshot"
        await h.emit(score("s1", "alice", 1))
        assert (await ws.receive_json(timeout=3))["event"]["seq"] == 1
        await h.emit(score("s1", "alice", 2))
        msg = await ws.receive(timeout=3)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.INTERNAL_ERROR
        assert (
            h.metrics.registry.get_sample_value(
                "classpulse_errors_total", {"stage": "gateway", "error": "live_subscribe"}
            )
            == 1
        )


async def test_lifecycle_from_the_event_log_reaches_viewers_and_the_snapshot() -> None:
    from shared.contracts.events import LifecycleEvent
    from shared.contracts.topics import LIFECYCLE
    from shared.transport.typed import EventPublisher

    async with gateway() as h:
        ws = await h.client.ws_connect("/api/sessions/s1/ws", params={"token": token("s1", "viewer")})
        assert (await ws.receive_json(timeout=3))["state"]["lifecycle"] == []
        lifecycle = EventPublisher(bus=h.transports.events, topic=LIFECYCLE)
        joined = LifecycleEvent(event_id="s1/alice/joined/1", session="s1", participant="alice", kind="joined", ts=10.0)
        await lifecycle.publish(joined)
        msg = await ws.receive_json(timeout=3)
        assert msg["kind"] == "lifecycle" and msg["event"]["participant"] == "alice"
        await ws.close()
        left = LifecycleEvent(event_id="s1/alice/left/1", session="s1", participant="alice", kind="left", ts=20.0)
        await lifecycle.publish(left)
        for _ in range(100):
            state = await (await h.client.get("/api/sessions/s1/live", params={"token": token("s1", "viewer")})).json()
            if state["lifecycle"] and state["lifecycle"][0]["kind"] == "left":
                break
            await asyncio.sleep(0.02)
        assert [(e["participant"], e["kind"]) for e in state["lifecycle"]] == [("alice", "left")]
