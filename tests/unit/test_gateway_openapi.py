"""The OpenAPI document lists exactly the app's routes, and real responses match its schemas."""

from __future__ import annotations

import asyncio
from typing import Any

import jsonschema
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from services.gateway.openapi import build_openapi, served_paths

from .gateway_fixtures import aggregate, alert, gateway, score, token

pytestmark = pytest.mark.unit


def _validator(doc: dict[str, Any], path: str) -> jsonschema.Draft202012Validator:
    schema = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    full = {**schema, "components": doc["components"]}
    return jsonschema.Draft202012Validator(full)


async def test_document_matches_routes_and_responses() -> None:
    async with gateway() as h:
        doc = await (await h.client.get("/api/openapi.json")).json()
        assert doc == build_openapi(h.client.app)  # type: ignore[arg-type]
        assert set(doc["paths"]) == served_paths(h.client.app)  # type: ignore[arg-type]
        for path, ops in doc["paths"].items():
            if path.startswith("/api/sessions/"):
                for method, op in ops.items():
                    assert {"401", "403"} <= set(op["responses"]), (path, method)

        await h.emit(score("s1", "alice", 1))
        await h.emit(aggregate("s1", 0.0, hand_queue=["alice"]))
        await h.emit(alert("s1", "alice"))
        viewer = {"Authorization": f"Bearer {token('s1', 'viewer')}"}
        deployment = {"Authorization": f"Bearer {token('*', 'platform')}"}  # webhook management
        checked = 0
        for path, ops in doc["paths"].items():
            if "get" not in ops:
                continue  # POST .../interactions: checked in test_gateway_interactions
            content = ops["get"]["responses"]["200"].get("content", {}) if "200" in ops["get"]["responses"] else {}
            if "application/json" not in content or "schema" not in content["application/json"]:
                continue
            url = path.replace("{session}", "s1").replace("{participant}", "alice")
            auth = deployment if "/webhooks" in path else viewer
            for _ in range(100):
                resp = await h.client.get(url, headers=auth)
                if resp.status != 404:
                    break
                await asyncio.sleep(0.02)
            assert resp.status == 200, path
            _validator(doc, path).validate(await resp.json())
            checked += 1
        assert checked >= 8
        bad = await h.client.get("/api/sessions/s1/live")
        jsonschema.Draft202012Validator(
            {"$ref": "#/components/schemas/ErrorBody", "components": doc["components"]}
        ).validate(await bad.json())


def _methods(app: web.Application) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method != "HEAD" and not path.startswith("/static/") and not path.endswith((".js", ".css")):
            out.add((path, route.method.lower()))
    return out


def test_document_of_the_whole_up_app_lists_whip_with_every_method() -> None:
    from services.gateway.app import add_gateway
    from services.gateway.settings import GatewaySettings
    from services.ingest.app import add_ingest_routes
    from services.ingest.settings import IngestSettings
    from services.up.app import add_landing
    from shared.metrics import Metrics
    from shared.settings import CommonSettings
    from shared.transport.factory import build_transports

    common = CommonSettings()
    metrics = Metrics(CollectorRegistry())
    transports = build_transports(common, metrics=metrics)
    app = web.Application()
    add_ingest_routes(app, settings=IngestSettings(), common=common, transports=transports, metrics=metrics)
    add_gateway(app, settings=GatewaySettings(), common=common, transports=transports, metrics=metrics)
    add_landing(app)
    doc = build_openapi(app)
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert documented == _methods(app)
    assert "201" in doc["paths"]["/whip/{session}/{participant}"]["post"]["responses"]


async def test_schemas_are_the_response_models_own_json_schemas() -> None:
    from pydantic.json_schema import models_json_schema

    from shared.openapi import REF_TEMPLATE, ROUTE_DOCS

    async with gateway() as h:
        app = h.client.app
        doc = build_openapi(app)  # type: ignore[arg-type]
        models = {  # type: ignore[index]
            m for d in app[ROUTE_DOCS] for m in (d.response, d.error_model, d.request_model) if m is not None
        }
        _, defs = models_json_schema([(m, "serialization") for m in models], ref_template=REF_TEMPLATE)
        assert doc["components"]["schemas"] == defs["$defs"]
        assert {m.__name__ for m in models} <= set(doc["components"]["schemas"])
        for d in app[ROUTE_DOCS]:  # type: ignore[index]
            if d.response is not None:
                ref = doc["paths"][d.path][d.method.lower()]["responses"][d.status]["content"]["application/json"]
                assert ref["schema"] == {"$ref": f"#/components/schemas/{d.response.__name__}"}
