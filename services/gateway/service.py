"""The gateway service's main coroutine: transports -> app -> serve (booted by ``shared.service``)."""

from __future__ import annotations

from services.gateway.app import create_gateway_app
from services.gateway.lti.settings import LtiSettings
from services.gateway.settings import GatewaySettings
from shared.log import get_logger
from shared.service import ServiceContext
from shared.serving import serve_app
from shared.text.settings import TextSettings
from shared.text.stage import build_text_stage
from shared.transport.factory import build_transports

_log = get_logger(__name__)


async def serve_gateway(settings: GatewaySettings, service: ServiceContext) -> None:
    """Serve REST, live feeds and the dashboard until SIGINT/SIGTERM."""
    common = service.common
    if common.transport == "memory":
        _log.warning(
            "gateway transport %s: it sees no other process; run `classpulse up`, or set CLASSPULSE_TRANSPORT="
            "distributed to read Redis + Kafka",
            common.transport,
        )
    transports = build_transports(common, metrics=service.metrics, client_id="classpulse-gateway")
    app = create_gateway_app(
        settings=settings, common=common, transports=transports, metrics=service.metrics,
        supervisor=service.supervisor, text_stage=build_text_stage(TextSettings()), lti=LtiSettings(),
    )
    await serve_app(
        app,
        host=settings.host,
        port=settings.port,
        banner=lambda url: f"gateway listening on {url}/  (dashboard: /dashboard, API: /api/openapi.json)",
        service=service,
    )
