"""The ingest HTTP app: WHIP routes, the student join page, ``/metrics``.

:func:`add_ingest_routes` mounts ingest into any aiohttp app (``classpulse up`` mounts it
into its single app); :func:`create_ingest_app` builds the standalone ingest service
around it (``classpulse ingest``), owning the transports' start and close.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.ingest.settings import IngestSettings
from services.ingest.whip import WhipService
from shared.health_http import add_health_routes
from shared.http_guard import add_request_guard
from shared.metrics import Metrics
from shared.openapi import Param, RouteDoc, add_documented_route
from shared.ratelimit import RateLimits, add_rate_limits
from shared.settings import CommonSettings
from shared.supervise import HealthRegistry
from shared.transport.factory import Transports

STATIC = Path(__file__).parent / "static"
WHIP_SERVICE: web.AppKey[WhipService] = web.AppKey("classpulse_whip", WhipService)

_NO_CACHE = {"Cache-Control": "no-cache"}

# WHIP (RFC 9725): each route's OpenAPI entry, registered with it in add_ingest_routes.
WHIP = "/whip/{session}/{participant}"
WHIP_RESOURCE = WHIP + "/{resource}"
_ID = "^[A-Za-z0-9._~-]{1,128}$"
_IDS = (Param("session", where="path", pattern=_ID), Param("participant", where="path", pattern=_ID))
_RESOURCE_IDS = (*_IDS, Param("resource", where="path"))
_BAD_TOKEN = ("401", "Missing, malformed or expired token")
_WHIP_DOCS = {
    "preflight": RouteDoc("OPTIONS", WHIP, "CORS preflight", params=_IDS, status="204"),
    "publish": RouteDoc(
        "POST", WHIP,
        "Publish camera + microphone: SDP offer in, SDP answer out (student/teacher token of this session and "
        "participant)",
        params=_IDS, security=("bearer",), request="application/sdp", status="201", content="application/sdp",
        description="Created; Location is the resource to DELETE when leaving", headers=("Location",),
        errors=(
            ("400", "Malformed SDP offer or ids"), _BAD_TOKEN,
            ("403", "Viewer token, or another session/participant"), ("413", "Offer too large"),
            ("415", "Content-Type is not application/sdp"),
            ("429", "Too many publishers on this ingest worker, or publishes past the rate limit (Retry-After)"),
        ),
    ),
    "resource_preflight": RouteDoc("OPTIONS", WHIP_RESOURCE, "CORS preflight", params=_RESOURCE_IDS, status="204"),
    "stop": RouteDoc(
        "DELETE", WHIP_RESOURCE, "Stop publishing", params=_RESOURCE_IDS, security=("bearer",), description="Ended",
        errors=(_BAD_TOKEN, ("403", "Token of another session or participant"), ("404", "No such resource")),
    ),
    "trickle": RouteDoc(
        "PATCH", WHIP_RESOURCE, "Trickle ICE / ICE restart (not supported)", params=_RESOURCE_IDS, status="405",
        description="Not supported; send a full offer with POST", content="text/plain",
    ),
    "join": RouteDoc("GET", "/join", "Student join page", content="text/html"),
    "join_config": RouteDoc(
        "GET", "/join/config.json", "What the join page asks the browser to send (camera frame rate, bitrate)",
        content="application/json",
    ),
}


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
    add_documented_route(app, _WHIP_DOCS["preflight"], service.options)
    add_documented_route(app, _WHIP_DOCS["publish"], service.post)
    add_documented_route(app, _WHIP_DOCS["resource_preflight"], service.options)
    add_documented_route(app, _WHIP_DOCS["stop"], service.delete)
    add_documented_route(app, _WHIP_DOCS["trickle"], service.patch)
    add_join_page(app, settings)

    async def _shutdown(_: web.Application) -> None:
        await service.close()

    app.on_shutdown.append(_shutdown)
    return service


def add_whip_rate_limits(
    app: web.Application, *, settings: IngestSettings, common: CommonSettings, metrics: Metrics, service: str
) -> None:
    """Rate limits per token and per address on WHIP publishes (``POST /whip/...``) of ``app``."""
    limits = RateLimits(
        per_token=settings.whip_rate_per_token,
        per_address=settings.whip_rate_per_address,
        burst_s=settings.whip_rate_burst_s,
        what="WHIP publish requests",
        trust_forwarded_for=common.trust_forwarded_for,
        cors_origin=settings.cors_origin,
    )
    add_rate_limits(
        app, limits=limits, applies=lambda r: r.method == "POST" and r.path.startswith("/whip/"), service=service,
        metrics=metrics,
    )


def add_forwarded_ingest_routes(
    app: web.Application, *, settings: IngestSettings,
    forward: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> None:
    """The same ``/whip/...`` routes (and their OpenAPI entries) answered by ``forward``, plus ``/join``.

    ``classpulse up`` uses it when WebRTC runs in ingest worker processes: ``forward`` hands
    each request to the worker that owns it.
    """
    for name in ("preflight", "publish", "resource_preflight", "stop", "trickle"):
        add_documented_route(app, _WHIP_DOCS[name], forward)
    add_join_page(app, settings)


def add_join_page(app: web.Application, settings: IngestSettings) -> None:
    """``/join`` (the student's page), its script, and what it asks the browser to send."""
    config = join_config(settings)

    async def _join_config(_: web.Request) -> web.Response:
        return web.json_response(config, headers=_NO_CACHE)

    add_documented_route(app, _WHIP_DOCS["join"], _join_page)
    add_documented_route(app, _WHIP_DOCS["join_config"], _join_config)
    app.router.add_get("/join/join.js", _join_script)


def join_config(settings: IngestSettings) -> dict[str, float | int | None]:
    """The join page's camera: sent at the analysed rate (or ``camera_send_fps``) and capped bitrate."""
    fps = settings.camera_send_fps or settings.analysis_fps
    return {"camera_fps": fps, "camera_kbps": settings.camera_send_kbps or None}


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
    health: HealthRegistry | None = None,
) -> web.Application:
    """The standalone ingest service: WHIP, join page, ``/metrics``, ``/healthz`` and ``/readyz`` (from
    ``health``, the service's registry, plus the publisher count)."""
    app = web.Application()
    add_request_guard(app, service="ingest", metrics=metrics)
    add_whip_rate_limits(app, settings=settings, common=common, metrics=metrics, service="ingest")

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

    app.router.add_get("/metrics", metrics_route)
    add_health_routes(
        app, health=health or HealthRegistry(service="ingest"), extra=lambda: {"publishers": len(service.resources)}
    )
    return app
