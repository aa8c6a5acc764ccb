"""One aiohttp app with everything: ingest (WHIP, join page), inference worker (with its
interaction intake: chat and questions become text signals, and its transcribe stage: speech
becomes ``source: speech`` interaction events), aggregation (the aggregator's
plain engine over the in-memory event bus) and the gateway (REST, live feeds, dashboard,
``/metrics``, ``POST .../interactions``) on memory transports.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass, field

from aiohttp import web

from services.aggregator.plain import PlainAggregator
from services.aggregator.settings import AggregatorSettings
from services.gateway.app import add_gateway
from services.gateway.settings import GatewaySettings
from services.inference.engine import InferenceEngine
from services.inference.interactions import InteractionIntake
from services.inference.service import live_transcriber
from services.inference.settings import InferenceSettings
from services.inference.transcribe.settings import TranscribeSettings
from services.inference.worker import InferenceWorker
from services.ingest.app import add_ingest_routes
from services.ingest.settings import IngestSettings
from shared.log import get_logger, spawn
from shared.metrics import Metrics
from shared.openapi import RouteDoc, add_documented_route
from shared.settings import CommonSettings
from shared.transport.factory import Transports, build_transports

_log = get_logger(__name__)
TRANSPORTS: web.AppKey[Transports] = web.AppKey("classpulse_up_transports", Transports)
"""The app's transports (tests and tools feed media or events in process)."""


@dataclass(frozen=True)
class UpSettings:
    """Every service's settings, as loaded by ``classpulse up``."""

    common: CommonSettings
    gateway: GatewaySettings
    ingest: IngestSettings
    inference: InferenceSettings
    aggregator: AggregatorSettings
    transcribe: TranscribeSettings = field(default_factory=TranscribeSettings)


async def _landing(request: web.Request) -> web.Response:
    return web.Response(
        text=(
            "<!doctype html><meta charset=utf-8><title>ClassPulse</title>"
            "<h1>ClassPulse</h1><ul>"
            '<li><a href="/join">Join a class (student camera + microphone)</a></li>'
            '<li><a href="/dashboard">Teacher dashboard</a> (<code>/dashboard?session=S#token=T</code>)</li>'
            '<li><a href="/api/openapi.json">REST API (OpenAPI)</a></li>'
            '<li><a href="/metrics">Prometheus metrics</a></li></ul>'
            "<p>Tokens: <code>classpulse token --session S --participant P --role student|teacher|viewer</code></p>"
        ),
        content_type="text/html",
    )


async def _sample_media_depth(transports: Transports, metrics: Metrics, period_s: float = 1.0) -> None:
    """Export the media stream's length as ``classpulse_queue_depth{queue="media_stream"}``."""
    gauge = metrics.queue_depth.labels("media_stream")
    while True:
        gauge.set(await transports.media.length())
        await asyncio.sleep(period_s)


def create_up_app(*, settings: UpSettings, metrics: Metrics, engine: InferenceEngine | None = None) -> web.Application:
    """The whole system as one app; transports are memory ones unless the settings say otherwise."""
    transports: Transports = build_transports(settings.common, metrics=metrics, client_id="classpulse-up")
    engine = engine or InferenceEngine(settings=settings.inference, metrics=metrics)
    app = web.Application()
    app[TRANSPORTS] = transports

    async def pipeline(_: web.Application) -> AsyncIterator[None]:
        await transports.start()
        await asyncio.to_thread(engine.load)
        speech = live_transcriber(
            settings.transcribe, bus=transports.events, metrics=metrics, keep_text=settings.common.keep_text
        )
        if speech is not None:
            await asyncio.to_thread(speech.load)
        worker = InferenceWorker(
            engine=engine, transports=transports, settings=settings.inference, metrics=metrics, speech=speech
        )
        aggregation = PlainAggregator(
            settings=settings.aggregator,
            events=transports.events,
            metrics=metrics,
            live=transports.live if settings.aggregator.live_state else None,
        )
        intake = InteractionIntake(  # one process from the start: read the whole (bounded) log, miss nothing
            bus=transports.events, engine=engine, metrics=metrics, group="up-inference-text", from_beginning=True
        )
        tasks = [
            spawn(worker.run(), name="up-inference"),
            spawn(intake.run(), name="up-inference-text"),
            spawn(aggregation.run(), name="up-aggregation"),
            spawn(_sample_media_depth(transports, metrics), name="up-media-depth"),
            *([spawn(speech.run(), name="up-transcribe")] if speech is not None else []),
        ]
        _log.info("classpulse up state %s -> %s", "starting", "running")
        yield
        worker.stop()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
        engine.close()
        await transports.close()
        _log.info("classpulse up state %s -> %s", "running", "stopped")

    app.cleanup_ctx.append(pipeline)
    add_ingest_routes(app, settings=settings.ingest, common=settings.common, transports=transports, metrics=metrics)
    add_gateway(app, settings=settings.gateway, common=settings.common, transports=transports, metrics=metrics)
    add_landing(app)
    return app


def add_landing(app: web.Application) -> None:
    add_documented_route(app, RouteDoc("GET", "/", "Landing page", content="text/html"), _landing)
