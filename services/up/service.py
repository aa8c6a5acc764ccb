"""``classpulse up``'s main coroutine: the whole system as one app on one port."""

from __future__ import annotations

from services.up.app import UpSettings, create_up_app
from shared.service import ServiceContext
from shared.serving import serve_app


async def serve_up(settings: UpSettings, service: ServiceContext, *, host: str, port: int) -> None:
    """Serve ingest, inference, aggregation and the gateway until SIGINT/SIGTERM."""
    app = create_up_app(settings=settings, metrics=service.metrics, supervisor=service.supervisor)
    await serve_app(
        app,
        host=host,
        port=port,
        banner=lambda url: f"ClassPulse is up: {url}/  (join: /join, dashboard: /dashboard)",
        service=service,
    )
