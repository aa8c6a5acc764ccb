"""A peer connection whose close never finishes holds nothing up: 'left' is sent, shutdown ends.

On a starved box aiortc's ``RTCPeerConnection.close()`` was seen waiting > 17 s (the Kafka-pause
fault); whatever came after it in the same coroutine (the participant's ``left``, the other
resources' closes) never happened before the process's stop bound ended it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.ingest import aiortc_hooks, whip
from services.ingest.settings import IngestSettings
from services.ingest.whip import WhipResource, WhipService
from shared.metrics import Metrics
from shared.settings import CommonSettings
from shared.transport.factory import build_transports
from shared.transport.publishes import Publish

pytestmark = pytest.mark.unit


class HangingPeer:
    """A peer connection whose close waits forever (the transports never finish stopping)."""

    def __init__(self) -> None:
        self.cancelled = False

    async def close(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


class Reporter:
    def __init__(self) -> None:
        self.closed = 0

    async def close(self) -> None:
        self.closed += 1


async def test_close_bounded_gives_up_on_a_hanging_close() -> None:
    peer = HangingPeer()
    started = time.monotonic()
    assert await aiortc_hooks.close_bounded(peer, timeout_s=0.05) is False  # type: ignore[arg-type]
    assert time.monotonic() - started < 1.0 and peer.cancelled


async def test_shutdown_sends_left_for_every_resource_even_when_their_closes_hang(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(whip, "PC_CLOSE_TIMEOUT_S", 0.1)
    common = CommonSettings(token_secret="unit-test-secret")
    metrics = Metrics(CollectorRegistry())
    transports = build_transports(common, metrics=metrics)
    service = WhipService(settings=IngestSettings(), common=common, transports=transports, metrics=metrics)
    reporters = []
    for k in range(3):
        reporter = Reporter()
        reporters.append(reporter)
        resource: Any = WhipResource(id=f"r{k}", session="s", participant=f"p{k}", role="student",
                                     pc=HangingPeer(),  # type: ignore[arg-type]
                                     reporter=reporter,  # type: ignore[arg-type]
                                     monitor=None,  # type: ignore[arg-type]
                                     publish=Publish(epoch=0, offset=0.0))
        service.resources[resource.id] = resource
    started = time.monotonic()
    await asyncio.wait_for(service.close(), 5)
    assert time.monotonic() - started < 1.0  # the three closes gave up together, not one after another
    assert [r.closed for r in reporters] == [1, 1, 1] and service.resources == {}
    labels = {"stage": "ingest", "error": "pc_close_timeout"}
    timeouts = metrics.registry.get_sample_value("classpulse_errors_total", labels)
    assert timeouts == 3
