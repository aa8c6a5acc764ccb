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


def build_openapi() -> dict[str, Any]:
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


async def openapi_handler(request: web.Request) -> web.StreamResponse:
    return web.json_response(build_openapi())
