"""The gateway's OpenAPI document: generated from the routes registered on the app and their models.

Every route is registered with :func:`shared.openapi.add_documented_route`, so the document lists
exactly what the app serves (the gateway's routes; in ``classpulse up`` also ingest's WHIP routes
and the landing page); the schemas are pydantic's JSON Schemas of the response models.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.gateway.models import ErrorBody
from shared.openapi import ROUTE_DOCS, Param, RouteDoc, openapi_document, served_paths

__all__ = ["NOT_FOUND", "SESSION_PARAM", "build_openapi", "openapi_handler", "served_paths", "viewer_route"]

# A viewer/teacher token as bearer or ?token= (browser feeds); student tokens are publish-only.
VIEWER_SECURITY = ("bearer", "queryToken")
TOKEN_ERRORS = (
    ("401", "Missing, malformed or expired token"),
    ("403", "Token of another session, or a publish-only (student) token"),
    ("429", "Past the rate limit per token or address, or the session's live-viewer cap (Retry-After)"),
)
NOT_FOUND = ("404", "No events seen for this session yet")
SESSION_PARAM = Param("session", where="path")


def viewer_route(method: str, path: str, summary: str, *, errors: tuple[tuple[str, str], ...] = (),
                 **fields: Any) -> RouteDoc:
    """A token-protected route answering JSON errors; ``errors`` come before the token errors."""
    return RouteDoc(method, path, summary, security=VIEWER_SECURITY, error_model=ErrorBody,
                    errors=(*errors, *TOKEN_ERRORS), **fields)


def build_openapi(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every documented route on ``app``."""
    return openapi_document(app.get(ROUTE_DOCS, []), title="ClassPulse gateway")


async def openapi_handler(request: web.Request) -> web.StreamResponse:
    return web.json_response(build_openapi(request.app))
