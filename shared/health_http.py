"""``/healthz`` and ``/readyz`` from a :class:`~shared.supervise.HealthRegistry`, on either HTTP front.

* aiohttp services (gateway, ingest, ``classpulse up``): :func:`add_health_routes`;
* services whose only HTTP server is the Prometheus one (inference, aggregator):
  :func:`health_wsgi` wraps the ``/metrics`` WSGI app so the same server answers the health routes.

Both answer JSON: ``{"status": "ok" | "unhealthy" | "starting", "service": ..., "tasks": {...}}``,
200 when ok, 503 otherwise. ``/healthz`` is 503 while a supervised task is down (retrying) or the
event loop stalls; ``/readyz`` is also 503 while a task is still starting.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from shared.openapi import RouteDoc, add_documented_route
from shared.supervise import HealthRegistry

Extra = Callable[[], dict[str, Any]]
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def health_body(health: HealthRegistry, *, readiness: bool, extra: Extra | None = None) -> tuple[int, dict[str, Any]]:
    """The status code and JSON body of ``/healthz`` (``readiness``: ``/readyz``)."""
    report = health.report(readiness=readiness)
    if extra is not None:
        report.update(extra())
    return (200 if report["status"] == "ok" else 503), report


def add_health_routes(app: web.Application, *, health: HealthRegistry, extra: Extra | None = None) -> None:
    """``GET /healthz`` and ``GET /readyz`` on an aiohttp app."""

    def handler(readiness: bool) -> Callable[[web.Request], Any]:
        async def respond(_: web.Request) -> web.Response:
            status, body = health_body(health, readiness=readiness, extra=extra)
            return web.json_response(body, status=status)

        return respond

    doc = "Per-task health JSON; 503 while a background task is down"
    add_documented_route(app, RouteDoc("GET", "/healthz", "Liveness: " + doc, content="application/json"),
                         handler(False))
    add_documented_route(app, RouteDoc("GET", "/readyz", "Readiness: " + doc + " or still starting",
                                       content="application/json"), handler(True))


def health_wsgi(health: HealthRegistry, metrics_app: WsgiApp) -> WsgiApp:
    """A WSGI app: ``/healthz`` and ``/readyz`` from ``health``, everything else to ``metrics_app``."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in ("/healthz", "/readyz"):
            return metrics_app(environ, start_response)
        status, body = health_body(health, readiness=path == "/readyz")
        data = json.dumps(body).encode()
        start_response(
            "200 OK" if status == 200 else "503 Service Unavailable",
            [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
        )
        return [data]

    return app
