"""``classpulse up`` wires the text path in memory: POST interactions -> inference text signals + live rows."""

from __future__ import annotations

import asyncio

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
from shared.contracts.timing import wall_clock
from shared.metrics import Metrics
from shared.settings import CommonSettings
from shared.testkit.messages import frames
from shared.tokens import issue_token
from shared.transport.shards import participant_key

from .test_inference_engine import NoFaces

pytestmark = pytest.mark.unit

SECRET = "up-text-secret"


async def test_a_posted_question_reaches_the_fusion_model_and_the_live_row() -> None:
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
    app = create_up_app(settings=settings, metrics=metrics, engine=engine)
    platform = issue_token(secret=SECRET, session="s", participant="*", role="platform")
    viewer = issue_token(secret=SECRET, session="s", participant="*", role="viewer")
    async with TestClient(TestServer(app)) as client:
        batch = [{"event_id": "q1", "participant": "p", "kind": "chat", "ts": wall_clock(), "text": "why is it 4"}]
        resp = await client.post(
            "/api/sessions/s/interactions", json=batch, headers={"Authorization": f"Bearer {platform}"}
        )
        assert resp.status == 202, await resp.text()
        media = app[TRANSPORTS].media
        for frame in frames([np.zeros((48, 64, 3), np.uint8)] * 5, session="s", participant="p"):
            await media.append(encode_media(frame), key=participant_key("s", "p"))
        row = None
        for _ in range(200):
            answer = await client.get("/api/sessions/s/live", headers={"Authorization": f"Bearer {viewer}"})
            live = await answer.json()
            rows = live["participants"]
            if rows and rows[0]["questions"] == 1 and rows[0]["contributions"].get("asked_question", 0) > 0:
                row = rows[0]
                break
            await asyncio.sleep(0.05)
        assert row is not None, live
        assert row["chat_messages"] == 1

