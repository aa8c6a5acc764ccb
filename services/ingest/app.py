"""The ingest HTTP app: WHIP routes, the student join page, ``/metrics``.

:func:`add_ingest_routes` mounts ingest into any aiohttp app (``classpulse up`` mounts it
into its single app); :func:`create_ingest_app` builds the standalone ingest service
around it (``classpulse ingest``), owning the transports' start and close.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.ingest.settings import IngestSettings
from services.ingest.whip import WhipService
from shared.metrics import Metrics
from shared.settings import CommonSettings
from shared.transport.factory import Transports

STATIC = Path(__file__).parent / "static"
WHIP_SERVICE: web.AppKey[WhipService] = web.AppKey("classpulse_whip", WhipService)

_NO_CACHE = {"Cache-Control": "no-cache"}


def add_ingest_routes(
    app: web.Application,
    *,
    settings: IngestSettings,
    common: CommonSettings,
    transports: Transports,
    metrics: Metrics,
    resource_prefix: str = "",
) -> WhipService:
    """Add ``/whip/...`` and ``/join`` to ``app``; resources are closed on app shutdown.

    The caller starts and closes ``transports`` (the app factory below does it for the
    standalone service). ``resource_prefix`` starts every resource id (a worker's ``w1-``).
    """
    service = WhipService(
        settings=settings, common=common, transports=transports, metrics=metrics, resource_prefix=resource_prefix
    )
    app[WHIP_SERVICE] = service
    base = "/whip/{session}/{participant}"
    app.router.add_route("OPTIONS", base, service.options)
    app.router.add_post(base, service.post)
    resource = base + "/{resource}"
    app.router.add_route("OPTIONS", resource, service.options)
    app.router.add_delete(resource, service.delete)
    app.router.add_route("PATCH", resource, service.patch)
    app.router.add_get("/join", _join_page)
    app.router.add_get("/join/join.js", _join_script)

    async def _shutdown(_: web.Application) -> None:
        await service.close()

    app.on_shutdown.append(_shutdown)
    return service


async def _join_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "join.html", headers=_NO_CACHE)


async def _join_script(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "join.js", headers=_NO_CACHE)


def create_ingest_app(
    *,
    settings: IngestSettings,
    common: CommonSettings,
    transports: Transports,
    metrics: Metrics,
    resource_prefix: str = "",
) -> web.Application:
    """The standalone ingest service: WHIP, join page, ``/metrics`` and ``/healthz``."""
    app = web.Application()

    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        await transports.start()
        yield
        await transports.close()

    app.cleanup_ctx.append(lifecycle)
    service = add_ingest_routes(
        app, settings=settings, common=common, transports=transports, metrics=metrics, resource_prefix=resource_prefix
    )

    async def metrics_route(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "publishers": len(service.resources)})

    app.router.add_get("/metrics", metrics_route)
    app.router.add_get("/healthz", health)
    return app
