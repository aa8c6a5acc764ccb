"""The OpenAPI 3.1 document of the gateway, built from the route table and response models."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic.json_schema import models_json_schema

from services.gateway.models import RESPONSE_MODELS, ErrorBody, SessionList
from services.gateway.routes import API_ROUTES, SESSION_PREFIX

_REF = "#/components/schemas/{model}"


def _ref(model: type[Any]) -> dict[str, Any]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json_content(model: type[Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": _ref(model)}}}


_ERRORS = {
    "401": {"description": "Missing, malformed or expired token", **_json_content(ErrorBody)},
    "403": {"description": "Token of another session, or a publish-only (student) token", **_json_content(ErrorBody)},
}
_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"queryToken": []}]


def _session_param() -> dict[str, Any]:
    return {"name": "session", "in": "path", "required": True, "schema": {"type": "string"}}


WHIP = "/whip/{session}/{participant}"
_WHIP_PARAMS = [
    {
        "name": "session",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._~-]{1,128}$"},
    },
    {
        "name": "participant",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._~-]{1,128}$"},
    },
]
_TEXT_ERROR: dict[str, Any] = {"content": {"text/plain": {}}}


def _whip_paths() -> dict[str, Any]:
    """WHIP ingest (RFC 9725), present where the ingest routes share the app (``classpulse up``)."""
    resource = [*_WHIP_PARAMS, {"name": "resource", "in": "path", "required": True, "schema": {"type": "string"}}]
    security: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        WHIP: {
            "post": {
                "summary": "Publish camera + microphone: SDP offer in, SDP answer out (student/teacher token of "
                "this session and participant)",
                "parameters": _WHIP_PARAMS,
                "security": security,
                "requestBody": {"required": True, "content": {"application/sdp": {"schema": {"type": "string"}}}},
                "responses": {
                    "201": {
                        "description": "Created; Location is the resource to DELETE when leaving",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                        "content": {"application/sdp": {"schema": {"type": "string"}}},
                    },
                    "400": {"description": "Malformed SDP offer or ids", **_TEXT_ERROR},
                    "401": {"description": "Missing, malformed or expired token", **_TEXT_ERROR},
                    "403": {"description": "Viewer token, or another session/participant", **_TEXT_ERROR},
                    "413": {"description": "Offer too large", **_TEXT_ERROR},
                    "415": {"description": "Content-Type is not application/sdp", **_TEXT_ERROR},
                    "429": {"description": "Too many publishers on this ingest worker", **_TEXT_ERROR},
                },
            },
            "options": {
                "summary": "CORS preflight",
                "parameters": _WHIP_PARAMS,
                "responses": {"204": {"description": "OK"}},
            },
        },
        WHIP + "/{resource}": {
            "delete": {
                "summary": "Stop publishing",
                "parameters": resource,
                "security": security,
                "responses": {
                    "200": {"description": "Ended"},
                    "401": {"description": "Missing, malformed or expired token", **_TEXT_ERROR},
                    "403": {"description": "Token of another session or participant", **_TEXT_ERROR},
                    "404": {"description": "No such resource", **_TEXT_ERROR},
                },
            },
            "patch": {
                "summary": "Trickle ICE / ICE restart (not supported)",
                "parameters": resource,
                "responses": {"405": {"description": "Not supported; send a full offer with POST", **_TEXT_ERROR}},
            },
            "options": {
                "summary": "CORS preflight",
                "parameters": resource,
                "responses": {"204": {"description": "OK"}},
            },
        },
        "/join": {
            "get": {
                "summary": "Student join page",
                "responses": {"200": {"description": "OK", "content": {"text/html": {}}}},
            }
        },
    }


def build_openapi(present: set[str] | None = None) -> dict[str, Any]:
    """The document; ``present`` (paths the app serves) adds WHIP ingest and the landing page when there."""
    _, defs = models_json_schema([(m, "serialization") for m in RESPONSE_MODELS], ref_template=_REF)
    paths: dict[str, Any] = {
        "/api/sessions": {
            "get": {
                "summary": "Sessions the token may view",
                "security": _SECURITY,
                "responses": {"200": {"description": "OK", **_json_content(SessionList)}, **_ERRORS},
            }
        }
    }
    for route in API_ROUTES:
        params = [_session_param()] + [
            {"name": name, "in": "query", "required": False, "schema": {"type": typ}, "description": desc}
            for name, typ, desc in route.query
        ]
        if route.kind == "websocket":
            ok: dict[str, Any] = {"101": {"description": "Switching protocols; JSON text messages follow"}}
        elif route.kind == "sse":
            ok = {"200": {"description": "text/event-stream of JSON messages", "content": {"text/event-stream": {}}}}
        else:
            assert route.response is not None
            ok = {"200": {"description": "OK", **_json_content(route.response)}}
            if route.path not in ("/live",):
                ok["404"] = {"description": "No events seen for this session yet", **_json_content(ErrorBody)}
        paths[SESSION_PREFIX + route.path] = {
            "get": {
                "summary": route.summary,
                "parameters": params,
                "security": _SECURITY,
                "responses": {**ok, **_ERRORS},
            }
        }
    for path, summary, ctype in (
        ("/metrics", "Prometheus exposition", "text/plain"),
        ("/dashboard", "Teacher dashboard page (?session=S&token=T)", "text/html"),
        ("/healthz", "Liveness", "application/json"),
        ("/api/openapi.json", "This document", "application/json"),
    ):
        paths[path] = {"get": {"summary": summary, "responses": {"200": {"description": "OK", "content": {ctype: {}}}}}}
    if present is not None and WHIP in present:
        paths.update(_whip_paths())
    if present is not None and "/" in present:
        paths["/"] = {
            "get": {
                "summary": "Landing page",
                "responses": {"200": {"description": "OK", "content": {"text/html": {}}}},
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "ClassPulse gateway", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": defs["$defs"],
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "`classpulse token` (viewer/teacher)"},
                "queryToken": {"type": "apiKey", "in": "query", "name": "token", "description": "for browser feeds"},
            },
        },
    }


def served_paths(app: web.Application) -> set[str]:
    """Every path pattern the app routes (static assets: scripts and styles excluded)."""
    out = set()
    for resource in app.router.resources():
        info = resource.get_info()
        path = info.get("path") or info.get("formatter")
        if path and not str(path).startswith("/static/") and not str(path).endswith((".js", ".css")):
            out.add(str(path))
    return out


async def openapi_handler(request: web.Request) -> web.StreamResponse:
    return web.json_response(build_openapi(served_paths(request.app)))
