"""Routes that document themselves: registering a route records its OpenAPI entry on the app.

A service adds a route with :func:`add_documented_route` (one statement for the handler and its
documentation, so the two cannot drift); :func:`openapi_document` turns the app's records into an
OpenAPI 3.1 document whose schemas pydantic generates from the response models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

REF_TEMPLATE = "#/components/schemas/{model}"
SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "`classpulse token` (viewer/teacher)"},
    "queryToken": {"type": "apiKey", "in": "query", "name": "token", "description": "for browser feeds"},
}


@dataclass(frozen=True)
class Param:
    """A path or query parameter."""

    name: str
    where: str = "query"  # "path" or "query"
    type: str = "string"
    description: str = ""
    pattern: str | None = None


@dataclass(frozen=True)
class RouteDoc:
    """One method on one path: what it answers and who may call it."""

    method: str
    path: str
    summary: str
    response: type[BaseModel] | None = None  # JSON body of the success status
    content: str | None = None  # content type of a success body without a model (text/html ...)
    status: str = "200"
    description: str = "OK"
    security: tuple[str, ...] = ()  # names in SECURITY_SCHEMES
    errors: tuple[tuple[str, str], ...] = ()  # (status, description)
    error_model: type[BaseModel] | None = None  # JSON error body; None: text/plain
    params: tuple[Param, ...] = ()
    request: str | None = None  # content type of a required request body
    request_model: type[BaseModel] | None = None  # JSON schema of that body (request must be application/json)
    headers: tuple[str, ...] = ()  # response headers of the success status


ROUTE_DOCS: web.AppKey[list[RouteDoc]] = web.AppKey("classpulse_route_docs", list)


def add_documented_route(app: web.Application, doc: RouteDoc, handler: Handler) -> None:
    """Register ``handler`` for ``doc.method`` on ``doc.path`` and keep ``doc`` for the document."""
    app.router.add_route(doc.method, doc.path, handler)
    if ROUTE_DOCS not in app:
        app[ROUTE_DOCS] = []
    app[ROUTE_DOCS].append(doc)


def _content(model: type[BaseModel] | None, ctype: str | None) -> dict[str, Any]:
    if model is not None:
        return {"content": {"application/json": {"schema": {"$ref": REF_TEMPLATE.format(model=model.__name__)}}}}
    if ctype is not None:
        schema = {"schema": {"type": "string"}} if ctype == "application/sdp" else {}
        return {"content": {ctype: schema}}
    return {}


def _operation(doc: RouteDoc) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": doc.description, **_content(doc.response, doc.content)}
    if doc.headers:
        ok["headers"] = {name: {"schema": {"type": "string"}} for name in doc.headers}
    responses: dict[str, Any] = {doc.status: ok}
    for status, description in doc.errors:
        body = _content(doc.error_model, None) if doc.error_model else {"content": {"text/plain": {}}}
        responses[status] = {"description": description, **body}
    op: dict[str, Any] = {"summary": doc.summary}
    if doc.params:
        op["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.where == "path",
                "schema": {"type": p.type, **({"pattern": p.pattern} if p.pattern else {})},
                **({"description": p.description} if p.description else {}),
            }
            for p in doc.params
        ]
    if doc.security:
        op["security"] = [{name: []} for name in doc.security]
    if doc.request_model is not None:
        op["requestBody"] = {"required": True, **_content(doc.request_model, None)}
    elif doc.request:
        op["requestBody"] = {"required": True, **_content(None, doc.request)}
    op["responses"] = responses
    return op


def openapi_document(docs: list[RouteDoc], *, title: str, version: str = "1") -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``docs``; components are the JSON Schemas of the models they name."""
    models: dict[str, type[BaseModel]] = {}
    paths: dict[str, dict[str, Any]] = {}
    for doc in docs:
        for model in (doc.response, doc.error_model, doc.request_model):
            if model is not None:
                models.setdefault(model.__name__, model)
        paths.setdefault(doc.path, {})[doc.method.lower()] = _operation(doc)
    _, defs = models_json_schema([(m, "serialization") for m in models.values()], ref_template=REF_TEMPLATE)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": defs.get("$defs", {}), "securitySchemes": SECURITY_SCHEMES},
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
