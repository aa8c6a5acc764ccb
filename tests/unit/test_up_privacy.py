"""``classpulse up`` (memory transports): an opt-out keeps a participant's frames from the engine, and an
aggregate-only session shows class figures only, through the same media bus the ingest processes relay into."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from services.aggregator.settings import AggregatorSettings
from services.gateway.settings import GatewaySettings
from services.inference.engine import InferenceEngine
from services.inference.settings import InferenceSettings
from services.ingest.settings import IngestSettings
from services.up.app import TRANSPORTS, UpSettings, create_up_app
from shared.contracts.codec import encode_media
from shared.contracts.events import ScoreEvent
from shared.contracts.media import MediaMessage
from shared.metrics import Metrics
from shared.settings import CommonSettings
from shared.testkit.messages import frames
from shared.tokens import issue_token
from shared.transport.shards import participant_key

from .test_inference_engine import NoFaces

pytestmark = pytest.mark.unit

SECRET = "up-privacy-secret"


def _auth(role: str, participant: str = "*") -> dict[str, str]:
    token = issue_token(secret=SECRET, session="s", participant=participant, role=role)  # type: ignore[arg-type]
    return {"Authorization": f"Bearer {token}"}


async def test_opt_out_and_aggregate_only_in_classpulse_up() -> None:
    metrics = Metrics(CollectorRegistry())
    inference = InferenceSettings()
    settings = UpSettings(
        common=CommonSettings(token_secret=SECRET),  # type: ignore[arg-type]
        gateway=GatewaySettings(),
        ingest=IngestSettings(),
        inference=inference,
        aggregator=AggregatorSettings(),
    )
    engine = InferenceEngine(settings=inference, metrics=metrics, backend=NoFaces())
    analysed: list[str] = []
    process = engine.process

    def recording(messages: list[MediaMessage], **kw: Any) -> list[ScoreEvent]:
        analysed.extend(m.participant for m in messages)
        return process(messages, **kw)

    engine.process = recording  # type: ignore[method-assign]
    app = create_up_app(settings=settings, metrics=metrics, engine=engine)
    image = np.zeros((48, 64, 3), np.uint8)
    async with TestClient(TestServer(app)) as client:
        r = await client.put("/api/sessions/s/participants/bob/opt-out", headers=_auth("student", "bob"))
        assert r.status == 200, await r.text()
        media = app[TRANSPORTS].media
        for p in ("alice", "bob"):
            for frame in frames([image] * 10, session="s", participant=p):
                await media.append(encode_media(frame), key=participant_key("s", p))
        live: dict[str, Any] = {}
        for _ in range(200):
            live = await (await client.get("/api/sessions/s/live", headers=_auth("viewer"))).json()
            if live["participants"]:
                break
            await asyncio.sleep(0.05)
        assert [p["participant"] for p in live["participants"]] == ["alice"] and live["opted_out"] == ["bob"]
        assert "alice" in analysed and "bob" not in analysed
        assert metrics.registry.get_sample_value("classpulse_media_dropped_total", {"reason": "opted_out"}) == 10
        r = await client.put("/api/sessions/s/privacy", headers=_auth("teacher", "t"), json={"aggregate_only": True})
        assert r.status == 200
        live = await (await client.get("/api/sessions/s/live", headers=_auth("viewer"))).json()
        assert live["participants"] == [] and live["aggregate_only"] and live["opted_out"] == []
