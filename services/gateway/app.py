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
from services.gateway.lti.routes import add_lti_routes, build_tool
from services.gateway.lti.settings import LtiSettings
from services.gateway.routes import add_gateway_routes
from services.gateway.session_end import ROUTE as END_ROUTE
from services.gateway.session_end import end_session
from services.gateway.settings import GatewaySettings
from services.gateway.webhooks.delivery import DeliveryPolicy, WebhookDeliverer
from services.gateway.webhooks.routes import add_webhook_routes
from services.gateway.webhooks.store import MemoryWebhookStore, WebhookStore
from services.gateway.webhooks.trigger import TriggerPolicy, WebhookTrigger
from shared.analytics.config import AggregationConfig
from shared.contracts.events import LifecycleEvent
from shared.contracts.interactions import InteractionEvent
from shared.contracts.live import LiveInteraction, LivePrivacy, encode_live, wrap_live
from shared.contracts.privacy import PrivacyEvent
from shared.health_http import add_health_routes
from shared.http_guard import add_request_guard
from shared.log import get_logger
from shared.metrics import Metrics
from shared.openapi import add_documented_route
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
    lti: LtiSettings | None = None,
    webhook_store: WebhookStore | None = None,
) -> GatewayContext:
    """Add the gateway (routes, history reader, live hub, ``/healthz``, ``/readyz``) to ``app``; transports
    are started by the caller. The history reader runs under ``supervisor`` (task ``gateway-history``):
    a broker outage is retried, the health routes report it.

    ``webhook_store``: where webhook endpoints and pending deliveries live (default: Redis with the
    distributed transport, this process's memory with the memory transport).

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
        retention_s=common.retention_s,
        aggregation=AggregationConfig(late_after_s=settings.late_after_s),
    )
    ctx = GatewayContext(
        live=transports.live,
        hub=LiveHub(bus=transports.live, metrics=metrics, queue_size=settings.viewer_queue,
                    privacy=transports.policies),
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
        privacy=transports.policies,
        retention_s=common.retention_s,
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
    add_lti_routes(app, build_tool(lti or LtiSettings(platforms_file=None), token_secret=ctx.token_secret))
    store = webhook_store if webhook_store is not None else _webhook_store(common)
    add_webhook_routes(app, store=store, token_secret=ctx.token_secret)
    add_documented_route(app, END_ROUTE, end_session)
    deliverer = WebhookDeliverer(store=store, metrics=metrics, policy=DeliveryPolicy(
        max_attempts=settings.webhook_max_attempts, timeout_s=settings.webhook_timeout_s,
        backoff_s=settings.webhook_backoff_s, backoff_max_s=settings.webhook_backoff_max_s,
        concurrency=settings.webhook_concurrency, dead_letters=settings.webhook_dead_letters,
    ))
    trigger = WebhookTrigger(store=store, history=history, wake=deliverer.wake, policy=TriggerPolicy(
        settle_s=settings.webhook_settle_s, timeline=settings.webhook_timeline,
        dedupe_ttl_s=settings.webhook_dedupe_ttl_s,
    ))
    add_health_routes(app, health=supervisor.health)
    group = settings.history_group or f"gateway-{uuid.uuid4().hex[:12]}"

    def prepare(event: InteractionEvent) -> InteractionEvent:
        if event.text is None:
            return event
        if event.words is None:  # straight from a platform: the text stage has not seen it
            return ctx.text.derive([event], keep_text=common.keep_text)[0]
        return event if common.keep_text else event.model_copy(update={"text": None})

    def on_privacy(event: PrivacyEvent) -> None:  # a change another gateway took: cache it, tell the viewers
        ctx.privacy.note(event)
        ctx.hub.deliver(event.session, encode_live(LivePrivacy(event=event)))

    def on_lifecycle(event: LifecycleEvent) -> None:
        ctx.hub.deliver(event.session, encode_live(wrap_live(event)))
        trigger.lifecycle(event)

    async def history_task(app: web.Application) -> AsyncIterator[None]:
        await store.start()
        await asyncio.to_thread(ctx.text.load)
        reader = HistoryReader(
            bus=transports.events,
            history=history,
            metrics=metrics,
            group=group,
            on_lifecycle=on_lifecycle,
            on_alert=trigger.alert,
            on_interaction=lambda event, counts: ctx.hub.deliver(
                event.session,
                encode_live(LiveInteraction(event=event, counts=counts)),
            ),
            prepare=prepare,
            on_privacy=on_privacy,
        )
        task = supervisor.spawn("gateway-history", reader.run)
        delivery = supervisor.spawn("gateway-webhooks", deliverer.run)
        yield
        await ctx.hub.close()
        await trigger.close()
        for running in (task, delivery):
            running.cancel()
            with suppress(asyncio.CancelledError):
                await running
        await store.close()

    app.cleanup_ctx.append(history_task)
    return ctx


def _webhook_store(common: CommonSettings) -> WebhookStore:
    if common.transport == "memory":
        return MemoryWebhookStore()
    from services.gateway.webhooks.redis_store import RedisWebhookStore

    return RedisWebhookStore(url=common.redis_url.get_secret_value())


def create_gateway_app(
    *,
    settings: GatewaySettings,
    common: CommonSettings,
    transports: Transports,
    metrics: Metrics,
    supervisor: Supervisor | None = None,
    text_stage: TextStage | None = None,
    lti: LtiSettings | None = None,
    webhook_store: WebhookStore | None = None,
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
        text_stage=text_stage, lti=lti, webhook_store=webhook_store,
    )
    return app
