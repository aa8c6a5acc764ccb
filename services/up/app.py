"""One aiohttp app with everything: ingest (WHIP, join page), inference worker (with its
interaction intake: chat and questions become text signals, and its transcribe stage: speech
becomes ``source: speech`` interaction events), aggregation (the aggregator's
plain engine over the in-memory event bus) and the gateway (REST, live feeds, dashboard,
``/metrics``, ``POST .../interactions``) on memory transports.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.aggregator.plain import PlainAggregator
from services.aggregator.settings import AggregatorSettings
from services.gateway.app import add_gateway
from services.gateway.lti.settings import LtiSettings
from services.gateway.settings import GatewaySettings
from services.inference.engine import InferenceEngine
from services.inference.interactions import InteractionIntake
from services.inference.service import live_transcriber
from services.inference.settings import InferenceSettings
from services.inference.transcribe.settings import TranscribeSettings
from services.inference.worker import InferenceWorker
from services.ingest.app import add_forwarded_ingest_routes, add_ingest_routes, add_whip_rate_limits
from services.ingest.settings import IngestSettings
from services.up.ingest_pool import IngestPool
from services.up.metrics_merge import merge_expositions
from services.up.settings import UpProcessSettings
from shared.http_guard import add_request_guard
from shared.log import get_logger
from shared.metrics import Metrics
from shared.openapi import RouteDoc, add_documented_route
from shared.settings import CommonSettings
from shared.supervise import HealthRegistry, Supervisor
from shared.text.settings import TextSettings
from shared.text.stage import build_text_stage
from shared.transport.factory import Transports, build_transports
from shared.transport.rate import RateRecord

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
    up: UpProcessSettings = field(default_factory=lambda: UpProcessSettings(ingest_processes="0"))
    """Ingest processes; embedding the app (tests, tools) keeps WebRTC in process unless asked."""
    text: TextSettings = field(default_factory=lambda: TextSettings(relevance="off"))
    """The text stage (``classpulse up`` loads the configured one; tests may leave it rules-only)."""
    transcribe: TranscribeSettings = field(default_factory=TranscribeSettings)
    lti: LtiSettings = field(default_factory=lambda: LtiSettings(platforms_file=None))
    """The LTI 1.3 tool (``classpulse up`` loads the configured one; embedding leaves it off)."""


async def _landing(request: web.Request) -> web.Response:
    return web.Response(
        text=(
            "<!doctype html><meta charset=utf-8><title>ClassPulse</title>"
            "<h1>ClassPulse</h1><ul>"
            '<li><a href="/join">Join a class (student camera + microphone)</a></li>'
            '<li><a href="/dashboard">Teacher dashboard</a> (<code>/dashboard?session=S#token=T</code>)</li>'
            '<li><a href="/me">My view: what is recorded about me</a> '
            "(<code>/me#session=S&amp;participant=P&amp;token=T</code>)</li>"
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


def create_up_app(
    *,
    settings: UpSettings,
    metrics: Metrics,
    engine: InferenceEngine | None = None,
    supervisor: Supervisor | None = None,
) -> web.Application:
    """The whole system as one app; transports are memory ones unless the settings say otherwise.

    Every background task runs under ``supervisor`` (one health registry: ``/healthz``, ``/readyz``)."""
    sup = supervisor or Supervisor(health=HealthRegistry(service="up"))
    transports: Transports = build_transports(settings.common, metrics=metrics, client_id="classpulse-up")
    engine = engine or InferenceEngine(settings=settings.inference, metrics=metrics)
    app = web.Application()
    add_request_guard(app, service="up", metrics=metrics)
    add_whip_rate_limits(app, settings=settings.ingest, common=settings.common, metrics=metrics, service="up")
    app[TRANSPORTS] = transports
    processes = settings.up.ingest_process_count()
    pool = IngestPool(processes=processes, cors_origin=settings.ingest.cors_origin) if processes else None

    async def pipeline(_: web.Application) -> AsyncIterator[None]:
        await transports.start()
        if pool is not None:
            await pool.start(transports)
        await asyncio.to_thread(engine.load)
        speech = live_transcriber(
            settings.transcribe, bus=transports.events, metrics=metrics, keep_text=settings.common.keep_text
        )
        if speech is not None:
            await asyncio.to_thread(speech.load)
        if pool is not None:
            await pool.wait_ready()
        worker = InferenceWorker(
            engine=engine, transports=transports, settings=settings.inference, metrics=metrics, supervisor=sup,
            speech=speech, on_rate=_rate_feedback(transports, pool) if settings.up.thin_at_source else None,
        )
        aggregation = PlainAggregator(
            settings=settings.aggregator,
            events=transports.events,
            metrics=metrics,
            live=transports.live if settings.aggregator.live_state else None,
            aggregate_only=settings.common.aggregate_only,
        )
        intake = InteractionIntake(  # one process from the start: read the whole (bounded) log, miss nothing
            bus=transports.events, engine=engine, metrics=metrics, group="up-inference-text", from_beginning=True
        )
        tasks = [
            sup.spawn("up-inference", worker.run),
            sup.spawn("up-inference-text", intake.run),
            sup.spawn("up-aggregation", aggregation.run),
            sup.spawn("up-media-depth", lambda: _sample_media_depth(transports, metrics)),
            *([sup.spawn("up-transcribe", speech.run)] if speech is not None else []),
        ]
        _log.info("classpulse up state %s -> %s", "starting", "running")
        yield
        if pool is not None:
            await pool.close()  # publishers end first, so their last media and `left` events are read
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
    if pool is None:
        add_ingest_routes(app, settings=settings.ingest, common=settings.common, transports=transports, metrics=metrics)
    else:
        add_forwarded_ingest_routes(app, settings=settings.ingest, forward=pool.forward)
    add_gateway(
        app, settings=settings.gateway, common=settings.common, transports=transports, metrics=metrics,
        supervisor=sup, with_metrics=False, text_stage=build_text_stage(settings.text), lti=settings.lti,
    )  # fmt: skip
    add_metrics_route(app, metrics=metrics, pool=pool)
    add_landing(app)
    return app


def _rate_feedback(transports: Transports, pool: IngestPool | None) -> Callable[[float | None], None]:
    """Where inference's analysed frame rate goes: the ingest processes, or this process's own samplers."""
    if pool is not None:
        return pool.send_rate
    return lambda fps: transports.source_rate.set(RateRecord(fps=fps))


def add_metrics_route(app: web.Application, *, metrics: Metrics, pool: IngestPool | None) -> None:
    """``/metrics``: this process's metrics, summed with those of its ingest processes."""

    async def exposition(_: web.Request) -> web.Response:
        own = generate_latest(metrics.registry)
        body = own if pool is None else merge_expositions([own.decode(), *await pool.scrape()])
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    add_documented_route(app, RouteDoc("GET", "/metrics", "Prometheus exposition", content="text/plain"), exposition)


def add_landing(app: web.Application) -> None:
    add_documented_route(app, RouteDoc("GET", "/", "Landing page", content="text/html"), _landing)
