"""The gateway app factory: history reader + live hub + routes on one aiohttp application."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import suppress

from aiohttp import web

from services.gateway.context import GATEWAY, GatewayContext
from services.gateway.history import HistoryReader, SessionHistory
from services.gateway.hub import LiveHub
from services.gateway.routes import add_gateway_routes
from services.gateway.settings import GatewaySettings
from shared.contracts.interactions import InteractionEvent
from shared.contracts.live import LiveInteraction, encode_live, wrap_live
from shared.health_http import add_health_routes
from shared.http_guard import add_request_guard
from shared.log import get_logger
from shared.metrics import Metrics
from shared.ratelimit import RateLimits, add_rate_limits
from shared.settings import CommonSettings
from shared.supervise import HealthRegistry, Supervisor
from shared.text.stage import TextStage
from shared.transport.factory import Transports

_log = get_logger(__name__)


def add_gateway(
    app: web.Application,
    *,
    settings: GatewaySettings,
    common: CommonSettings,
    transports: Transports,
    metrics: Metrics,
    with_metrics: bool = True,
    supervisor: Supervisor | None = None,
    text_stage: TextStage | None = None,
) -> GatewayContext:
    """Add the gateway (routes, history reader, live hub, ``/healthz``, ``/readyz``) to ``app``; transports
    are started by the caller. The history reader runs under ``supervisor`` (task ``gateway-history``):
    a broker outage is retried, the health routes report it.

    ``text_stage``: the configured text stage (its model is loaded when the app starts); None: rules
    only (questions and word counts, no on-topic relevance).
    """
    supervisor = supervisor or Supervisor(health=HealthRegistry(service="gateway"))
    history = SessionHistory(
        metrics=metrics,
        max_sessions=settings.max_sessions,
        max_rows=settings.max_timeline_rows,
        max_aggregates=settings.max_aggregates,
        class_window_s=settings.class_window_s,
    )
    ctx = GatewayContext(
        live=transports.live,
        hub=LiveHub(bus=transports.live, metrics=metrics, queue_size=settings.viewer_queue),
        history=history,
        metrics=metrics,
        token_secret=common.token_keyring(),
        heartbeat_s=settings.heartbeat_s,
        max_viewers_per_session=settings.max_viewers_per_session,
        viewer_write_timeout_s=settings.viewer_write_timeout_s,
        events=transports.events,
        keep_text=common.keep_text,
        interactions_max_items=settings.interactions_max_items,
        interactions_max_bytes=settings.interactions_max_bytes,
    )
    if text_stage is not None:
        ctx.text = text_stage
    app[GATEWAY] = ctx
    rest_limits = RateLimits(
        per_token=settings.rate_per_token,
        per_address=settings.rate_per_address,
        burst_s=settings.rate_burst_s,
        what="API requests",
        trust_forwarded_for=common.trust_forwarded_for,
    )
    add_rate_limits(
        app, limits=rest_limits, applies=lambda r: r.path.startswith("/api/"), service="gateway", metrics=metrics
    )
    add_gateway_routes(app, with_metrics=with_metrics)
    add_health_routes(app, health=supervisor.health)
    group = settings.history_group or f"gateway-{uuid.uuid4().hex[:12]}"

    def prepare(event: InteractionEvent) -> InteractionEvent:
        if event.text is None:
            return event
        if event.words is None:  # straight from a platform: the text stage has not seen it
            return ctx.text.derive([event], keep_text=common.keep_text)[0]
        return event if common.keep_text else event.model_copy(update={"text": None})

    async def history_task(app: web.Application) -> AsyncIterator[None]:
        await asyncio.to_thread(ctx.text.load)
        reader = HistoryReader(
            bus=transports.events,
            history=history,
            metrics=metrics,
            group=group,
            on_lifecycle=lambda event: ctx.hub.deliver(event.session, encode_live(wrap_live(event))),
            on_interaction=lambda event, counts: ctx.hub.deliver(
                event.session,
                encode_live(LiveInteraction(event=event, counts=counts)),
            ),
            prepare=prepare,
        )
        task = supervisor.spawn("gateway-history", reader.run)
        yield
        await ctx.hub.close()
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(history_task)
    return ctx


def create_gateway_app(
    *,
    settings: GatewaySettings,
    common: CommonSettings,
    transports: Transports,
    metrics: Metrics,
    supervisor: Supervisor | None = None,
    text_stage: TextStage | None = None,
) -> web.Application:
    """A standalone gateway app that starts and closes its own transports."""
    app = web.Application()
    add_request_guard(app, service="gateway", metrics=metrics)

    async def transports_ctx(app: web.Application) -> AsyncIterator[None]:
        await transports.start()
        _log.info("gateway transports state %s -> %s", "new", "started")
        yield
        await transports.close()

    app.cleanup_ctx.append(transports_ctx)
    add_gateway(
        app, settings=settings, common=common, transports=transports, metrics=metrics, supervisor=supervisor,
        text_stage=text_stage,
    )
    return app
